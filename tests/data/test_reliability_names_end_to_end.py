"""Reliability: a photo whose file name is not UTF-8 is kept and used like any other by every stage: fit, --resume,
evaluate, export (its verification and the calibration reader), predict on the run's split; wherever its name is
printed or written as text, it is shown with \\xNN for the bytes that are not UTF-8."""

from __future__ import annotations

import os

import pytest

from tests.conftest import fit_args
from tests.reliability_support import add_non_utf8_photo, call_main

BAD_NAME = b"caf\xe9 photo.jpg"  # Latin-1 bytes, as zip archives made on Windows often leave them


@pytest.mark.slow
def test_a_non_utf8_file_name_end_to_end(data_copy, tmp_path, capsys):
    """fit, --resume, evaluate on every split, export (verification) and the calibration reader, predict on the
    run's split: the photo is used like any other, its name shown escaped wherever it is printed."""
    from lit_garbage.commands.evaluate import main as evaluate
    from lit_garbage.commands.export import main as export
    from lit_garbage.commands.predict import main as predict
    from lit_garbage.data.manifest import Manifest
    from lit_garbage.export.samples import run_data
    from lit_garbage.training.cli import main as fit

    bad = add_non_utf8_photo(data_copy, BAD_NAME)
    run_dir = tmp_path / "run"
    outcome = call_main(fit, fit_args(data_copy, run_dir, "--trainer.max_epochs", "1"))
    assert outcome[0] == "returned", f"fit: {outcome[0]}: {outcome[1]!r}"
    record = next(r for r in Manifest.read(run_dir / "split.csv").records if r.path.startswith("battery/caf"))
    (run_dir / "model.ckpt").unlink()
    outcome = call_main(fit, fit_args(data_copy, run_dir, "--trainer.max_epochs", "2", "--resume", "true"))
    assert outcome[0] == "returned", f"resume: {outcome[0]}: {outcome[1]!r}"
    ckpt = run_dir / "model.ckpt"

    assert evaluate(["--model", str(ckpt), "--split", "train", "val", "test", "--out", str(tmp_path / "eval")]) == 0
    predictions = (tmp_path / "eval" / f"predictions_{record.split}.csv").read_text(encoding="utf-8")
    assert "caf\\xe9 photo.jpg" in predictions

    import torch

    data = run_data(torch.load(ckpt, map_location="cpu", weights_only=True), ckpt)
    images = data.load(data.manifest.split(record.split), 64)  # what calibration (train) and verification read
    assert len(images) == len(data.manifest.split(record.split))
    assert export(["--model", str(ckpt), "--formats", "onnx", "--out", str(tmp_path / "export")]) == 0

    capsys.readouterr()
    assert predict(["--model", str(ckpt), "--split", record.split, "--csv", str(tmp_path / "p.csv")]) == 0
    assert "caf\\xe9 photo.jpg" in (tmp_path / "p.csv").read_text(encoding="utf-8")
    assert os.path.isfile(bad)
