"""Value checks on the resolved `fit.py` config, run before anything is built or written.

jsonargparse already refuses unknown keys and wrong types when it parses the command line and
config files. What it cannot know are the values that make no sense (a negative learning rate, an
image smaller than the backbone can take, split fractions that do not sum to 1, a monitored metric
nothing logs): the classes check some of those in their constructors, but only after the dataset
has been scanned and the run directory written. `config_problems` checks them all up front, so a
bad config costs nothing and leaves nothing behind; every message starts with the key's name.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lit_garbage.data.datamodule import AUGMENT_ON
from lit_garbage.data.images import MIN_IMAGE_SIZE

# What GarbageClassifier logs (module.py `_step`): the only names EarlyStopping / ModelCheckpoint can watch.
LOGGED_METRICS = ("train_loss", "train_loss_step", "train_loss_epoch", "train_acc", "val_loss", "val_acc")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


def _get(cfg: Any, dotted: str, default: Any = None) -> Any:
    node = cfg
    for part in dotted.split("."):
        if node is None:
            return default
        node = node.get(part, default) if hasattr(node, "get") else getattr(node, part, default)
    return node


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def config_problems(cfg: Any) -> list[str]:
    """Every impossible value in a resolved fit config, as 'key: what is wrong' strings."""
    out: list[str] = []

    def need(key: str, ok: bool, what: str) -> None:
        if not ok:
            out.append(f"{key} {what}, got {_get(cfg, key)!r}")

    v = _get(cfg, "data.root")
    need("data.root", isinstance(v, str) and v.strip() != "", "must be the dataset folder")
    v = _get(cfg, "data.image_size")
    need("data.image_size", isinstance(v, int) and v >= MIN_IMAGE_SIZE, f"must be an integer >= {MIN_IMAGE_SIZE}")
    v = _get(cfg, "data.batch_size")
    need("data.batch_size", isinstance(v, int) and v >= 1, "must be >= 1")
    v = _get(cfg, "data.num_workers")
    need("data.num_workers", isinstance(v, int) and v >= 0, "must be >= 0")
    v = _get(cfg, "data.augment_on")
    need("data.augment_on", v is None or v in AUGMENT_ON, f"must be one of {', '.join(AUGMENT_ON)}")
    v = _get(cfg, "data.split")
    need("data.split", v is not None and len(v) == 3 and all(_number(x) and x > 0 for x in v)
         and abs(sum(v) - 1) < 1e-6, "must be 3 positive train/val/test fractions summing to 1")
    v = _get(cfg, "data.near_duplicate_distance")
    need("data.near_duplicate_distance", v is None or (isinstance(v, int) and 0 <= v <= 32),
         "must be in [0, 32] (bits of a 64-bit perceptual hash) or null")
    aug = _get(cfg, "data.augment")
    if aug is not None:
        for key in ("rotation", "shift", "shear", "zoom", "channel_shift"):
            x = _get(aug, key)
            if x is not None and not (_number(x) and x >= 0):
                out.append(f"data.augment.{key} must be >= 0, got {x!r}")
        z = _get(aug, "zoom")
        if _number(z) and not 0 <= z < 1:
            out.append(f"data.augment.zoom must be in [0, 1), got {z!r}")
        b = _get(aug, "brightness")
        if b is not None and not (len(b) == 2 and all(_number(x) for x in b) and 0 < b[0] <= b[1]):
            out.append(f"data.augment.brightness must be (low, high) with 0 < low <= high, got {b!r}")

    v = _get(cfg, "model.lr")
    need("model.lr", _number(v) and v > 0, "must be a positive number")
    v = _get(cfg, "model.l2")
    need("model.l2", _number(v) and v >= 0, "must be >= 0")
    v = _get(cfg, "model.dropout")
    need("model.dropout", _number(v) and 0 <= v < 1, "must be in [0, 1)")
    v = _get(cfg, "model.weights")
    path = str(v).removeprefix("keras:") if v is not None else None  # keras:PATH = a Keras backbone file
    need("model.weights", path is None or Path(path).exists(),
         "must be an existing weights file, keras:PATH to a Keras file, or null")
    for key in ("model.mean", "model.std"):
        v = _get(cfg, key)
        need(key, v is None or (len(v) == 3 and all(_number(x) for x in v)), "must be 3 numbers (RGB) or null")
    v = _get(cfg, "model.std")
    if v is not None and len(v) == 3 and all(_number(x) for x in v) and min(v) <= 0:
        out.append(f"model.std must be positive, got {v!r}")

    v = _get(cfg, "trainer.max_epochs")
    need("trainer.max_epochs", v is None or v == -1 or (isinstance(v, int) and v >= 1), "must be >= 1 (or -1: no limit)")
    v = _get(cfg, "trainer.min_epochs")
    need("trainer.min_epochs", v is None or (isinstance(v, int) and v >= 0), "must be >= 0")
    v = _get(cfg, "freeze.trainable_layers")
    need("freeze.trainable_layers", v is None or (isinstance(v, int) and v >= 0), "must be >= 0 or null (all)")
    v = _get(cfg, "early_stopping.patience")
    need("early_stopping.patience", isinstance(v, int) and v >= 0, "must be >= 0")
    for key in ("early_stopping.monitor", "checkpoint.monitor"):
        v = _get(cfg, key)
        if v is not None and v not in LOGGED_METRICS:
            out.append(f"{key} must be a metric the model logs ({', '.join(LOGGED_METRICS)}), got {v!r}")
    for key in ("early_stopping.mode", "checkpoint.mode"):
        v = _get(cfg, key)
        need(key, v in (None, "min", "max"), "must be 'min' or 'max'")
    return out


def check_config(cfg: Any) -> None:
    problems = config_problems(cfg)
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))
