"""references/train_speed.py: variants timed side by side on real training steps, ratios to the first."""

from __future__ import annotations

import json

from references import train_speed


def test_variants_are_timed_side_by_side_and_compared_to_the_first(synthetic_root, tmp_path, capsys):
    out = tmp_path / "speed.json"
    train_speed.main(["--root", str(synthetic_root), "--manifest", str(tmp_path / "split.csv"), "--cache", "none",
                      "--steps", "2", "--warmup", "1", "--rounds", "1", "--json", str(out),
                      "--variant", "a:image_size=64,batch_size=8,num_workers=0",
                      "--variant", "b:image_size=64,batch_size=8,num_workers=0,precision=bf16-mixed,augment_on=device"])
    rows = json.loads(out.read_text())
    assert [r["variant"] for r in rows] == ["a", "b"]
    assert rows[0]["ratio"] == 1.0 and rows[1]["ratio"] > 0
    assert all(len(r["images_per_s"]) == 1 and r["images_per_s"][0] > 0 for r in rows)
    assert "| b | " in capsys.readouterr().out


def test_an_unknown_variant_option_is_refused():
    import pytest

    with pytest.raises(SystemExit, match="unknown variant option 'lr'"):
        train_speed.parse_variant("x:lr=1")
