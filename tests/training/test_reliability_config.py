"""Reliability: config errors are refused before any work, naming the key, leaving no run directory."""

from __future__ import annotations

import pytest

from lit_garbage.training.cli import main
from lit_garbage.training.config_checks import config_problems
from tests.conftest import fit_args

CASES = {
    # jsonargparse's own checks: unknown keys and wrong types
    "unknown key": (["--model.lrr", "0.1"], "model.lrr"),
    "unknown section": (["--dataa.root", "x"], "dataa.root"),
    "wrong type": (["--data.image_size", "big"], "data.image_size"),
    "wrong type bool": (["--data.dedupe", "maybe"], "data.dedupe"),
    # value checks (lit_garbage.training.config_checks)
    "negative lr": (["--model.lr", "-0.001"], "model.lr"),
    "zero lr": (["--model.lr", "0"], "model.lr"),
    "dropout 1": (["--model.dropout", "1.0"], "model.dropout"),
    "image size < 32": (["--data.image_size", "16"], "data.image_size"),
    "split sum": (["--data.split", "[0.8, 0.15, 0.15]"], "data.split"),
    "split zero": (["--data.split", "[0.85, 0.15, 0.0]"], "data.split"),
    "split length": (["--data.split", "[0.5, 0.5]"], "data.split"),
    "batch 0": (["--data.batch_size", "0"], "data.batch_size"),
    "workers < 0": (["--data.num_workers", "-1"], "data.num_workers"),
    "epochs 0": (["--trainer.max_epochs", "0"], "trainer.max_epochs"),
    "patience < 0": (["--early_stopping.patience", "-2"], "early_stopping.patience"),
    "monitor typo": (["--early_stopping.monitor", "val_los"], "early_stopping.monitor"),
    "checkpoint monitor": (["--checkpoint.monitor", "accuracy"], "checkpoint.monitor"),
    "zoom": (["--data.augment.zoom", "1.5"], "data.augment.zoom"),
    "missing weights": (["--model.weights", "/nonexistent/w.ckpt"], "model.weights"),
    "frozen layers": (["--freeze.trainable_layers", "-1"], "freeze.trainable_layers"),
    "near dup distance": (["--data.near_duplicate_distance", "64"], "data.near_duplicate_distance"),
    # rules the classes declare beside themselves, checked up front too
    "optimizer": (["--model.optimizer", "sgd"], "model.optimizer"),
    "label smoothing 1": (["--model.label_smoothing", "1.0"], "model.label_smoothing"),
    "bn momentum": (["--model.bn_momentum", "2"], "model.bn_momentum"),
    "zero std": (["--model.std", "[0.5, 0.0, 0.5]"], "model.std"),
    "fill": (["--data.augment.fill", "white"], "data.augment.fill"),
    "erasing": (["--data.augment.erasing", "2"], "data.augment.erasing"),
    "crop scale": (["--data.augment.crop_scale", "[0.9, 0.2]"], "data.augment.crop_scale"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_is_refused_before_any_work(case, synthetic_root, tmp_path, capsys):
    extra, key = CASES[case]
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(fit_args(synthetic_root, run_dir, *extra))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert key in err, err[-2000:]
    assert not run_dir.exists()  # nothing scanned, nothing written


def test_all_problems_are_reported_at_once():
    cfg = {"data": {"root": "d", "image_size": 8, "batch_size": 4, "num_workers": 0, "split": [0.5, 0.5, 0.5]},
           "model": {"lr": -1, "l2": 0, "dropout": 0.5}, "trainer": {"max_epochs": 3},
           "early_stopping": {"patience": 3, "monitor": "val_loss"}}
    problems = config_problems(cfg)
    assert [p.split()[0] for p in problems] == ["data.image_size", "data.split", "model.lr"]


def test_class_names_come_from_the_data_and_zero_classes_is_a_dataset_error(tmp_path):
    from lit_garbage.data.manifest import DatasetError

    (tmp_path / "data").mkdir()
    with pytest.raises(DatasetError, match="no class sub-folders"):
        main(fit_args(tmp_path / "data", tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit, match=""):  # class names are not a user setting
        main(fit_args(tmp_path / "data", tmp_path / "run", "--model.class_names", "[a, b]"))


@pytest.mark.parametrize("build,key,value", [
    ("model", "lr", -1.0), ("model", "dropout", 1.0), ("model", "optimizer", "sgd"), ("net", "bn_momentum", 2.0),
    ("augment", "zoom", 1.5), ("augment", "fill", "white"), ("data", "batch_size", 0), ("freeze", "trainable_layers", -1),
])
def test_the_class_and_the_up_front_check_say_the_same_words(build, key, value, tmp_path):
    """One rule, one message: what `fit` refuses up front is what the class itself refuses."""
    from lit_garbage.data.datamodule import GarbageDataModule
    from lit_garbage.data.transforms import Augment
    from lit_garbage.models.network import GarbageNet
    from lit_garbage.training.callbacks import FreezeBackbone
    from lit_garbage.training.module import GarbageClassifier

    section = {"model": "model", "net": "model", "augment": "data.augment", "data": "data", "freeze": "freeze"}[build]
    config: dict = {}
    node = config
    for part in section.split("."):
        node = node.setdefault(part, {})
    node[key] = value
    (expected,) = config_problems(config)
    make = {"model": lambda: GarbageClassifier(["a", "b"], **{key: value}),
            "net": lambda: GarbageNet(2, **{key: value}),
            "augment": lambda: Augment(**{key: value}),
            "data": lambda: GarbageDataModule(str(tmp_path), **{key: value}),
            "freeze": lambda: FreezeBackbone(**{key: value})}[build]
    with pytest.raises(ValueError) as err:
        make()
    assert str(err.value) == expected
