"""Reliability: a run directory that was moved or copied keeps working as itself.

Saved state holds absolute paths: ModelCheckpoint's (dirpath, best_k_models, last_model_path) in last.ckpt, the
data module's manifest path in every checkpoint, the checkpoint path in an export's metadata.json. After a move
those name the old place, or another run that now lives there.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import torch

from tests.conftest import fit_args
from tests.forged_files import forge_checkpoint_paths
from tests.reliability_support import (
    call_main,
    edit_checkpoint,
    model_checkpoint_state,
    tiny_onnx_export,
)


def test_resume_in_a_moved_run_keeps_its_best_score_and_last_ckpt(tiny_run, run_copy, synthetic_root):
    """`run_copy` is `tiny_run` (one finished epoch) under another path: resume it for one more epoch."""
    from lit_garbage.training.cli import main

    best_before = json.loads((tiny_run / "results.json").read_text())["best_score"]
    (run_copy / "model.ckpt").unlink()
    (run_copy / "results.json").unlink()
    outcome = call_main(main, fit_args(synthetic_root, run_copy, "--trainer.max_epochs", "2", "--resume", "true"))
    assert outcome[0] == "returned", outcome
    results = json.loads((run_copy / "results.json").read_text())
    val = [float(r["val_loss"]) for r in csv.DictReader((run_copy / "metrics.csv").open())
           if r.get("val_loss") and r["epoch"] == "1"]
    expected = min(best_before, val[0])  # the resumed epoch counts only if it is better
    assert abs(results["best_score"] - expected) < 1e-6, (
        f"best score {best_before:.4f} forgotten after the move: the resumed epoch's {val[0]:.4f} was restored as "
        f"best ({Path(results['best_checkpoint']).name})")
    assert Path(results["best_checkpoint"]).parent == run_copy / "checkpoints", results["best_checkpoint"]
    lasts = sorted(p.name for p in (run_copy / "checkpoints").glob("last*.ckpt"))
    assert lasts == ["last.ckpt"], f"the resumed run wrote {lasts}: --resume next time reads a stale last.ckpt"
    state = model_checkpoint_state(torch.load(run_copy / "checkpoints" / "last.ckpt", weights_only=True))
    assert all(str(run_copy) in p for p in [state["best_model_path"], state["last_model_path"], *state["best_k_models"]])


def test_a_moved_run_whose_old_place_is_gone_finishes_with_its_best_weights(tiny_run, tmp_path, synthetic_root):
    """No new best after the move: the best checkpoint is the one in the moved folder (the old path is gone)."""
    from lit_garbage.training.cli import main

    moved = tmp_path / "moved"
    shutil.copytree(tiny_run, tmp_path / "orig")
    # As if made at tmp_path/orig, then moved: the checkpoint state names orig's paths.
    last = tmp_path / "orig" / "checkpoints" / "last.ckpt"
    old = str(tiny_run / "checkpoints")

    def point_at_orig(ckpt):
        state = model_checkpoint_state(ckpt)
        new = str(tmp_path / "orig" / "checkpoints")
        for key in ("best_model_path", "kth_best_model_path", "last_model_path", "dirpath"):
            state[key] = state[key].replace(old, new)
        state["best_k_models"] = {k.replace(old, new): v for k, v in state["best_k_models"].items()}
        state["best_model_score"] = torch.tensor(-1.0)  # unbeatable: the resumed epoch is no new best

    edit_checkpoint(last, point_at_orig)
    shutil.move(tmp_path / "orig", moved)
    (moved / "model.ckpt").unlink()
    outcome = call_main(main, fit_args(synthetic_root, moved, "--trainer.max_epochs", "2", "--resume", "true"))
    assert outcome[0] == "returned", outcome
    results = json.loads((moved / "results.json").read_text())
    assert Path(results["best_checkpoint"]).parent == moved / "checkpoints" and results["best_score"] == -1.0


def _as_if_made_here(run: Path) -> None:
    """Point the run's checkpoints at their own split.csv, as `fit --run_dir RUN` writes them."""
    for ckpt in [run / "model.ckpt", *(run / "checkpoints").glob("*.ckpt")]:
        edit_checkpoint(ckpt, lambda c: c["datamodule_hyper_parameters"].update(manifest=str(run / "split.csv")))


def test_evaluate_a_copied_run_on_its_own_split(tiny_run, tmp_path, capsys):
    """The original place is reused for a new run with another split: evaluating the copy must not use it."""
    from lit_garbage.commands.evaluate import main

    orig = tmp_path / "runs" / "exp"
    shutil.copytree(tiny_run, orig)
    _as_if_made_here(orig)
    copy = tmp_path / "archive" / "exp"
    shutil.copytree(orig, copy)
    rows = (orig / "split.csv").read_text().splitlines()
    swapped = [rows[0]] + [r.replace(",test,", ",TMP,").replace(",train,", ",test,").replace(",TMP,", ",train,")
                           for r in rows[1:]]
    (orig / "split.csv").write_text("\n".join(swapped) + "\n")  # "runs/exp" now holds another run's split
    assert main(["--model", str(copy / "model.ckpt"), "--out", str(tmp_path / "eval")]) == 0
    report = (tmp_path / "eval" / "report.md").read_text()
    assert str(copy / "split.csv") in report, [line for line in report.splitlines() if "split.csv" in line]


def test_export_samples_of_a_copied_run_come_from_its_own_split(tiny_run, tmp_path):
    from lit_garbage.export.samples import run_data

    orig = tmp_path / "runs" / "exp"
    shutil.copytree(tiny_run, orig, ignore=shutil.ignore_patterns("image_cache"))
    _as_if_made_here(orig)
    copy = tmp_path / "archive" / "exp"
    shutil.copytree(orig, copy)
    (orig / "split.csv").unlink()
    ckpt = torch.load(copy / "model.ckpt", map_location="cpu", weights_only=True)
    assert run_data(ckpt, copy / "model.ckpt").manifest_path == copy / "split.csv"


def test_evaluate_a_copied_export_with_its_own_checkpoint(tiny_run, synthetic_root, tmp_path, capsys):
    """metadata.json names the checkpoint by absolute path: a copied export must read its own run's checkpoint."""
    from lit_garbage.commands.evaluate import main

    orig = tmp_path / "runs" / "exp"
    shutil.copytree(tiny_run, orig, ignore=shutil.ignore_patterns("image_cache"))
    hp = torch.load(orig / "model.ckpt", weights_only=True)["hyper_parameters"]
    tiny_onnx_export(orig / "export", hp["class_names"], hp["image_size"], orig / "model.ckpt", orig / "split.csv")
    copy = tmp_path / "archive" / "exp"
    shutil.copytree(orig, copy)
    elsewhere = tmp_path / "other-data"
    shutil.copytree(synthetic_root, elsewhere)
    edit_checkpoint(orig / "model.ckpt", lambda c: c["datamodule_hyper_parameters"].update(root=str(elsewhere)))
    assert main(["--model", str(copy / "export" / "model.onnx"), "--out", str(tmp_path / "eval")]) == 0
    report = (tmp_path / "eval" / "report.md").read_text()
    assert str(elsewhere) not in report, "the copied export took its dataset root from the original run's checkpoint"


def test_the_run_directory_files_are_as_readable_as_its_checkpoints(tiny_run):
    """Checkpoints get the usual permissions (AtomicCheckpointIO chmods its temporary file); split.csv, skipped.csv,
    duplicates.csv and the image cache kept mkstemp's 0600: a run shared with or moved to another user could not be
    resumed or evaluated by them."""
    want = (tiny_run / "model.ckpt").stat().st_mode & 0o777
    names = ["split.csv", "skipped.csv", "duplicates.csv", ".lock",
             *(str(p.relative_to(tiny_run)) for p in (tiny_run / "image_cache").glob("*/*"))]
    modes = {n: oct((tiny_run / n).stat().st_mode & 0o777) for n in names}
    assert set(modes.values()) == {oct(want)}, f"model.ckpt is {oct(want)}, but {modes}"


def test_a_moved_run_never_deletes_files_outside_it(run_copy, synthetic_root, tmp_path, capsys):
    """The state of a moved run is restored in full once its paths are moved into the new folder: a path that lay
    outside the old folder too (a forged last.ckpt) must be dropped, not handed to ModelCheckpoint, which deletes
    the previous k-th best file when a better one arrives."""
    import warnings

    from lit_garbage.training.cli import main

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    old = str(tmp_path / "old-place" / "checkpoints")
    bad = f"{run_copy / 'checkpoints'}/../../victim.txt"  # Lightning's own check before deleting is lexical
    assert Path(bad).resolve() == victim.resolve()

    forge_checkpoint_paths(run_copy / "checkpoints" / "last.ckpt", old, bad, 1e9)
    (run_copy / "model.ckpt").unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = call_main(main, fit_args(synthetic_root, run_copy, "--trainer.max_epochs", "2", "--resume", "true"))
    said = capsys.readouterr().err + "\n".join(str(w.message) for w in caught)
    assert outcome[0] == "returned", outcome
    assert victim.exists(), f"resuming a moved run with a forged last.ckpt deleted {victim}"
    assert bad in said and "outside the run's checkpoint folder" in said, said[-2000:]
