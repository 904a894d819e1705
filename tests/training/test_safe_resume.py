"""`--resume` never runs code from the run's checkpoints, and never reads or deletes files outside the run.

A real finished run (`one_epoch_run`) is copied, its last.ckpt forged, and the real CLI resumes it in-process.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from lit_garbage.training import cli
from tests.conftest import fit_args
from tests.forged_files import (
    UNSAFE_GLOBAL,
    call_main,
    forge_checkpoint_paths,
    forge_pickle,
    ran,
)


@pytest.mark.parametrize("torch_default", ["weights_only", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1"])
def test_resume_refuses_a_last_ckpt_with_pickled_code(torch_default, one_epoch_copy, synthetic_root, tmp_path,
                                                       monkeypatch, capsys):
    """Lightning hands `weights_only=None` to torch unless told, so torch's default decides, and one environment
    variable (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD) turns that default into unpickling anything."""
    if torch_default != "weights_only":
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "marker"
    last = one_epoch_copy / "checkpoints" / "last.ckpt"
    forge_pickle(last, last, marker)
    (one_epoch_copy / "model.ckpt").unlink()
    outcome = call_main(cli.main, fit_args(synthetic_root, one_epoch_copy, "--trainer.max_epochs", "2",
                                           "--resume", "true"))
    err = capsys.readouterr().err
    assert ran(marker) == 0, f"--resume unpickled code from {last} ({outcome[0]} {outcome[1]!r})"
    assert outcome == ("exit", 2), f"{outcome}: {err[-800:]}"
    assert "last.ckpt" in err and UNSAFE_GLOBAL in err, err[-1500:]


def _resume(run: Path, root: Path, capsys) -> str:
    """Resume `run` for one more epoch; everything it said (stdout, stderr, warnings)."""
    (run / "model.ckpt").unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = call_main(cli.main, fit_args(root, run, "--trainer.max_epochs", "2", "--resume", "true"))
    out = capsys.readouterr()
    assert outcome[0] == "returned", outcome
    return out.err + out.out + "\n".join(str(w.message) for w in caught)


def test_resume_never_reads_a_best_model_path_outside_the_run(one_epoch_copy, synthetic_root, tmp_path, capsys):
    """A last.ckpt of plain data (it loads with weights_only=True) whose ModelCheckpoint state names a pickle
    elsewhere as the best model, with a score no epoch beats: RestoreBestWeights opened it at the end of fit."""
    marker = tmp_path / "marker"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    evil = forge_pickle(one_epoch_copy / "model.ckpt", elsewhere / "innocent.ckpt", marker)
    dirpath = str(one_epoch_copy / "checkpoints")

    forge_checkpoint_paths(one_epoch_copy / "checkpoints" / "last.ckpt", dirpath, str(evil), -1e9)
    said = _resume(one_epoch_copy, synthetic_root, capsys)
    assert ran(marker) == 0, f"the resumed run unpickled {evil}, named as best model by a forged last.ckpt"
    assert str(evil) in said, "the best model path outside the run went unmentioned"
    results = (one_epoch_copy / "results.json").read_text()
    assert str(one_epoch_copy / "checkpoints") in results and str(evil) not in results, results


def test_resume_never_deletes_files_outside_the_run(one_epoch_copy, synthetic_root, tmp_path, capsys):
    """ModelCheckpoint deletes the previous k-th best file when a better one arrives; Lightning checks that it
    lies in the checkpoint folder with `dirpath in Path(previous).parents`, which '..' passes."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    dirpath = str(one_epoch_copy / "checkpoints")
    bad = f"{dirpath}/../../victim.txt"
    assert Path(bad).resolve() == victim.resolve()

    forge_checkpoint_paths(one_epoch_copy / "checkpoints" / "last.ckpt", dirpath, bad, 1e9)
    said = _resume(one_epoch_copy, synthetic_root, capsys)
    assert victim.exists(), f"resuming a run with a forged last.ckpt deleted {victim}"
    assert bad in said, "the checkpoint path outside the run went unmentioned"
