"""Training callbacks: partial fine-tuning, Keras-style restore of the best weights, exact resume, checkpoint paths
kept inside the run; atomic checkpoint files."""

from __future__ import annotations

import os
import random
import tempfile
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BaseFinetuning, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lit_garbage.checks import Rule, enforce, integer, optional
from lit_garbage.models.network import frozen_batchnorms_to_inference, weighted_layers
from lit_garbage.safe_loading import inside, load_torch_file

FREEZE_RULES = (Rule("freeze.trainable_layers", optional(lambda v: integer(v) and v >= 0), "must be >= 0 or null (all)"),)


class FreezeBackbone(BaseFinetuning):
    """Freeze the backbone except its last `trainable_layers` weighted layers (None: train it all).

    Keras counts every layer (conv, batch norm, activation, add, pad); only convolutions and batch
    norms hold weights, and those map one-to-one onto timm's modules. The seed's "last 30 Keras
    layers" of MobileNetV2 hold 21 weighted layers (block_13_project_BN .. Conv_1_bn), so the seed
    config says `trainable_layers: 21`; tests/test_model.py checks the trainable parameter count
    against a Keras MobileNetV2 with its last 30 layers unfrozen. Frozen batch norms run in
    inference mode (`GarbageNet.train`), as Keras does for `trainable=False`.
    """

    def __init__(self, trainable_layers: int | None = None) -> None:
        super().__init__()
        enforce(FREEZE_RULES, trainable_layers=trainable_layers)
        self.trainable_layers = trainable_layers

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        apply_partial_freeze(pl_module.net.backbone, self.trainable_layers)

    def finetune_function(self, pl_module, current_epoch, optimizer) -> None:
        """The seed keeps the same layers trainable for the whole run."""


def apply_partial_freeze(backbone: torch.nn.Module, trainable_layers: int | None) -> None:
    if trainable_layers is None:
        BaseFinetuning.make_trainable(backbone)
        return
    layers = [m for _, m in weighted_layers(backbone)]
    if trainable_layers > len(layers):
        raise ValueError(f"freeze.trainable_layers={trainable_layers} but the backbone has {len(layers)} weighted layers")
    cut = len(layers) - trainable_layers
    # The whole backbone, so layers `forward_features` never runs (MobileNetV3 `conv_head`, ConvNeXt
    # `head.norm`: not in `layers`) are frozen too; for MobileNetV2 this is exactly `layers[:cut]`.
    BaseFinetuning.freeze(backbone, train_bn=False)
    BaseFinetuning.make_trainable(layers[cut:])
    # BaseFinetuning only stops their updates (track_running_stats=False), which in training mode means
    # normalising with each batch's own statistics: the frozen layers would not compute what they learned.
    frozen_batchnorms_to_inference(backbone)


class RestoreBestWeights(pl.Callback):
    """At the end of fit, load the best checkpoint's weights (Keras `restore_best_weights=True`).

    Only a checkpoint inside the run's checkpoint folder is read, and with `weights_only=True`: the best model
    path comes back from last.ckpt on `--resume`, and a forged one could name any file."""

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ckpt = trainer.checkpoint_callback
        if not isinstance(ckpt, ModelCheckpoint) or not ckpt.best_model_path:
            return
        if not inside(ckpt.best_model_path, ckpt.dirpath):
            warnings.warn(f"the best model path {ckpt.best_model_path} lies outside the run's checkpoint folder "
                          f"{ckpt.dirpath}: not read; the model keeps the weights of the last epoch", stacklevel=2)
            return
        state = load_torch_file(ckpt.best_model_path, map_location=pl_module.device)
        pl_module.load_state_dict(state["state_dict"])


# ModelCheckpoint's state: the paths it restores from a checkpoint (and later deletes or reads).
_CHECKPOINT_PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


class ConfineCheckpointPaths(pl.Callback):
    """On `--resume`, drop the checkpoint paths the resumed state names outside the run's checkpoint folder.

    Lightning restores ModelCheckpoint's paths from last.ckpt as they are: it later deletes the k-th best file
    when a better one arrives (its own check, `dirpath in Path(previous).parents`, is lexical: `..` passes it)
    and `RestoreBestWeights` reads the best one. A forged last.ckpt (plain data, so `weights_only` loads it)
    could name any file to delete or to read. Runs before ModelCheckpoint restores its state (Lightning calls
    every callback's `on_load_checkpoint` first); each dropped path gets a warning naming it. Only the state
    of the same folder is confined: from another folder (a moved run) Lightning restores just the best model
    path, which RestoreBestWeights checks.
    """

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        states = checkpoint.get("callbacks") or {}
        for cb in trainer.checkpoint_callbacks:
            state = states.get(cb.state_key)
            if isinstance(state, dict) and cb.dirpath:
                confine_checkpoint_state(state, cb.dirpath)


def confine_checkpoint_state(state: dict, dirpath: str | Path) -> list[str]:
    """Drop (in place) every path of a ModelCheckpoint state that does not lie inside `dirpath` once `..` and
    links are resolved, when the state was saved for that folder; returns the dropped paths (each warned about)."""
    recorded = state.get("dirpath")
    if recorded is not None and str(recorded) != str(dirpath) and not _same_folder(recorded, dirpath):
        return []
    dropped = []
    best_k = state.get("best_k_models")
    if isinstance(best_k, dict):
        for path in [p for p in best_k if not inside(p, dirpath)]:
            del best_k[path]
            dropped.append(str(path))
    for key in _CHECKPOINT_PATH_KEYS:
        path = state.get(key)
        if path and not inside(path, dirpath):
            state[key] = ""
            dropped.append(str(path))
            if key == "best_model_path":
                state["best_model_score"] = None
            elif key == "kth_best_model_path":
                state.pop("kth_value", None)  # back to the callback's own start value
    for path in dict.fromkeys(dropped):
        warnings.warn(f"--resume: the checkpoint state names {path}, outside the run's checkpoint folder {dirpath}: "
                      "ignored (never read nor deleted)", stacklevel=2)
    return dropped


def _same_folder(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError):
        return False


class RngState(pl.Callback):
    """Carry the random generators' states in every checkpoint and put them back on resume.

    Lightning restores weights, optimizer, loops and callbacks, but not the global generators that
    drive augmentation and dropout: a resumed run would draw different numbers from the point of the
    interruption on. The states are taken when a checkpoint is written (the end of a validation)
    and restored as soon as the checkpoint is loaded, before the first training batch is fetched.
    The data loaders draw from their own generators (`GarbageDataModule`: shuffling is seeded per
    epoch), so the sanity-check validation between the two does not move the global ones. Stored as
    tensors and plain lists (`weights_only`-safe). Exact with `num_workers: 0`; with worker processes
    the workers' own augmentation streams restart, so a resumed run is equivalent but not bitwise equal.
    """

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, internal, gauss_next = random.getstate()
        state = {"torch": torch.get_rng_state(),
                 "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
                 "python": [version, list(internal), gauss_next]}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        torch.set_rng_state(state["torch"].cpu())
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file in the same folder, flushed, then renamed into place.

    `os.replace` is atomic on one file system: a run killed while saving (kill -9, power cut, full
    disk) leaves the previous `last.ckpt` / best checkpoint whole, never a half-written one that
    `--resume` would then pick up. Leftover `.<name>.*.tmp` files are ignored and removed on resume.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files of saves that were killed midway (see AtomicCheckpointIO)."""
    folder = Path(folder)
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
