"""`lit-garbage fit`: LightningCLI over `GarbageClassifier` + `GarbageDataModule`, one run directory per run.

A run directory holds everything about a run: `config.yaml` (the fully resolved config, so
`fit.py --config <run>/config.yaml` reproduces it), `split.csv` (the split manifest), `metrics.csv`
and TensorBoard events, `checkpoints/` (best and last), `model.ckpt` (the best weights, restored at
the end as Keras's `restore_best_weights` does) and `results.json`; the dataset scan's reports
`skipped.csv` and `duplicates.csv` sit beside `split.csv`.

Safety: `--resume` reads last.ckpt as tensors and plain data only (a pickle that would run code is refused,
exit 2), Lightning loads every checkpoint with `weights_only=True`, and the checkpoint paths a resumed state
names are followed only inside the run's checkpoint folder (`ConfineCheckpointPaths`, `RestoreBestWeights`).

Reliability: config values are checked before anything is built (`config_checks`); checkpoints are
written atomically and carry the random generators' states, so `--resume true` after a kill continues
exactly where the last checkpoint left off; a run that fails before saving any checkpoint removes
the run directory it created, so no half-made run is left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile
from datetime import datetime
from pathlib import Path

from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, WeightAveraging
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lit_garbage.data.datamodule import GarbageDataModule
from lit_garbage.runs import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    MANIFEST_FILE,
    MODEL_FILE,
    RESULTS_FILE,
)
from lit_garbage.safe_loading import UnsafeFileError, load_torch_file
from lit_garbage.training.callbacks import (
    AtomicCheckpointIO,
    ConfineCheckpointPaths,
    FreezeBackbone,
    RestoreBestWeights,
    RngState,
    remove_stale_temporaries,
)
from lit_garbage.training.config_checks import ConfigError, check_config
from lit_garbage.training.module import GarbageClassifier

# Lightning's DDP launcher re-runs this script for the other local ranks; they inherit the
# environment, so the run directory chosen by rank 0 travels to them through this variable.
RUN_DIR_ENV = "LIT_GARBAGE_RUN_DIR"


def _is_launcher_rank_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


# The run directory this process chose, and whether it existed before: `main` removes a directory
# it created when the run fails before any checkpoint was written (nothing there to resume).
_RUN: dict = {}


def check_resumable(path: Path) -> None:
    """A checkpoint `--resume` can load: a complete torch zip archive (CRCs checked), or a clear error."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError) as err:
        bad = str(err)
    if bad:
        raise SystemExit(f"error: --resume: {path} is damaged ({bad}). Delete it to resume from the best "
                         f"checkpoint in {path.parent} (copy it to last.ckpt), or start a new --run_dir.")


def check_safe_to_load(path: Path) -> None:
    """A checkpoint `--resume` may load: tensors and plain data only (`weights_only`), or exit 2 naming what it holds."""
    try:
        load_torch_file(path)
    except UnsafeFileError as err:
        print(f"error: --resume: {err}", file=sys.stderr)
        raise SystemExit(2) from None


class GarbageCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run_dir", type=str | None, default=None,
                            help="Run directory (default: runs/<date>-<time>). Required with --resume "
                                 "and for multi-node runs.")
        parser.add_argument("--resume", type=bool, default=False,
                            help="Continue the run in --run_dir from its last checkpoint.")
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults({"early_stopping.monitor": "val_loss", "early_stopping.patience": 3})
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val_loss",
            "checkpoint.save_last": True,
            "checkpoint.filename": "best-epoch{epoch:02d}-val_loss{val_loss:.4f}",
            "checkpoint.auto_insert_metric_name": False,
        })
        parser.add_lightning_class_args(FreezeBackbone, "freeze")
        parser.link_arguments("data.image_size", "model.image_size")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        parser.link_arguments("data.class_weights", "model.class_weights", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        cfg = self.config
        try:
            check_config(cfg)  # impossible values: refused before anything is scanned or written
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        # Only processes started by a DDP launcher (rank > 0) inherit rank 0's run directory.
        launched_child = not _is_launcher_rank_zero()
        inherited = os.environ.get(RUN_DIR_ENV) if launched_child else None
        run_dir = Path(cfg.run_dir or inherited or f"runs/{datetime.now():%Y%m%d-%H%M%S}")
        last = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
        if not launched_child:
            _RUN.update(run_dir=run_dir, existed=run_dir.exists())
        if cfg.resume:
            if not last.is_file():
                raise SystemExit(f"error: --resume: no checkpoint at {last}; pass the --run_dir of an existing run.")
            if not launched_child:
                remove_stale_temporaries(last.parent)
                check_resumable(last)
                check_safe_to_load(last)
            self.ckpt_path = str(last)
        else:
            self.ckpt_path = None
            if not launched_child and (last.exists() or (run_dir / MODEL_FILE).exists()):
                raise SystemExit(f"error: {run_dir} already holds a run; pass --resume true to continue it "
                                 "or choose another --run_dir.")
        os.environ[RUN_DIR_ENV] = str(run_dir)
        self.run_dir = run_dir
        cfg.run_dir = str(run_dir)
        cfg.trainer.default_root_dir = str(run_dir)
        cfg.checkpoint.dirpath = str(run_dir / CHECKPOINT_DIR)
        if cfg.data.manifest is None:
            cfg.data.manifest = str(run_dir / MANIFEST_FILE)

    def instantiate_trainer(self, **kwargs):
        if self.config_init.trainer.get("logger") in (None, True):
            kwargs["logger"] = [CSVLogger(self.run_dir, name="", version="", flush_logs_every_n_steps=10),
                                TensorBoardLogger(self.run_dir, name="", version="")]
        if not self.config_init.trainer.get("plugins"):
            kwargs["plugins"] = [AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)


def run_fit(cli: GarbageCLI) -> dict:
    """Fit, restore the best weights, save them as model.ckpt, score them on val and test."""
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    # weights_only=True, passed explicitly: Lightning would otherwise leave it to torch's default, which the
    # environment can turn off (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD); the same for every checkpoint Lightning
    # loads by itself in validate / test (a SLURM requeue's hpc_ckpt).
    trainer.fit(model, datamodule=data, ckpt_path=cli.ckpt_path, weights_only=True)
    # Weight averaging (EMA) is done: the model now holds the restored best averaged weights. Left in
    # place, the callback would swap its last average in for the final validate/test and model.ckpt.
    trainer.callbacks[:] = [c for c in trainer.callbacks if not isinstance(c, WeightAveraging)]
    run_dir = Path(cli.run_dir)
    trainer.save_checkpoint(run_dir / MODEL_FILE)
    val = trainer.validate(model, datamodule=data, verbose=False, weights_only=True)[0]
    test = trainer.test(model, datamodule=data, verbose=False, weights_only=True)[0]
    ckpt = trainer.checkpoint_callback
    results = {
        "run_dir": str(run_dir),
        "model": str(run_dir / MODEL_FILE),
        "best_checkpoint": ckpt.best_model_path,
        # the metric the checkpoint callback kept the best epoch by (val_loss for the seed, val_acc for improved)
        "monitor": ckpt.monitor,
        "best_score": float(ckpt.best_model_score) if ckpt.best_model_score is not None else None,
        "epochs": trainer.current_epoch,
        "val_loss": val["val_loss"],
        "val_acc": val["val_acc"],
        "test_loss": test["test_loss"],
        "test_acc": test["test_acc"],
        "class_names": model.class_names,
    }
    if trainer.is_global_zero:
        (run_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
        print(
            f"\nfinal (best weights): val_loss {results['val_loss']:.4f}  val_acc {results['val_acc']:.4f}  "
            f"test_acc {results['test_acc']:.4f}\n"
            f"best checkpoint: {results['best_checkpoint']}\n"
            f"model: {results['model']}\nrun directory: {run_dir}"
        )
    return results


def _remove_unfinished_run_dir() -> None:
    run_dir, existed = _RUN.get("run_dir"), _RUN.get("existed", True)
    if run_dir is None or existed or not run_dir.is_dir():
        return
    if any((run_dir / CHECKPOINT_DIR).glob("*.ckpt")) or (run_dir / MODEL_FILE).exists():
        return  # something to resume from or to look at: keep it
    shutil.rmtree(run_dir, ignore_errors=True)


def main(args: list[str] | None = None) -> dict | None:
    """Fit with the command-line arguments `args` (None: `sys.argv[1:]`); returns the results (None if the run
    did not finish). Dataset errors raise `DatasetError` (`lit-garbage fit` prints them without a traceback)."""
    _RUN.clear()
    try:
        cli = GarbageCLI(
            GarbageClassifier,
            GarbageDataModule,
            run=False,
            trainer_defaults={"callbacks": [RestoreBestWeights(), RngState(), ConfineCheckpointPaths()]},
            save_config_kwargs={"overwrite": True},
            args=args,
            auto_configure_optimizers=False,
            parser_kwargs={"prog": "lit-garbage fit"},
        )
        return run_fit(cli)
    except BaseException as err:
        if not isinstance(err, SystemExit) or err.code not in (0, None):
            _remove_unfinished_run_dir()
        raise

