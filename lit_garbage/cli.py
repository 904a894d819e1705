"""`fit.py`: LightningCLI over `GarbageClassifier` + `GarbageDataModule`, one run directory per run.

A run directory holds everything about a run: `config.yaml` (the fully resolved config, so
`fit.py --config <run>/config.yaml` reproduces it), `split.csv` (the split manifest), `metrics.csv`
and TensorBoard events, `checkpoints/` (best and last), `model.ckpt` (the best weights, restored at
the end as Keras's `restore_best_weights` does) and `results.json`.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path

from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lit_garbage.callbacks import FreezeBackbone, RestoreBestWeights
from lit_garbage.datamodule import GarbageDataModule
from lit_garbage.module import GarbageClassifier

# Lightning's DDP launcher re-runs this script for the other local ranks; they inherit the
# environment, so the run directory chosen by rank 0 travels to them through this variable.
RUN_DIR_ENV = "LIT_GARBAGE_RUN_DIR"
MODEL_FILE = "model.ckpt"
RESULTS_FILE = "results.json"


def _is_launcher_rank_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


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
        run_dir = Path(cfg.run_dir or os.environ.get(RUN_DIR_ENV) or f"runs/{datetime.now():%Y%m%d-%H%M%S}")
        last = run_dir / "checkpoints" / "last.ckpt"
        if cfg.resume:
            if not last.is_file():
                raise SystemExit(f"error: --resume: no checkpoint at {last}; pass the --run_dir of an existing run.")
            self.ckpt_path = str(last)
        else:
            self.ckpt_path = None
            started_here = os.environ.get(RUN_DIR_ENV) is None and _is_launcher_rank_zero()
            if started_here and (last.exists() or (run_dir / MODEL_FILE).exists()):
                raise SystemExit(f"error: {run_dir} already holds a run; pass --resume true to continue it "
                                 "or choose another --run_dir.")
        os.environ[RUN_DIR_ENV] = str(run_dir)
        self.run_dir = run_dir
        cfg.run_dir = str(run_dir)
        cfg.trainer.default_root_dir = str(run_dir)
        cfg.checkpoint.dirpath = str(run_dir / "checkpoints")
        if cfg.data.manifest is None:
            cfg.data.manifest = str(run_dir / "split.csv")

    def instantiate_trainer(self, **kwargs):
        if self.config_init.trainer.get("logger") in (None, True):
            kwargs["logger"] = [CSVLogger(self.run_dir, name="", version=""),
                                TensorBoardLogger(self.run_dir, name="", version="")]
        kwargs.setdefault("callbacks", [])
        return super().instantiate_trainer(**kwargs)


def run_fit(cli: GarbageCLI) -> dict:
    """Fit, restore the best weights, save them as model.ckpt, score them on val and test."""
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    trainer.fit(model, datamodule=data, ckpt_path=cli.ckpt_path)
    run_dir = Path(cli.run_dir)
    trainer.save_checkpoint(run_dir / MODEL_FILE)
    val = trainer.validate(model, datamodule=data, verbose=False)[0]
    test = trainer.test(model, datamodule=data, verbose=False)[0]
    ckpt = trainer.checkpoint_callback
    results = {
        "run_dir": str(run_dir),
        "model": str(run_dir / MODEL_FILE),
        "best_checkpoint": ckpt.best_model_path,
        "best_val_loss": float(ckpt.best_model_score) if ckpt.best_model_score is not None else None,
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


def main(args: list[str] | None = None) -> dict | None:
    cli = GarbageCLI(
        GarbageClassifier,
        GarbageDataModule,
        run=False,
        trainer_defaults={"callbacks": [RestoreBestWeights()]},
        save_config_kwargs={"overwrite": True},
        args=args,
        auto_configure_optimizers=False,
    )
    return run_fit(cli)


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
