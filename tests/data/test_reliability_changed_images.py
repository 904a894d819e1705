"""Reliability: an image replaced after the scan (same path, other content) is noticed, never used as the photo the
manifest lists; a manifest path that leaves the dataset root is refused.

split.csv records each file's size, mtime and sha256; fit --resume, evaluate, export and predict reuse the manifest.
The policy, the same everywhere: a warning names the changed file and it is left out (training reads another image
of its class in its place, as for an unreadable file); more than 1 % of the files (at least 5) changed: refused.
"""

from __future__ import annotations

import os
import shutil
import warnings

import pytest

from tests.conftest import fit_args
from tests.reliability_support import call_main


def _replace(root, records, donor):
    for r in records:
        shutil.copy(root / donor.path, root / r.path)  # another class's photo now sits at this path
    return [r.path for r in records]


@pytest.fixture
def manifest(run_copy):
    from lit_garbage.data.manifest import Manifest

    return Manifest.read(run_copy / "split.csv")


def _donor(manifest):
    return next(r for r in manifest.split("train") if r.label == "clothes")


def test_evaluate_warns_and_leaves_out_a_replaced_image(run_copy, data_copy, manifest, tmp_path, capsys):
    from lit_garbage.commands.evaluate import main

    changed = _replace(data_copy, [r for r in manifest.split("test") if r.label == "battery"], _donor(manifest))
    code = main(["--model", str(run_copy / "model.ckpt"), "--data.root", str(data_copy), "--out", str(tmp_path / "eval")])
    out = capsys.readouterr()
    said = out.out + out.err
    named = [p for p in changed if p in said]
    assert named == changed, f"evaluate never named the replaced file(s) {sorted(set(changed) - set(named))}"
    assert code == 0, said[-2000:]
    rows = (tmp_path / "eval" / "predictions_test.csv").read_text()
    used = [p for p in changed if p in rows]
    assert not used, f"replaced files were evaluated as if they were the scanned photos: {used}"
    assert all(p in (tmp_path / "eval" / "report.md").read_text() for p in changed)  # listed as skipped


def test_a_touched_but_unchanged_image_is_not_reported(run_copy, data_copy, manifest, tmp_path, capsys):
    from lit_garbage.commands.evaluate import main

    for r in manifest.split("test"):
        os.utime(data_copy / r.path)  # a new mtime, the same bytes: hashed once, found equal
    assert main(["--model", str(run_copy / "model.ckpt"), "--data.root", str(data_copy),
                 "--out", str(tmp_path / "eval")]) == 0
    said = capsys.readouterr()
    assert "changed since" not in said.out + said.err


def test_resume_warns_about_a_replaced_training_image(run_copy, data_copy, manifest, capsys):
    from lit_garbage.training.cli import main

    victim = next(r for r in manifest.split("train") if r.label == "battery")
    changed = _replace(data_copy, [victim], _donor(manifest))
    (run_copy / "model.ckpt").unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = call_main(main, fit_args(data_copy, run_copy, "--trainer.max_epochs", "2", "--resume", "true"))
    out = capsys.readouterr()
    said = out.out + out.err + "\n".join(str(w.message) for w in caught)
    assert changed[0] in said, f"--resume trained on the replaced {changed[0]} without a word ({outcome[0]})"
    assert outcome[0] == "returned", outcome


def test_resume_refuses_a_dataset_that_changed_a_lot(run_copy, data_copy, manifest, capsys):
    from lit_garbage.data.manifest import DatasetError
    from lit_garbage.training.cli import main

    _replace(data_copy, [r for r in manifest.split("train") if r.label in ("battery", "glass")], _donor(manifest))
    (run_copy / "model.ckpt").unlink()
    with pytest.raises(DatasetError, match="changed since the dataset scan"):
        main(fit_args(data_copy, run_copy, "--trainer.max_epochs", "2", "--resume", "true"))
    assert (run_copy / "checkpoints" / "last.ckpt").is_file()  # the run is kept as it was


def test_export_does_not_verify_on_a_replaced_image(run_copy, data_copy, manifest, tmp_path, capsys):
    from lit_garbage.commands.export import main

    changed = _replace(data_copy, [r for r in manifest.split("test") if r.label == "battery"], _donor(manifest))
    code = main(["--model", str(run_copy / "model.ckpt"), "--formats", "onnx", "--data.root", str(data_copy),
                 "--out", str(tmp_path / "export")])
    out = capsys.readouterr()
    said = out.out + out.err
    named = [p for p in changed if p in said]
    assert named == changed, (f"the export verified on replaced test images without naming them "
                              f"(exit {code}; not named: {sorted(set(changed) - set(named))})")
    assert code == 0, said[-2000:]


def test_predict_on_the_run_split_leaves_out_a_replaced_image(run_copy, data_copy, manifest, tmp_path, capsys):
    from lit_garbage.commands.predict import main

    changed = _replace(data_copy, [r for r in manifest.split("test") if r.label == "battery"], _donor(manifest))
    code = main(["--model", str(run_copy / "model.ckpt"), "--data.root", str(data_copy), "--csv",
                 str(tmp_path / "p.csv"), "--quiet"])
    said = capsys.readouterr()
    assert code == 0 and all(p in said.err for p in changed), said.err[-2000:]
    assert not any(p in (tmp_path / "p.csv").read_text() for p in changed)


def test_a_manifest_row_outside_the_dataset_root_is_not_read(run_copy, data_copy, tmp_path, capsys):
    """split.csv travels with a run directory (shared, copied, edited): a row whose path leaves the dataset root
    ('../', or absolute) would make evaluate, export and training read whatever file it names."""
    from lit_garbage.commands.evaluate import main

    outside = tmp_path / "outside.jpg"
    shutil.copy(next((data_copy / "clothes").iterdir()), outside)
    rows = (run_copy / "split.csv").read_text().splitlines()
    for name in (os.path.relpath(outside, data_copy), str(outside)):  # ../outside.jpg, then /abs/outside.jpg
        i = next(k for k, r in enumerate(rows) if ",test," in r)
        fields = rows[i].split(",")
        fields[0] = name
        edited = rows[:i] + [",".join(fields)] + rows[i + 1:]
        (run_copy / "split.csv").write_text("\n".join(edited) + "\n")
        code = main(["--model", str(run_copy / "model.ckpt"), "--data.root", str(data_copy), "--data.manifest",
                     str(run_copy / "split.csv"), "--out", str(tmp_path / "eval")])
        out = capsys.readouterr()
        assert code == 2 and "outside.jpg" in out.err and "not inside the dataset root" in out.err, out.err[-1500:]
        assert not (tmp_path / "eval").exists()
