"""Reliability: one writer per run directory.

A second fit (or --resume) on a run directory that a live process is using is refused, naming that process's pid;
a run that fails never deletes what another process wrote; a lock left by a dead process does not block the
directory.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch
import yaml

from tests.conftest import fit_args
from tests.reliability_support import fit_cmd, popen, wait_for


def _winner_and_loser(a, out_a, b, out_b):
    """With a lock, exactly one of two concurrent fits runs; the other is refused (exit 2) naming the winner's pid."""
    refused = [(p, o, q) for p, o, q in ((a, out_a, b), (b, out_b, a)) if p.returncode == 2 and str(q.pid) in o]
    assert refused, (f"neither of two concurrent fits on one run directory was refused naming the other's pid: "
                     f"exit {a.returncode} ({out_a.strip().splitlines()[-1:]}), "
                     f"exit {b.returncode} ({out_b.strip().splitlines()[-1:]})")
    loser, _, winner = refused[0]
    return winner, loser


@pytest.mark.slow
def test_a_second_fit_on_a_busy_run_dir_is_refused_naming_the_holder(synthetic_root, tmp_path):
    """Both start before either has written a checkpoint (without a lock: both run, one or both crash in the CSV
    logger, config.yaml and model.ckpt come from different runs)."""
    run_dir = tmp_path / "run"
    a = popen(fit_cmd(*fit_args(synthetic_root, run_dir, "--trainer.max_epochs", "1", "--model.dropout", "0.1")))
    time.sleep(1.0)
    b = popen(fit_cmd(*fit_args(synthetic_root, run_dir, "--trainer.max_epochs", "1", "--model.dropout", "0.3")))
    out_b, _ = b.communicate(timeout=600)
    out_a, _ = a.communicate(timeout=600)
    winner, loser = _winner_and_loser(a, out_a, b, out_b)
    assert winner.returncode == 0, (out_a if winner is a else out_b)[-3000:]
    assert "Traceback" not in (out_b if loser is b else out_a)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    hp = torch.load(run_dir / "model.ckpt", map_location="cpu", weights_only=True)["hyper_parameters"]
    assert cfg["model"]["dropout"] == hp["dropout"] == (0.1 if winner is a else 0.3), (cfg["model"]["dropout"], hp["dropout"])
    assert (run_dir / ".lock").read_text() == ""  # a finished run names no holder


@pytest.mark.slow
def test_a_failing_run_does_not_delete_files_another_run_is_using(synthetic_root, tmp_path):
    """Run 1 creates the run directory and scans; run 2 starts on the same directory; run 1 is then stopped with
    Ctrl-C before its first checkpoint (an epoch's worth of batches is far away with 1 image per batch): without a
    lock, run 1 removed "the directory it created", split.csv included, while run 2 trained on it."""
    run_dir = tmp_path / "run"
    args = ("--trainer.max_epochs", "50", "--data.batch_size", "1", "--early_stopping.patience", "50")
    first = popen(fit_cmd(*fit_args(synthetic_root, run_dir, *args)))
    second = None
    try:
        assert wait_for((run_dir / "split.csv").exists, first), first.communicate()[0][-2000:]
        second = popen(fit_cmd(*fit_args(synthetic_root, run_dir, *args)))
        out_second, _ = second.communicate(timeout=300)
        assert second.returncode == 2 and str(first.pid) in out_second, out_second[-2000:]
        assert "in use by" in out_second
        left = {n: (run_dir / n).exists() for n in ("split.csv", "skipped.csv", "duplicates.csv")}
        assert all(left.values()), f"the refused run deleted the files of the run still using {run_dir}: {left}"
        first.send_signal(signal.SIGINT)
        out_first, _ = first.communicate(timeout=120)
        assert first.returncode == 130, out_first[-2000:]
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
            if p is not None:
                p.wait(timeout=60)


@pytest.mark.slow
def test_a_lock_left_by_a_killed_run_does_not_block_the_directory(synthetic_root, tmp_path):
    """kill -9 leaves no process to release a lock. The next fit on the directory must get past the lock to the
    data stage (here: a dataset that does not match the directory's split.csv, refused quickly)."""
    run_dir = tmp_path / "run"
    a = popen(fit_cmd(*fit_args(synthetic_root, run_dir, "--trainer.max_epochs", "2")))
    assert wait_for((run_dir / "split.csv").exists, a), a.communicate()[0][-3000:]
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=60)
    assert f"pid {a.pid} " in (run_dir / ".lock").read_text()
    other = tmp_path / "other"
    for name in ("x", "y"):
        (other / name).mkdir(parents=True)
        (other / name / "0.jpg").write_bytes(next((synthetic_root / "battery").iterdir()).read_bytes())
    again = popen(fit_cmd(*fit_args(other, run_dir, "--trainer.max_epochs", "1")))
    out, _ = again.communicate(timeout=600)
    assert "the split manifest" in out and "lists classes" in out, out[-3000:]
    assert f"pid {a.pid} " in out and "taking it over" in out, out[-3000:]


def test_a_failed_run_removes_only_what_it_wrote(synthetic_root, tmp_path):
    """A run that fails before its first checkpoint removes its own files from the folder it created; a file
    someone else put there in the meantime stays, with the folder."""
    from lit_garbage.data.manifest import DatasetError
    from lit_garbage.training import cli

    run_dir = tmp_path / "run"
    real = cli.GarbageCLI.instantiate_trainer

    def someone_writes_meanwhile(self, **kwargs):
        (run_dir / "notes.txt").write_text("mine")
        raise DatasetError("failed before the first checkpoint")

    cli.GarbageCLI.instantiate_trainer = someone_writes_meanwhile
    try:
        with pytest.raises(DatasetError):
            cli.main(fit_args(synthetic_root, run_dir))
    finally:
        cli.GarbageCLI.instantiate_trainer = real
    assert sorted(os.listdir(run_dir)) == ["notes.txt"]


def test_a_run_dir_that_cannot_be_created_is_refused_in_one_line(synthetic_root, tmp_path, capsys):
    from lit_garbage.training.cli import main

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exc:
        main(fit_args(synthetic_root, blocker / "run"))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "cannot write the run directory" in err and "dataset scan" not in err, err


def test_a_checkpoint_that_cannot_be_written_ends_fit_in_one_line(synthetic_root, tmp_path):
    """A file size limit (RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC) lets the dataset scan and the image cache
    through but not the first checkpoint: one line naming the file, exit 1, no traceback; the run directory it
    created holds no checkpoint, so it is removed."""
    import resource

    from tests.reliability_support import _default_sigint

    def small_files():
        _default_sigint()
        resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))

    run_dir = tmp_path / "run"
    proc = popen(fit_cmd(*fit_args(synthetic_root, run_dir, "--trainer.max_epochs", "1")), preexec_fn=small_files)
    out, _ = proc.communicate(timeout=600)
    last = out.strip().splitlines()[-1]
    assert proc.returncode == 1 and "Traceback" not in out, out[-3000:]
    assert last.startswith("error: cannot write ") and "checkpoints" in last and "File too large" in last, last
    assert "or choose another --run_dir, then run the command again" in last, last
    assert not run_dir.exists(), sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))
