"""Reliability: SIGTERM / SIGINT (a scheduler's pre-emption, Ctrl-C) end a run non-zero (143 / 130) with a
checkpoint of the interrupted state; --resume continues from it with the next batch, exactly as an uninterrupted
run; last.ckpt is the last completed epoch; metrics.csv keeps the rows logged before a resume; a SLURM job
requeued after pre-emption continues its run and reports its best weights.

Real subprocesses of scripts/fit.py, signalled from outside while epoch 1 trains.
"""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import pytest
import torch

from tests.conftest import fit_args
from tests.reliability_support import call_main, env, fit_cmd, popen, wait_for

# lr 0.05 on the synthetic set (seed 42, one thread): a non-improving epoch 2 (asserted below, not assumed).
ARGS = ("--model.lr", "0.05", "--early_stopping.patience", "5")
# Small batches, many steps an epoch: batch 2 gives 52 train batches (1-3 s an epoch), so the signal sent
# 0.8 s into epoch 1 lands mid-epoch on fast and slow machines alike (with batch 8, 13 batches, a fast CPU had
# finished the epoch before the signal).
SMALL_BATCHES = ("--data.batch_size", "2")


def _steps(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def _latest_state(run_dir: Path) -> tuple[int, Path | None]:
    best = (-1, None)
    for p in (run_dir / "checkpoints").glob("*.ckpt"):
        best = max(best, (_steps(p), p), key=lambda t: t[0])
    return best


def _interrupt_in_epoch_1(root, run_dir, sig, *extra):
    """Start a 2-epoch fit, wait for epoch 0's checkpoint, send `sig` a moment into epoch 1."""
    proc = popen(fit_cmd(*fit_args(root, run_dir, "--trainer.max_epochs", "2", *SMALL_BATCHES, *extra)))
    last = run_dir / "checkpoints" / "last.ckpt"
    assert wait_for(last.exists, proc), proc.communicate()[0][-3000:]
    steps_epoch0 = _steps(last)
    wait_for(lambda: False, timeout=0.8)
    assert proc.poll() is None, "the run ended before the signal"
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out, steps_epoch0


def _assert_interrupted_with_a_checkpoint(sig, rc, run_dir, steps_epoch0, out, code):
    tail = [line for line in out.splitlines() if line.strip()][-3:]
    assert rc == code, f"{sig.name} mid-epoch ended the run with exit status {rc}, not {code} ({tail})"
    steps, path = _latest_state(run_dir)
    assert steps > steps_epoch0, (f"no checkpoint of the interrupted state: the latest one ({path and path.name}) is at "
                                  f"step {steps}, epoch 0 ended at step {steps_epoch0}")
    assert not (run_dir / "results.json").exists()
    assert "--resume true" in out and "Traceback" not in out, out[-3000:]


@pytest.mark.slow
def test_sigint_mid_epoch_saves_a_checkpoint_and_exits_130(synthetic_root, tmp_path):
    run_dir = tmp_path / "run"
    rc, out, steps_epoch0 = _interrupt_in_epoch_1(synthetic_root, run_dir, signal.SIGINT)
    _assert_interrupted_with_a_checkpoint(signal.SIGINT, rc, run_dir, steps_epoch0, out, 130)


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_a_checkpoint_and_resumes_exactly(synthetic_root, tmp_path):
    run_dir, ref_dir = tmp_path / "run", tmp_path / "ref"
    rc, out, steps_epoch0 = _interrupt_in_epoch_1(synthetic_root, run_dir, signal.SIGTERM)
    _assert_interrupted_with_a_checkpoint(signal.SIGTERM, rc, run_dir, steps_epoch0, out, 143)
    interrupted_at = _steps(run_dir / "checkpoints" / "last.ckpt")
    proc = popen(fit_cmd(*fit_args(synthetic_root, run_dir, "--trainer.max_epochs", "2", *SMALL_BATCHES,
                                   "--resume", "true")))
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    assert "not resumable" not in out, "Lightning warned that the resumed epoch repeats batches"
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    val_epochs = sorted({r["epoch"] for r in rows if r.get("val_loss")})
    assert "0" in val_epochs, f"metrics.csv lost the rows logged before the resume (validation epochs now: {val_epochs})"
    # The same run without the interruption: the resumed one continued with the very next batch.
    ref = popen(fit_cmd(*fit_args(synthetic_root, ref_dir, "--trainer.max_epochs", "2", *SMALL_BATCHES)))
    out_ref, _ = ref.communicate(timeout=600)
    assert ref.returncode == 0, out_ref[-3000:]
    a = torch.load(ref_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] > interrupted_at
    for k in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][k], a["state_dict"][k], rtol=1e-5, atol=1e-6, msg=k)


def test_last_ckpt_is_the_last_completed_epoch(synthetic_root, tmp_path):
    """Lightning's save_last=True writes last.ckpt only when a top-k checkpoint was saved in the same step (a new
    best): after an epoch that does not improve, last.ckpt would stay one epoch behind and a kill lose that epoch."""
    from lit_garbage.training.cli import main

    run_dir = tmp_path / "run"
    # In-process: one thread, as ARGS's precondition was measured (with two, epoch 2 is a new best), whatever
    # thread count the tests before this one left.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main(fit_args(synthetic_root, run_dir, "--trainer.max_epochs", "3", *ARGS))
    finally:
        torch.set_num_threads(threads)
    val = {int(r["epoch"]): float(r["val_loss"]) for r in csv.DictReader((run_dir / "metrics.csv").open())
           if r.get("val_loss") and int(r["epoch"]) < 3}
    assert val[2] > min(val[0], val[1]), f"precondition: epoch 2 should not be a new best, got {val}"
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2, f"after 3 completed epochs last.ckpt holds epoch {last['epoch']} (val_loss {val})"
    assert "ModelCheckpoint{" in "".join(last["callbacks"])  # the key runs made before the change resume with


def test_resume_appends_to_metrics_csv(run_copy, synthetic_root):
    from lit_garbage.training.cli import main

    before = [r for r in csv.DictReader((run_copy / "metrics.csv").open()) if r["epoch"] == "0"]
    (run_copy / "model.ckpt").unlink()
    (run_copy / "results.json").unlink()
    outcome = call_main(main, fit_args(synthetic_root, run_copy, "--trainer.max_epochs", "2", "--resume", "true"))
    assert outcome[0] == "returned", outcome
    rows = list(csv.DictReader((run_copy / "metrics.csv").open()))
    after = [r for r in rows if r["epoch"] == "0"]
    assert after == before, f"epoch 0 had {len(before)} rows in metrics.csv, {len(after)} after --resume"
    assert {r["epoch"] for r in rows if r.get("val_loss")} >= {"0", "1"}
    assert len([r for r in rows if r.get("test_loss")]) == 1  # the first run's final test row made way for the new


SLURM = dict(SLURM_NTASKS="1", SLURM_JOB_NAME="fit", SLURM_JOB_ID="4242", SLURM_PROCID="0", SLURM_LOCALID="0",
             SLURM_NODEID="0", SLURM_NODELIST="localhost", SLURM_NTASKS_PER_NODE="1")


@pytest.mark.slow
def test_a_requeued_slurm_job_resumes_and_reports_its_best_weights(synthetic_root, tmp_path):
    """SLURM pre-emption, as Lightning's SLURMEnvironment(auto_requeue=True) handles it: SIGUSR1 -> it saves
    RUN/hpc_ckpt_N.ckpt and runs `scontrol requeue` (absent here), then SIGTERM ends the job; the requeued job
    runs the same command line again (SLURM_RESTART_COUNT=1). It must continue the run, and its final val/test
    must score the restored best weights (Lightning's validate/test load an hpc checkpoint by themselves under
    SLURM when given no ckpt_path)."""
    run_dir = tmp_path / "run"
    cmd = fit_cmd(*fit_args(synthetic_root, run_dir, "--trainer.max_epochs", "2", *SMALL_BATCHES))
    job = popen(cmd, env=env(**SLURM))
    assert wait_for((run_dir / "checkpoints" / "last.ckpt").exists, job), job.communicate()[0][-3000:]
    wait_for(lambda: False, timeout=0.5)
    job.send_signal(signal.SIGUSR1)
    assert wait_for(lambda: any(run_dir.glob("hpc_ckpt_*.ckpt")), job, timeout=120), job.communicate()[0][-3000:]
    job.send_signal(signal.SIGTERM)
    out, _ = job.communicate(timeout=300)
    assert job.returncode == 143, out[-3000:]
    requeued = popen(cmd, env=env(SLURM_RESTART_COUNT="1", **SLURM))
    out, _ = requeued.communicate(timeout=600)
    assert requeued.returncode == 0, f"the requeued job did not continue the run: {out.strip().splitlines()[-3:]}"
    assert "SLURM requeued this job" in out
    results = json.loads((run_dir / "results.json").read_text())
    assert abs(results["val_loss"] - results["best_score"]) < 1e-6, (
        f"final val_loss {results['val_loss']:.4f} is not the best checkpoint's {results['best_score']:.4f}: "
        f"{[line for line in out.splitlines() if 'Restoring states' in line]}")


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_with_loader_workers_saves_a_checkpoint(synthetic_root, tmp_path):
    """A terminal's Ctrl-C goes to the whole foreground process group: the DataLoader workers get SIGINT too. The
    run must still stop at a batch boundary with a checkpoint, not die of a worker that exited unexpectedly."""
    import os

    run_dir = tmp_path / "run"
    proc = popen(fit_cmd(*fit_args(synthetic_root, run_dir, "--trainer.max_epochs", "2", *SMALL_BATCHES,
                                   "--data.num_workers", "2")), start_new_session=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert wait_for(last.exists, proc), proc.communicate()[0][-3000:]
    steps_epoch0 = _steps(last)
    wait_for(lambda: False, timeout=0.8)
    assert proc.poll() is None, "the run ended before the signal"
    os.killpg(proc.pid, signal.SIGINT)  # the process group, as the terminal does
    out, _ = proc.communicate(timeout=300)
    _assert_interrupted_with_a_checkpoint(signal.SIGINT, proc.returncode, run_dir, steps_epoch0, out, 130)


def test_resume_without_last_ckpt_continues_from_the_newest_whole_checkpoint(run_copy, synthetic_root, capsys):
    """A full disk may have kept a best checkpoint but not last.ckpt; a damaged last.ckpt is named, and once it is
    deleted, as the message says, the run continues from the newest whole checkpoint."""
    from lit_garbage.training.cli import main

    last = run_copy / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    (run_copy / "model.ckpt").unlink()
    args = fit_args(synthetic_root, run_copy, "--trainer.max_epochs", "2", "--resume", "true")
    outcome = call_main(main, args)
    assert outcome[0] == "exit" and "last.ckpt is damaged" in str(outcome[1]) and "Delete it" in str(outcome[1]), outcome
    last.unlink()
    outcome = call_main(main, args)
    err = capsys.readouterr().err
    assert outcome[0] == "returned", outcome
    assert "no last.ckpt in" in err and "the newest whole checkpoint" in err, err[-2000:]
    assert _steps(last) > 0 and json.loads((run_copy / "results.json").read_text())["epochs"] == 2


def test_ctrl_c_during_the_dataset_scan_exits_130_without_a_traceback(synthetic_root, tmp_path, monkeypatch, capsys):
    """Before training starts there is nothing to save: the files the run wrote go, with the folder it created."""
    from lit_garbage.data import manifest
    from lit_garbage.training.cli import main

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(manifest, "build_manifest", ctrl_c)
    run_dir = tmp_path / "run"
    outcome = call_main(main, fit_args(synthetic_root, run_dir))
    err = capsys.readouterr().err
    assert outcome == ("exit", 130), outcome
    assert "interrupted by Ctrl-C" in err and "run the command again" in err and "Traceback" not in err, err[-1500:]
    assert not run_dir.exists()
