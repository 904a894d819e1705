"""The writer's side of a run directory: one writer at a time, which checkpoint a resume continues from, a
metrics.csv that a resume appends to, and a cleanup that removes only what this run wrote.

    lock = RunLock.take(run_dir)          # RUN/.lock: refused (RunDirBusy) while another process holds it
    ckpt = resume_checkpoint(run_dir)     # last.ckpt, a SLURM hpc_ckpt_N.ckpt, or the newest whole checkpoint
    logger = RunCSVLogger(run_dir, resume_step=logger_step(ckpt))

The lock is `fcntl.flock` on RUN/.lock, held for the life of the process: the kernel releases it when the
process ends, however it ends, so a lock left by a killed run never blocks the directory (its file still names
the dead holder, which the next run reports). flock works on local file systems and NFSv4; on file systems
where it is not enforced (some NFSv3 set-ups), two runs are not kept apart.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import os
import re
import shutil
import socket
import sys
import zipfile
from datetime import datetime
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from lit_garbage.files import file_mode, replaced_atomically
from lit_garbage.runs import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    DUPLICATES_FILE,
    IMAGE_CACHE_DIR,
    LAST_CHECKPOINT,
    LOCK_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    MODEL_FILE,
    SKIPPED_FILE,
)
from lit_garbage.safe_loading import load_torch_file

HPC_PATTERN = "hpc_ckpt_*.ckpt"  # what Lightning's SLURM requeue handler saves into the run directory
# Errors of writing that a user can act on (space, quota, file size limit, permissions): one line, no traceback.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


class RunDirBusy(RuntimeError):
    """Another live process holds the run directory's lock; the message names it."""


class RunDirUnwritable(RuntimeError):
    """The run directory cannot be created or written; the message says which and why."""


class RunLock:
    """An exclusive flock on RUN/.lock, and whether this process created RUN (only then may it remove RUN)."""

    def __init__(self, run_dir: Path, fd: int, created: bool, previous: str) -> None:
        self.run_dir, self.fd, self.created = run_dir, fd, created
        self.previous = previous  # what the lock file said before: a holder that died without releasing it

    @classmethod
    def take(cls, run_dir: str | Path) -> RunLock:
        run_dir = Path(run_dir)
        try:
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            try:
                run_dir.mkdir()  # atomic: of several processes, exactly one creates the folder
                created = True
            except FileExistsError:
                created = False
            fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, file_mode())
        except OSError as err:
            raise RunDirUnwritable(
                f"cannot write the run directory {run_dir}: {err.strerror or err}"
                f"{f' ({err.filename})' if err.filename else ''}; make it writable or choose another --run_dir"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_lock(fd) or "another process"
            os.close(fd)
            raise RunDirBusy(f"{run_dir} is in use by {holder} ({run_dir / LOCK_FILE}); wait for it to finish, or "
                             "choose another --run_dir") from None
        except OSError as err:  # no locking on this file system: carry on unguarded, and say so
            print(f"warning: cannot lock {run_dir / LOCK_FILE} ({err.strerror or err}): two runs on this directory "
                  "would not be kept apart", file=sys.stderr)
        previous = _read_lock(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {datetime.now():%Y-%m-%d %H:%M:%S}\n"
                  .encode(), 0)
        return cls(run_dir, fd, created, previous)

    def release(self) -> None:
        """Empty the lock file (a finished run leaves no holder named) and let go of the lock."""
        if self.fd < 0:
            return
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = -1


def _read_lock(fd: int) -> str:
    try:
        return os.pread(fd, 300, 0).decode(errors="replace").strip()
    except OSError:
        return ""


# ---------------------------------------------------------------- which checkpoint a resume continues from


def checkpoint_step(path: Path) -> int:
    """The checkpoint's global step (-1 when it cannot be read or holds more than plain data)."""
    try:
        return int(load_torch_file(path)["global_step"])
    except Exception:  # noqa: BLE001 - a damaged file: check_resumable names what is wrong with it
        return -1


def logger_step(path: Path | None) -> int | None:
    """The metrics.csv step a resume from `path` continues at (rows from that step on are logged again)."""
    if path is None:
        return None
    try:
        ckpt = load_torch_file(path)
    except Exception:  # noqa: BLE001
        return None
    loop = ((ckpt.get("loops") or {}).get("fit_loop") or {}).get("epoch_loop.state_dict") or {}
    return int(loop.get("_batches_that_stepped", ckpt.get("global_step", 0)))


def _is_whole(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.testzip() is None
    except (zipfile.BadZipFile, OSError):
        return False


def hpc_checkpoints(run_dir: Path) -> list[Path]:
    def number(p: Path) -> int:
        found = re.search(r"(\d+)", p.stem)
        return int(found.group(1)) if found else -1

    return sorted(run_dir.glob(HPC_PATTERN), key=number)


def has_checkpoint(run_dir: Path) -> bool:
    """Whether the run directory holds anything to resume from (or a finished model)."""
    return (any((run_dir / CHECKPOINT_DIR).glob("*.ckpt")) or bool(hpc_checkpoints(run_dir))
            or (run_dir / MODEL_FILE).exists())


def resume_checkpoint(run_dir: Path) -> tuple[Path | None, str]:
    """(the checkpoint `--resume` continues from, a note on the choice or "").

    `last.ckpt`, unless a SLURM requeue checkpoint (`hpc_ckpt_N.ckpt`, saved on the requeue signal) is further
    along; with no last.ckpt (a full disk kept only a best checkpoint), the newest whole checkpoint.
    """
    last = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
    hpc = hpc_checkpoints(run_dir)
    if last.is_file():
        if not hpc:
            return last, ""
        steps = {p: checkpoint_step(p) for p in (last, hpc[-1])}
        if steps[hpc[-1]] > steps[last]:
            return hpc[-1], (f"resuming from {hpc[-1].name} (step {steps[hpc[-1]]}), saved on SLURM's requeue signal "
                             f"after {LAST_CHECKPOINT} (step {steps[last]})")
        return last, ""
    others = [p for p in [*(run_dir / CHECKPOINT_DIR).glob("*.ckpt"), *hpc] if _is_whole(p)]
    if not others:
        return None, ""
    best = max(others, key=lambda p: (checkpoint_step(p), p.stat().st_mtime_ns))
    return best, f"no {LAST_CHECKPOINT} in {last.parent}: resuming from {best.name}, the newest whole checkpoint"


# ---------------------------------------------------------------- metrics.csv across a resume


class _KeepingWriter(ExperimentWriter):
    """Lightning's writer deletes metrics.csv when its folder is not empty (our folder is the run directory, which
    always holds split.csv by then). A fresh run starts a new metrics.csv quietly; a resumed run keeps the rows
    logged before the checkpoint it continues from (step < resume_step) and appends to them."""

    def __init__(self, log_dir: str, resume_step: int | None) -> None:
        self._resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        if self._resume_step is None:
            path.unlink()
            return
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            keys = list(reader.fieldnames or [])
            rows = [r for r in reader if (r.get("step") or "").isdigit() and int(r["step"]) < self._resume_step]
        with replaced_atomically(path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = sorted(keys)


class RunCSVLogger(CSVLogger):
    """CSVLogger writing RUN/metrics.csv; `resume_step`: the step the run resumes at (None: a new run)."""

    def __init__(self, run_dir: str | Path, resume_step: int | None = None, **kwargs) -> None:
        super().__init__(run_dir, name="", version="", **kwargs)
        self._resume_step = resume_step

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(self.log_dir, self._resume_step)
        return self._experiment


# ---------------------------------------------------------------- cleanup of a run that failed early

# What `fit` writes into a run directory before its first checkpoint: the only names a failed run removes.
_OWN_FILES = (CONFIG_FILE, MANIFEST_FILE, SKIPPED_FILE, DUPLICATES_FILE, METRICS_FILE, "hparams.yaml")
_OWN_PATTERNS = ("events.out.tfevents.*", ".*.tmp")


def remove_unfinished(lock: RunLock) -> None:
    """Remove what a run that failed before its first checkpoint wrote, then the folder if it is empty.

    Only for the lock holder that created the folder; a folder holding a checkpoint is kept (something to resume
    or to look at), and files this run did not write are never touched.
    """
    run_dir = lock.run_dir
    if not lock.created or not run_dir.is_dir() or has_checkpoint(run_dir):
        return
    for name in _OWN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for pattern in _OWN_PATTERNS:
        for p in run_dir.glob(pattern):
            p.unlink(missing_ok=True)
    shutil.rmtree(run_dir / IMAGE_CACHE_DIR, ignore_errors=True)
    ckpts = run_dir / CHECKPOINT_DIR
    if ckpts.is_dir():
        for p in ckpts.glob(".*.tmp"):
            p.unlink(missing_ok=True)
        try:
            ckpts.rmdir()
        except OSError:
            pass
    (run_dir / LOCK_FILE).unlink(missing_ok=True)  # while still holding it: no one locks the old file after us
    lock.release()
    try:
        run_dir.rmdir()  # only when empty: what someone else put there stays, and so does the folder
    except OSError:
        pass
