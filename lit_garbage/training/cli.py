"""`lit-garbage fit`: LightningCLI over `GarbageClassifier` + `GarbageDataModule`, one run directory per run.

A run directory holds everything about a run: `config.yaml` (the fully resolved config, so
`fit.py --config <run>/config.yaml` reproduces it), `split.csv` (the split manifest), `metrics.csv`
and TensorBoard events, `checkpoints/` (best and last), `model.ckpt` (the best weights, restored at
the end as Keras's `restore_best_weights` does) and `results.json`; the dataset scan's reports
`skipped.csv` and `duplicates.csv` sit beside `split.csv`.

Safety: `--resume` reads the checkpoint it continues from as tensors and plain data only (a pickle that would
run code is refused, exit 2), Lightning loads every checkpoint with `weights_only=True`, and the checkpoint paths
a resumed state names are followed only inside the run's checkpoint folder (`ConfineCheckpointPaths`,
`RestoreBestWeights`, and `RunCheckpoint` for the state of a moved run).

Reliability: config values and cheap facts (the backbone exists, the weights file is one, the accelerator is
there) are checked before anything is built (`config_checks`); one process writes a run directory at a time
(RUN/.lock, `rundir.RunLock`); checkpoints are written atomically, `last.ckpt` after every epoch, and carry
the random generators' states, so `--resume true` after a kill continues exactly where the last checkpoint
left off; SIGTERM and Ctrl-C stop at the next batch with a checkpoint of that state (exit status 143 / 130),
a SLURM job requeued after pre-emption continues its run; a resumed run appends to metrics.csv; a run that
fails before saving any checkpoint removes what it wrote into the run directory it created.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import warnings
import zipfile
from datetime import datetime
from pathlib import Path

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.fabric.utilities.warnings import PossibleUserWarning
from lightning.pytorch.callbacks import EarlyStopping, WeightAveraging
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_garbage.data.datamodule import GarbageDataModule
from lit_garbage.data.images import shown
from lit_garbage.runs import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    LOCK_FILE,
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
    RunCheckpoint,
    StopOnSignal,
    os_error_in,
    remove_stale_temporaries,
)
from lit_garbage.training.config_checks import ConfigError, check_config
from lit_garbage.training.config_files import ConfigFileError, expand_bases
from lit_garbage.training.module import GarbageClassifier
from lit_garbage.training.rundir import (
    WRITE_ERRNOS,
    RunCSVLogger,
    RunDirBusy,
    RunDirUnwritable,
    RunLock,
    has_checkpoint,
    hpc_checkpoints,
    logger_step,
    remove_unfinished,
    resume_checkpoint,
)

# Lightning's DDP launcher re-runs this script for the other local ranks; they inherit the
# environment, so the run directory chosen by rank 0 travels to them through this variable,
# and the checkpoint it resumes from through the second.
RUN_DIR_ENV = "LIT_GARBAGE_RUN_DIR"
RESUME_ENV = "LIT_GARBAGE_RESUME_FROM"


def _is_launcher_rank_zero() -> bool:
    """The process that owns the run directory: global rank 0 however the processes were started (Lightning's
    launcher and torchrun set RANK / LOCAL_RANK; srun sets SLURM_PROCID)."""
    if any(int(os.environ.get(var) or 0) != 0 for var in ("RANK", "LOCAL_RANK")):
        return False
    return not (SLURMEnvironment.detect() and int(os.environ.get("SLURM_PROCID") or 0) != 0)


def _slurm_restart_count() -> int:
    """How often SLURM has requeued this job (SLURM_RESTART_COUNT; 0 outside SLURM)."""
    value = os.environ.get("SLURM_RESTART_COUNT", "")
    return int(value) if value.isdigit() else 0


# The run directory this process chose and its lock (RunLock: whether this process created the folder). `main`
# removes what it wrote into a folder it created when the run fails before any checkpoint was written.
_RUN: dict = {}


def check_resumable(path: Path) -> None:
    """A checkpoint `--resume` can load: a complete torch zip archive (CRCs checked), or a clear error."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError) as err:
        bad = str(err)
    if bad:
        raise SystemExit(f"error: --resume: {path} is damaged ({bad}). Delete it to resume from the newest whole "
                         f"checkpoint in {path.parent}, or start a new --run_dir.")


def check_safe_to_load(path: Path) -> None:
    """A checkpoint `--resume` may load: tensors and plain data only (`weights_only`), or exit 2 naming what it holds."""
    try:
        load_torch_file(path)
    except UnsafeFileError as err:
        print(f"error: --resume: {err}", file=sys.stderr)
        raise SystemExit(2) from None


class GarbageCLI(LightningCLI):
    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        # `lit-garbage fit` hands over the arguments it read from sys.argv, so Lightning's check (a warning
        # whenever `args` is given while sys.argv holds arguments) would fire on every run: parsed without it.
        try:  # overlay configs (`base: seed.yaml`) become their chain of --config values
            args = expand_bases(sys.argv[1:] if args is None else list(args))
        except ConfigFileError as err:
            print(f"error: --config: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        self.config = parser.parse_args(args)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run_dir", type=str | None, default=None,
                            help="Run directory (default: runs/<date>-<time>). Required with --resume "
                                 "and for multi-node runs.")
        parser.add_argument("--resume", type=bool, default=False,
                            help="Continue the run in --run_dir from its last checkpoint.")
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults({"early_stopping.monitor": "val_loss", "early_stopping.patience": 3})
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
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
        if launched_child:
            chosen = os.environ.get(RESUME_ENV)  # rank 0's choice, for the processes Lightning's launcher starts
            if chosen is None and (cfg.resume or (_slurm_restart_count() and has_checkpoint(run_dir))):
                chosen = str(resume_checkpoint(run_dir)[0] or "")  # started apart (srun): the same choice as rank 0
            self.ckpt_path = chosen or None
        else:
            self.ckpt_path = self._claim_run_dir(run_dir, cfg)
            os.environ[RESUME_ENV] = self.ckpt_path or ""
        self.resume_step = logger_step(Path(self.ckpt_path)) if self.ckpt_path else None
        os.environ[RUN_DIR_ENV] = str(run_dir)
        self.run_dir = run_dir
        cfg.run_dir = str(run_dir)
        cfg.trainer.default_root_dir = str(run_dir)
        cfg.checkpoint.dirpath = str(run_dir / CHECKPOINT_DIR)
        if cfg.data.manifest is None:
            cfg.data.manifest = str(run_dir / MANIFEST_FILE)

    def _claim_run_dir(self, run_dir: Path, cfg) -> str | None:
        """Lock the run directory (launcher rank only) and decide what the run continues from (None: a new run)."""
        last = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
        if cfg.resume and not has_checkpoint(run_dir):  # nothing made, nothing locked
            raise SystemExit(f"error: --resume: no checkpoint at {last}; pass the --run_dir of an existing run.")
        try:
            lock = RunLock.take(run_dir)
        except (RunDirBusy, RunDirUnwritable) as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        _RUN.update(run_dir=run_dir, lock=lock)
        if lock.previous:
            print(f"note: {run_dir / LOCK_FILE} named {lock.previous}, which no longer holds it (the run was killed); "
                  "taking it over", file=sys.stderr)
        restarts = _slurm_restart_count()
        resume = cfg.resume
        if restarts and not resume:
            if has_checkpoint(run_dir):
                resume = True
                print(f"note: SLURM requeued this job (restart {restarts}): continuing the run in {run_dir}",
                      file=sys.stderr)
            elif not cfg.run_dir:
                print("warning: SLURM requeued this job, but without --run_dir it starts a new run directory; give "
                      "--run_dir so that a requeued job continues its run", file=sys.stderr)
        if not resume:
            if has_checkpoint(run_dir):
                raise SystemExit(f"error: {run_dir} already holds a run; pass --resume true to continue it "
                                 "or choose another --run_dir.")
            return None
        remove_stale_temporaries(last.parent)
        ckpt, note = resume_checkpoint(run_dir)
        if ckpt is None:
            raise SystemExit(f"error: --resume: no checkpoint at {last}; pass the --run_dir of an existing run.")
        if note:
            print(f"note: {note}", file=sys.stderr)
        check_resumable(ckpt)
        check_safe_to_load(ckpt)
        return str(ckpt)

    def instantiate_trainer(self, **kwargs):
        if self.config_init.trainer.get("logger") in (None, True):
            kwargs["logger"] = [RunCSVLogger(self.run_dir, resume_step=self.resume_step, flush_logs_every_n_steps=10),
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
    _stop_if_signalled(trainer)  # a signal on the last batch: Lightning finishes the epoch without raising
    # Weight averaging (EMA) is done: the model now holds the restored best averaged weights. Left in
    # place, the callback would swap its last average in for the final validate/test and model.ckpt.
    trainer.callbacks[:] = [c for c in trainer.callbacks if not isinstance(c, WeightAveraging)]
    run_dir = Path(cli.run_dir)
    # The full state (weights, optimiser, callbacks), as every checkpoint of a run: said explicitly, so Lightning
    # does not print that it chose (it reads like a remark on loading, which is always weights_only here).
    trainer.save_checkpoint(run_dir / MODEL_FILE, weights_only=False)
    # Under SLURM, validate / test with no ckpt_path load the newest hpc_ckpt_N.ckpt by themselves (the state at a
    # pre-emption, not these weights): name the weights just saved instead.
    final = {"ckpt_path": str(run_dir / MODEL_FILE)} if (
        SLURMEnvironment.detect() and hpc_checkpoints(Path(trainer.default_root_dir))) else {}
    val = trainer.validate(model, datamodule=data, verbose=False, weights_only=True, **final)[0]
    _stop_if_signalled(trainer)  # Lightning ignores a SIGTERM that arrives during the last batch
    test = trainer.test(model, datamodule=data, verbose=False, weights_only=True, **final)[0]
    _stop_if_signalled(trainer)
    ckpt = trainer.checkpoint_callback
    results = {
        "run_dir": str(run_dir),
        "model": str(run_dir / MODEL_FILE),
        "best_checkpoint": ckpt.best_model_path,
        # the metric the checkpoint callback kept the best epoch by (val_loss for seed / improved, val_acc for
        # full_finetune)
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


def _stop_if_signalled(trainer) -> None:
    if trainer.received_sigterm:
        raise SIGTERMException


def _remove_unfinished_run_dir() -> None:
    lock = _RUN.get("lock")
    if lock is not None:  # only the lock holder, and only in a folder it created (see rundir.remove_unfinished)
        remove_unfinished(lock)


def _write_error(err: OSError) -> str:
    """One line for a failed write (full disk, quota, file size limit, read-only or forbidden folder)."""
    run_dir = _RUN.get("run_dir")
    name = err.filename
    inside = run_dir is not None and (not name or Path(os.path.abspath(name)).is_relative_to(run_dir.absolute()))
    where = f" {shown(name)}" if name else (f" into {run_dir}" if run_dir is not None else "")
    fix = ("free space (or raise the limit)" if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
           else "make it writable" if inside else "make it readable")
    return (f"error: cannot {'write' if inside else 'access'}{where}: {err.strerror or err}. {fix[0].upper()}"
            f"{fix[1:]} or choose another --run_dir, then {_continue_hint()}.")


def _continue_hint() -> str:
    run_dir = _RUN.get("run_dir")
    if run_dir is None:
        return "run the command again"
    if has_checkpoint(run_dir):
        return f"continue with `--run_dir {run_dir} --resume true`"
    return "run the command again"


def main(args: list[str] | None = None) -> dict | None:
    """Fit with the command-line arguments `args` (None: `sys.argv[1:]`); returns the results (None if the run
    did not finish). Dataset errors raise `DatasetError` (`lit-garbage fit` prints them without a traceback).

    Stopped by a signal, it raises SystemExit(143) for SIGTERM and SystemExit(130) for Ctrl-C, after saving a
    checkpoint of the interrupted state; a write that fails for want of space or permission ends it with one line
    naming the file (SystemExit(1))."""
    _RUN.clear()
    StopOnSignal.received = None
    # The frozen part of the backbone keeps its BatchNorms in inference mode by design (`FreezeBackbone`, as Keras's
    # `trainable = False`); Lightning warns about every module in eval mode when training starts.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training",
                            category=PossibleUserWarning)
    try:
        cli = GarbageCLI(
            GarbageClassifier,
            GarbageDataModule,
            run=False,
            trainer_defaults={"callbacks": [RestoreBestWeights(), RngState(), ConfineCheckpointPaths(), StopOnSignal()]},
            save_config_kwargs={"overwrite": True},
            args=args,
            auto_configure_optimizers=False,
            parser_kwargs={"prog": "lit-garbage fit"},
        )
        return run_fit(cli)
    except SIGTERMException:  # Lightning's: a SystemExit without a code, which would read as success
        _remove_unfinished_run_dir()
        name, code = ("Ctrl-C (SIGINT)", 130) if StopOnSignal.received == "SIGINT" else ("SIGTERM", 143)
        print(f"error: interrupted by {name}; {_continue_hint()}", file=sys.stderr, flush=True)
        raise SystemExit(code) from None
    except SystemExit as err:
        if err.code not in (0, None):
            _remove_unfinished_run_dir()
        if err.code == 1 and StopOnSignal.received == "SIGINT":  # Lightning's KeyboardInterrupt exit
            print(f"error: interrupted by Ctrl-C (SIGINT); {_continue_hint()}", file=sys.stderr, flush=True)
            raise SystemExit(130) from None
        raise
    except KeyboardInterrupt:  # Ctrl-C before training started (the dataset scan, the image cache, the model build)
        _remove_unfinished_run_dir()
        print(f"error: interrupted by Ctrl-C (SIGINT); {_continue_hint()}", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    except BaseException as err:
        _remove_unfinished_run_dir()
        cause = os_error_in(err)
        if cause is not None and cause.errno in WRITE_ERRNOS:
            raise SystemExit(_write_error(cause)) from None
        raise
    finally:
        lock = _RUN.get("lock")
        if lock is not None:
            lock.release()

