"""Value checks on the resolved `fit.py` config, run before anything is built or written.

jsonargparse already refuses unknown keys and wrong types when it parses the command line and
config files. What it cannot know are the values that make no sense (a negative learning rate, an
image smaller than the backbone can take, split fractions that do not sum to 1, a monitored metric
nothing logs): each class declares those rules once beside itself (`lit_garbage.checks.Rule` tables) and
enforces them when it is built, which is after the dataset scan; `config_problems` runs every table against
the config up front, so a bad config costs nothing and leaves nothing behind, and both say the same words.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lit_garbage.checks import Rule, integer, one_of, optional, problems, value_at
from lit_garbage.data.datamodule import DATA_RULES
from lit_garbage.data.transforms import AUGMENT_RULES
from lit_garbage.models.network import KERAS_WEIGHTS_PREFIX, NET_RULES, is_keras_weights
from lit_garbage.training.callbacks import FREEZE_RULES
from lit_garbage.training.module import MODEL_RULES

# What GarbageClassifier logs (module.py `_step`): the only names EarlyStopping / ModelCheckpoint can watch.
LOGGED_METRICS = ("train_loss", "train_loss_step", "train_loss_epoch", "train_acc", "val_loss", "val_acc")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


def _max_epochs(v: Any) -> bool:
    return v is None or v == -1 or (integer(v) and v >= 1)


def _weights_exist(v: Any) -> bool:
    return v is None or Path(str(v).removeprefix("keras:")).exists()  # keras:PATH = a Keras backbone file


# Options only `fit` has (the Trainer's and the callbacks' own values); every other table lives with its class.
FIT_RULES = (
    Rule("model.weights", _weights_exist, "must be an existing weights file, keras:PATH to a Keras file, or null"),
    Rule("trainer.max_epochs", _max_epochs, "must be >= 1 (or -1: no limit)"),
    Rule("trainer.min_epochs", optional(lambda v: integer(v) and v >= 0), "must be >= 0"),
    Rule("early_stopping.patience", lambda v: integer(v) and v >= 0, "must be >= 0"),
    *(Rule(f"{part}.monitor", optional(one_of(*LOGGED_METRICS)),
           f"must be a metric the model logs ({', '.join(LOGGED_METRICS)})") for part in ("early_stopping", "checkpoint")),
    *(Rule(f"{part}.mode", one_of(None, "min", "max"), "must be 'min' or 'max'") for part in ("early_stopping", "checkpoint")),
)
ALL_RULES = (*DATA_RULES, *AUGMENT_RULES, *NET_RULES, *MODEL_RULES, *FREEZE_RULES, *FIT_RULES)
_MISSING = object()


def weights_file_problems(weights: Any) -> list[str]:
    """`model.weights` read as data before the scan: a Keras file with a Lambda (or any class outside Keras's
    built-in layers), or a torch file that holds Python objects, is refused naming the file and what it holds.
    Loading would run that code; the model build (after the scan) would be too late."""
    if not isinstance(weights, str):
        return []
    path = Path(weights.removeprefix(KERAS_WEIGHTS_PREFIX))
    if not path.exists():
        return []  # FIT_RULES says so
    from lit_garbage.safe_loading import UnsafeFileError, unsafe_globals

    if is_keras_weights(weights):
        from lit_garbage.models.keras_backbone import KerasImportError, check_keras_file

        try:
            check_keras_file(path)
        except UnsafeFileError as err:
            return [f"model.weights: {err}"]
        except KerasImportError:
            pass  # not a Keras model at all: loading it says what was found
        return []
    if path.is_file() and path.suffix.lower() != ".safetensors":
        found = unsafe_globals(path)
        if found:
            return [f"model.weights: {weights} holds Python objects that loading it would run ({', '.join(found)}); "
                    "refused: use a plain state dict, a checkpoint of this project or a .safetensors file"]
    return []


def config_problems(cfg: Any) -> list[str]:
    """Every impossible value in a resolved fit config, as 'key must ..., got value' strings (absent keys skipped),
    and a `model.weights` file that holds code."""
    found = problems(ALL_RULES, lambda key: value_at(cfg, key, _MISSING), missing=_MISSING)
    return found + weights_file_problems(value_at(cfg, "model.weights", None))


def check_config(cfg: Any) -> None:
    found = config_problems(cfg)
    if found:
        raise ConfigError("invalid config: " + "; ".join(found))
