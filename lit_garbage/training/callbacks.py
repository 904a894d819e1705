"""Training callbacks: partial fine-tuning, Keras-style restore of the best weights, exact resume, checkpoint paths
kept inside the run, checkpoints of a run directory (last.ckpt every epoch and on SIGTERM / Ctrl-C, paths that follow a
moved run); atomic checkpoint files."""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BaseFinetuning, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

from lit_garbage.checks import Rule, enforce, integer, optional
from lit_garbage.files import replaced_atomically
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


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, for a run directory that must always be resumable.

    - `last.ckpt` after every epoch (Lightning writes it only when the epoch saved a new best, so after an epoch
      that does not improve, `--resume` would repeat it);
    - on SIGTERM (a scheduler's pre-emption) and the first Ctrl-C (`StopOnSignal`), Lightning stops at the next
      batch boundary; this saves that state as `last.ckpt`, so `--resume` continues with the next batch;
    - restored from a run directory that was moved or copied, the paths of its checkpoints (best score, best and
      k-th best file, last.ckpt) are remapped into the new folder instead of dropped, so the best score is kept and
      no `last-v1.ckpt` appears beside a stale `last.ckpt`.

    Its state is stored under ModelCheckpoint's key, so runs made before keep their checkpoint state on resume.
    """

    @property
    def state_key(self) -> str:
        key = super().state_key
        return "ModelCheckpoint" + key[len(type(self).__qualname__):]

    def _last_due(self, trainer: pl.Trainer) -> bool:
        return bool(self.save_last) and not self._should_skip_saving_checkpoint(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer) and self._last_due(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        # The same test as the parent's: saving last here when the parent saves at the epoch's end would make it
        # skip that epoch's top-k save.
        if not self._should_save_on_train_epoch_end(trainer) and self._last_due(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # SIGTERMException is raised at a batch boundary: the state is whole. Any other exception may come from the
        # middle of a step (a second Ctrl-C, a crash): the last epoch's last.ckpt stays what --resume reads.
        if (isinstance(exception, SIGTERMException) and self.save_last and trainer.state.fn == TrainerFn.FITTING
                and not trainer.sanity_checking and self._last_global_step_saved != trainer.global_step):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            rank_zero_info(f"saved the interrupted state (epoch {trainer.current_epoch}, step {trainer.global_step}) "
                           f"to {self.last_model_path}")
            return
        super().on_exception(trainer, pl_module, exception)

    def load_state_dict(self, state_dict: dict) -> None:
        old, new = state_dict.get("dirpath"), self.dirpath
        if old and new and os.path.realpath(old) != os.path.realpath(new):
            state_dict = moved_checkpoint_state(state_dict, old, new)
            rank_zero_warn(f"the run directory moved: checkpoint paths under {old} now point into {new}")
            # Now restored in full, as for the same folder: what does not lie inside it (a path elsewhere, or one
            # that leaves it with '..') is dropped, as ConfineCheckpointPaths does for a run that did not move.
            confine_checkpoint_state(state_dict, new)
        super().load_state_dict(state_dict)


def moved_checkpoint_state(state: dict, old: str, new: str) -> dict:
    """ModelCheckpoint state with every path under `old` moved to the same place under `new` (others unchanged)."""
    def remap(path):
        if not path:
            return path
        try:
            return os.path.join(new, os.path.relpath(path, old)) if Path(path).is_relative_to(old) else path
        except (TypeError, ValueError):
            return path

    out = dict(state)
    for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
        if key in out:
            out[key] = remap(out[key])
    if isinstance(out.get("best_k_models"), dict):
        out["best_k_models"] = {remap(k): v for k, v in out["best_k_models"].items()}
    out["dirpath"] = new
    return out


class StopOnSignal(pl.Callback):
    """Ctrl-C (SIGINT) while fitting stops the run the way SIGTERM does: at the next batch boundary, through
    Lightning's own signal flag (`trainer.received_sigterm`; in DDP rank 0 broadcasts it, so every rank stops at
    the same batch), with `RunCheckpoint` saving that state. A second Ctrl-C stops at once (Lightning's
    KeyboardInterrupt path, no new checkpoint). `received` names the signal that stopped the run, or the
    KeyboardInterrupt, for the command's exit status (130 / 143).
    """

    received: str | None = None

    def __init__(self) -> None:
        self._previous = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return  # SIGINT ignored (a background job) or handled by the caller: leave it alone
        self._previous = signal.default_int_handler

        def first_ctrl_c(signum, frame) -> None:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # the next one interrupts at once
            StopOnSignal.received = "SIGINT"
            trainer._signal_connector.received_sigterm = True
            print("\ninterrupted (Ctrl-C): stopping after this batch and saving a checkpoint; press Ctrl-C again to "
                  "stop at once", file=sys.stderr, flush=True)

        signal.signal(signal.SIGINT, first_ctrl_c)

    def _restore(self) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()
        if isinstance(exception, KeyboardInterrupt):
            StopOnSignal.received = StopOnSignal.received or "SIGINT"
        elif isinstance(exception, SIGTERMException) and StopOnSignal.received is None:
            StopOnSignal.received = "SIGTERM"


def os_error_in(err: BaseException | None) -> OSError | None:
    """The OSError (with an errno) that `err` is or was raised from, if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno is not None:
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, quota, file size limit, read-only folder); names the file."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file in the same folder, flushed, then renamed into place.

    `os.replace` is atomic on one file system: a run killed while saving (kill -9, power cut, full
    disk) leaves the previous `last.ckpt` / best checkpoint whole, never a half-written one that
    `--resume` would then pick up. Leftover `.<name>.*.tmp` files are ignored and removed on resume.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        try:
            with replaced_atomically(path) as tmp:
                super().save_checkpoint(checkpoint, tmp, storage_options)
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
        except BaseException as err:
            cause = os_error_in(err)
            if cause is not None and not isinstance(err, CheckpointWriteError):
                raise CheckpointWriteError(cause.errno, cause.strerror or str(cause), str(path)) from err
            raise


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files of saves that were killed midway (see AtomicCheckpointIO)."""
    folder = Path(folder)
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
