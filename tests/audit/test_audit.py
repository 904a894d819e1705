"""`lit-garbage audit`: planted wrong labels are found, planted twins across folders are found, nothing is touched."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lit_garbage.audit.embeddings import border_bands, find_imagenet_weights
from lit_garbage.commands.audit import main
from lit_garbage.data.synthetic import generate

PLANTED = 10


def imagenet_weights() -> Path | None:
    """torchvision's ImageNet MobileNetV2 file, where `make setup` or torch put it."""
    return find_imagenet_weights()


def tree_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def plant_mislabels(root: Path, moves: list[tuple[str, str]]) -> set[str]:
    """Move the first photo of each `from` class into the `to` class folder; the planted paths."""
    planted = set()
    first = {src: min((root / src).iterdir()) for src, _ in moves}  # chosen before any move
    for src, dst in moves:
        photo = first[src]
        target = root / dst / f"planted_{photo.name}"
        shutil.move(photo, target)
        planted.add(target.relative_to(root).as_posix())
    return planted


def audit(data: Path, out: Path, *extra: str) -> dict:
    weights = imagenet_weights()
    args = [str(data), "--out", str(out), *extra, *(["--weights", str(weights)] if weights else [])]
    assert main(args) == 0
    return json.loads((out / "audit.json").read_text())


def recall_in_top(result: dict, planted: set[str]) -> float:
    top = [d["path"] for d in result["label_issues"]["items"][:2 * len(planted)]]
    return len(planted & set(top)) / len(planted)


CLASSES = ("battery", "biological", "cardboard", "clothes", "glass", "metal", "paper", "plastic", "shoes", "trash")
# Each class's planted photo goes to a class that looks unlike it.
MOVES = list(zip(CLASSES, ("clothes", "metal", "shoes", "glass", "biological", "clothes", "battery", "shoes",
                           "paper", "battery")))


def test_planted_mislabels_in_generated_photos_are_found(tmp_path, capsys):
    data = generate(tmp_path / "data", per_class=16, size=64, seed=3)
    planted = plant_mislabels(data, MOVES)
    before = tree_hashes(data)
    r = audit(data, tmp_path / "out")
    assert recall_in_top(r, planted) >= 0.8, r["label_issues"]["items"][:20]
    assert tree_hashes(data) == before  # nothing moved, changed or deleted
    out = tmp_path / "out"
    for name in ("audit.md", "audit.json", "label_issues.csv", "outliers.csv", "duplicates.csv", "label_issues_1.png",
                 "outliers_1.png", "embeddings.npz"):
        assert (out / name).is_file(), name
    with (out / "label_issues.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == r["label_issues"]["count"] and all((data / row["path"]).is_file() for row in rows)
    # a planted battery photo under clothes: the suggested class is its own
    planted_row = next(row for row in rows if row["path"].startswith("clothes/planted_battery"))
    assert planted_row["given_label"] == "clothes" and planted_row["suggested_label"] == "battery"
    assert Image.open(out / "label_issues_1.png").size[0] > 500
    md = (out / "audit.md").read_text()
    assert "## Label issues" in md and "out-of-fold" in md and str(tmp_path) in md
    assert "label issues" in capsys.readouterr().out
    # A second audit of the same files reads the features back instead of running the network again.
    assert audit(data, out)["label_issues"]["count"] == r["label_issues"]["count"]
    assert "features read from" in capsys.readouterr().err


def test_planted_mislabels_in_real_photos_are_found(real_smoke, tmp_path):
    if imagenet_weights() is None:
        pytest.skip("torchvision's ImageNet MobileNetV2 weights are not installed (real photos need real features)")
    data = tmp_path / "data"
    shutil.copytree(real_smoke, data)
    planted = plant_mislabels(data, MOVES)
    before = tree_hashes(data)
    r = audit(data, tmp_path / "out")
    assert r["features"].startswith("ImageNet MobileNetV2")
    assert recall_in_top(r, planted) >= 0.8, [d["path"] for d in r["label_issues"]["items"][:20]]
    assert tree_hashes(data) == before


def test_twins_across_folders_are_found_and_counted(tmp_path):
    data = generate(tmp_path / "data", per_class=8, size=64, seed=0)
    other = generate(tmp_path / "other", per_class=3, size=64, seed=1)
    # an exact copy, a re-encoded smaller copy (a near twin) and a copy filed under another class
    shutil.copy(data / "glass" / "glass_0001.jpg", other / "glass" / "copy.jpg")
    Image.open(data / "metal" / "metal_0002.jpg").resize((56, 56)).save(other / "metal" / "small.jpg", quality=80)
    shutil.copy(data / "paper" / "paper_0003.jpg", other / "trash" / "relabelled.jpg")
    before = tree_hashes(data), tree_hashes(other)
    r = audit(data, tmp_path / "out", "--against", str(other))
    lk = r["leakage"]
    found = {(p["other"], p["data"], p["kind"]) for p in lk["pairs"]}
    assert {("glass/copy.jpg", "glass/glass_0001.jpg", "exact"), ("metal/small.jpg", "metal/metal_0002.jpg", "near"),
            ("trash/relabelled.jpg", "paper/paper_0003.jpg", "exact")} <= found
    assert lk["photos"] == 33 and lk["with_twin"] >= 3 and lk["label_differs"] >= 1
    assert (tmp_path / "out" / "leakage.csv").is_file() and (tmp_path / "out" / "leakage_1.png").is_file()
    assert "Leakage" in (tmp_path / "out" / "audit.md").read_text()
    assert (tree_hashes(data), tree_hashes(other)) == before


def test_duplicates_across_classes_unreadable_files_and_borders_are_reported(tmp_path):
    data = generate(tmp_path / "data", per_class=8, size=64, seed=0)
    shutil.copy(data / "glass" / "glass_0001.jpg", data / "metal" / "also_glass.jpg")
    (data / "paper" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    padded = Image.new("RGB", (64, 96), (0, 0, 0))
    padded.paste(Image.open(data / "shoes" / "shoes_0000.jpg"), (0, 16))
    padded.save(data / "shoes" / "letterboxed.png")
    r = audit(data, tmp_path / "out", "--folds", "3")
    dup, sc = r["scan"]["duplicates"], r["scan"]
    assert dup["across_classes"] == 1 and dup["exact_groups"] == 1
    assert [u["path"] for u in sc["unreadable"]] == ["paper/broken.jpg"]
    assert "shoes/letterboxed.png" in sc["borders"]["examples"]["letterbox"]
    assert sc["class_balance"]["per_class"]["metal"] == 9
    assert sc["sizes"]["most_common"]["64x64"] == 81


def test_border_bands_measure_padding_not_content():
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8))
    assert border_bands(photo) == (0, 0, 0, 0)
    boxed = Image.new("RGB", (100, 140), (255, 255, 255))
    boxed.paste(photo, (0, 20))
    top, bottom, left, right = border_bands(boxed)
    assert top == pytest.approx(20 / 140, abs=0.02) and bottom == pytest.approx(20 / 140, abs=0.02)
    assert left == right == 0


def test_output_inside_the_data_and_bad_options_are_refused(tmp_path, capsys):
    data = generate(tmp_path / "data", per_class=4, size=64, seed=0)
    assert main([str(data), "--out", str(data / "glass" / "audit")]) == 2
    assert "never writes into a dataset" in capsys.readouterr().err
    assert not (data / "glass" / "audit").exists()
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert main([str(data), "--folds", "1"]) == 2
