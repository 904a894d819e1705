"""Files written whole or not at all, and a file's content hash (`sha256_file`).

Every file another process may read while it is written (a run's manifest and metrics, checkpoints, the image
cache, prediction tables, model files given their metadata) goes through `replaced_atomically`: written to a
temporary file beside its target, then renamed onto it (`os.replace` is atomic within one file system). A DDP
rank, a later `--resume` or another user sees the previous file or the new one, never half of one; an error or an
interrupt leaves no temporary file behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def file_mode() -> int:
    """The permissions a new file gets here (0o666 less the umask): mkstemp's 0600 would keep a run private."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def replaced_atomically(path: str | Path, prefix: str | None = None, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without error it becomes `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix or f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def low_space(folder: str | Path, need: int, what: str) -> str | None:
    """A one-line problem when `folder` (or its nearest existing parent) has less than `need` bytes free."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError as err:
        return f"cannot use {what} {folder}: {err.strerror or err}"
    if free < need:
        return (f"{what} {folder} has {free / 2**20:.0f} MiB free, {need / 2**20:.0f} MiB are needed; free some "
                "space" + (" or point TMPDIR at another folder" if "TMPDIR" in what else ""))
    return None


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def writable_problem(path: str | Path) -> str | None:
    """Why a file cannot be written at `path` (replaced atomically: written beside it), or None."""
    path = Path(path)
    if path.is_dir():
        return "is a folder, not a file"
    folder = _nearest_existing(path.parent)
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder} is not writable"
    return None


def folder_problem(path: str | Path) -> str | None:
    """Why files cannot be written into the folder `path` (made if missing), or None."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        return "exists and is not a folder"
    folder = _nearest_existing(path)
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder} is not writable"
    return None


def sha256_file(path: str | Path) -> str:
    """The sha256 of a whole file's content (manifest rows, checkpoints, exports' metadata), hex."""
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
