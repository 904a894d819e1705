"""Reliability: a run killed with SIGKILL mid-epoch resumes exactly; checkpoints are written atomically."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from lit_garbage.training.callbacks import AtomicCheckpointIO
from tests.conftest import REPO, fit_args

EPOCHS = 3  # early-stopping patience too: no run stops early, so both runs write last.ckpt at the same epochs


def _cmd(root, run_dir, *extra):
    return [sys.executable, str(REPO / "scripts" / "fit.py"),
            *fit_args(root, run_dir, "--trainer.max_epochs", str(EPOCHS), "--early_stopping.patience", str(EPOCHS),
                      "--data.batch_size", "8", "--model.lr", "0.002", *extra)]


def _env():
    # One thread: CPU kernels give bit-identical results from process to process.
    env = {k: v for k, v in os.environ.items() if k != "LIT_GARBAGE_RUN_DIR"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    return env


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_equals_an_uninterrupted_run(synthetic_root, tmp_path):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref = subprocess.run(_cmd(synthetic_root, ref_dir), cwd=REPO, env=_env(), capture_output=True, text=True, check=False,
                         timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]

    # The same command, killed (SIGKILL: no handler, no cleanup) while epoch 1 trains. No callback
    # is involved: the test watches the run directory from outside, as a user's crash would happen.
    proc = subprocess.Popen(_cmd(synthetic_root, run_dir), cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    time.sleep(0.5)  # into epoch 1's training steps
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_at = _state(last)
    assert killed_at["epoch"] == 0, "the kill came after epoch 1 ended: the test did not interrupt an epoch"
    assert not (run_dir / "model.ckpt").exists()
    split_before = (run_dir / "split.csv").read_bytes()

    resumed = subprocess.run(_cmd(synthetic_root, run_dir, "--resume", "true"), cwd=REPO, env=_env(),
                             capture_output=True, text=True, timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (run_dir / "split.csv").read_bytes() == split_before  # same split, not a new one
    a, b = _state(ref_dir / "model.ckpt"), _state(run_dir / "model.ckpt")
    assert a["epoch"] == b["epoch"] and a["global_step"] == b["global_step"]
    for k in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][k], a["state_dict"][k], rtol=1e-5, atol=1e-6, msg=k)
    # Optimizer and early-stopping state continued rather than restarted.
    la, lb = _state(ref_dir / "checkpoints" / "last.ckpt"), _state(last)
    torch.testing.assert_close(lb["optimizer_states"][0]["state"][0]["exp_avg"],
                               la["optimizer_states"][0]["state"][0]["exp_avg"], rtol=1e-5, atol=1e-7)
    es_a = next(v for k, v in la["callbacks"].items() if k.startswith("EarlyStopping"))
    es_b = next(v for k, v in lb["callbacks"].items() if k.startswith("EarlyStopping"))
    assert es_a["wait_count"] == es_b["wait_count"] and es_a["stopped_epoch"] == es_b["stopped_epoch"]
    torch.testing.assert_close(es_b["best_score"], es_a["best_score"])


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, target)
    before = target.read_bytes()

    def dies_midway(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, target)
    monkeypatch.undo()
    assert target.read_bytes() == before  # the previous checkpoint is whole
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]  # no temp file left
    assert _state(target)["epoch"] == 1


def test_resume_refuses_a_damaged_checkpoint_and_cleans_stale_temporaries(synthetic_root, tmp_path, capsys):
    from lit_garbage.training.cli import main

    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "last.ckpt").write_bytes(b"PK\x03\x04 truncated by a full disk")
    (ckpts / ".last.ckpt.abc123.tmp").write_bytes(b"left by a kill")
    with pytest.raises(SystemExit, match="damaged"):
        main(fit_args(synthetic_root, tmp_path / "run", "--resume", "true"))
    assert not (ckpts / ".last.ckpt.abc123.tmp").exists()
    assert (ckpts / "last.ckpt").exists()  # the user's files are not deleted
    with pytest.raises(SystemExit, match="no checkpoint"):
        main(fit_args(synthetic_root, tmp_path / "other", "--resume", "true"))
    assert not (tmp_path / "other").exists()
