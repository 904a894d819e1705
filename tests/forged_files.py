"""Forged model files for the tests of "opening a file never runs its code", and the fixtures that make them.

Every payload writes a marker file when it runs: a pickled `exec` added to a real checkpoint of this project,
a Keras Lambda layer in a real tf-keras file. Registered as a pytest plugin in tests/conftest.py:
`one_epoch_run` (one finished run of the real CLI per session), `one_epoch_copy` (a private copy a test may
forge files in) and `keras2_lambda` (tf-keras .h5 and SavedModel files with a Lambda layer).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from tests.once import once_per_run

UNSAFE_GLOBAL = "builtins.exec"  # what a pickled exec names (torch.serialization.get_unsafe_globals_in_checkpoint)


class Exec:
    """An object whose unpickling runs `code`: what a malicious checkpoint carries."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


def marker_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'a').write('ran\\n')"


def ran(marker: Path) -> int:
    """How many times a payload ran (0: never)."""
    return marker.read_text().count("ran") if marker.exists() else 0


def forge_pickle(src: Path, dst: Path, marker: Path) -> Path:
    """A real checkpoint plus one extra object that writes `marker` when unpickled."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    ckpt["extra"] = Exec(marker_code(marker))
    torch.save(ckpt, dst)
    return dst


def edit_checkpoint(path: Path, edit) -> Path:
    """Load (plain data only), let `edit(ckpt)` change it, save it back: still a file weights_only loads."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, path)
    return path


def model_checkpoint_state(ckpt: dict) -> dict:
    """The checkpoint callback's state inside a checkpoint dict."""
    return next(v for v in ckpt["callbacks"].values() if isinstance(v, dict) and "best_model_path" in v)


def forge_checkpoint_paths(last: Path, dirpath: str, path: str, score: float) -> Path:
    """`last`'s checkpoint-callback state rewritten to name `path` as its best and k-th best file with `score`
    (1e9 or -1e9: unbeatable either way), recorded as if written in `dirpath`: what a forged last.ckpt can claim."""
    def forge(ckpt):
        model_checkpoint_state(ckpt).update(
            dirpath=dirpath, best_model_path=path, best_model_score=torch.tensor(score),
            best_k_models={path: torch.tensor(score)}, kth_best_model_path=path, kth_value=torch.tensor(score))

    return edit_checkpoint(last, forge)


def call_main(main, args):
    """('returned', value) | ('exit', code) | ('raised', exception): how a command's main ended, in-process."""
    try:
        return ("returned", main(args))
    except SystemExit as err:
        return ("exit", err.code)
    except Exception as err:  # noqa: BLE001 - the tests assert on it
        return ("raised", err)


def an_image(root: Path) -> Path:
    return sorted((root / "battery").iterdir())[0]


@pytest.fixture(scope="session")
def one_epoch_run(tmp_path_factory, synthetic_root) -> Path:
    """One finished 1-epoch run of the real CLI (model.ckpt, checkpoints/last.ckpt, split.csv), trained once per
    test run and shared by the pytest-xdist workers (tests/once.py)."""
    def train(base: Path) -> Path:
        from lit_garbage.training import cli
        from tests.conftest import fit_args

        run = base / "run"
        cli.main(fit_args(synthetic_root, run, "--trainer.max_epochs", "1"))
        assert (run / "model.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
        return run

    return once_per_run(tmp_path_factory, "one-epoch", train)


@pytest.fixture
def one_epoch_copy(one_epoch_run, tmp_path) -> Path:
    """A private copy of `one_epoch_run` (tests forge or delete files in it)."""
    dst = tmp_path / "run"
    shutil.copytree(one_epoch_run, dst, ignore=shutil.ignore_patterns("image_cache"))
    return dst


@pytest.fixture(scope="session")
def keras2_lambda(tmp_path_factory) -> dict:
    """tf-keras (Keras 2) files whose Lambda layer writes a marker when its code runs: .h5 and SavedModel.
    Keras 2's loaders rebuild the Lambda from its marshalled bytecode and call it on the model's input."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tf_keras

    folder = tmp_path_factory.mktemp("keras2-lambda")
    marker = folder / "marker"
    fn = eval(f"lambda x: ({marker_code(marker)}, x)[1]")  # noqa: S307 - the payload under test
    inp = tf_keras.Input((32, 32, 3))
    x = tf_keras.layers.Lambda(fn, name="innocent")(inp)
    x = tf_keras.layers.Conv2D(4, 3, name="Conv1")(x)
    model = tf_keras.Model(inp, x, name="mobilenetv2_1.00_224")
    model.save(folder / "evil.h5")
    model.save(folder / "evil_savedmodel")
    marker.unlink()  # building and saving the model traced the lambda
    return {"h5": folder / "evil.h5", "saved_model": folder / "evil_savedmodel", "marker": marker}
