"""Expensive fixtures built once per test run, however many pytest-xdist workers ask for them.

Each xdist worker is its own process with its own session fixtures: without this, every worker that needs the
trained + exported model would train and export it again. `once_per_run` builds into a folder shared by the
workers of this run (the parent of the workers' temporary folders), under a file lock: the first worker to ask
builds, the others wait for it and load the same result. Without xdist it is an ordinary session cache.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import Callable, TypeVar

import pytest
from filelock import FileLock

T = TypeVar("T")


def shared_temp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder all workers of this test run share (pytest-of-USER/pytest-N; the session's own without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def once_per_run(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], T]) -> T:
    """`build(folder)`'s result, built into `folder` by the first worker that asks; it must pickle. A build that
    failed fails the other workers' tests at once, instead of being tried again."""
    shared = shared_temp(tmp_path_factory)
    folder = shared / name
    # Beside the folder, not in it: the folder may be a dataset, where every file counts.
    result_file, failed_file = shared / f"{name}.result.pickle", shared / f"{name}.failed"
    with FileLock(str(shared / f"{name}.lock")):
        if result_file.is_file():
            return pickle.loads(result_file.read_bytes())
        if failed_file.is_file():
            pytest.fail(f"the shared fixture {name!r} failed in another worker:\n{failed_file.read_text()}")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        try:
            result = build(folder)
        except BaseException as err:
            failed_file.write_text(f"{type(err).__name__}: {err}")
            raise
        result_file.write_bytes(pickle.dumps(result))
        return result
