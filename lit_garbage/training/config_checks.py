"""Value checks on the resolved `fit.py` config, run before anything is built or written.

jsonargparse already refuses unknown keys and wrong types when it parses the command line and
config files. What it cannot know are the values that make no sense (a negative learning rate, an
image smaller than the backbone can take, split fractions that do not sum to 1, a monitored metric
nothing logs): each class declares those rules once beside itself (`lit_garbage.checks.Rule` tables) and
enforces them when it is built, which is after the dataset scan; `config_problems` runs every table against
the config up front, so a bad config costs nothing and leaves nothing behind, and both say the same words.

Some facts cost little to learn and would otherwise surface only after the scan, with a traceback: whether the
backbone is a timm model (value rule, with close matches), whether the weights file is a weights file and the
accelerator is there (value rules), whether `freeze.trainable_layers` fits the backbone and whether pretrained
weights can be had offline (`fact_problems`, which look at several keys).
"""

from __future__ import annotations

import os
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


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"  # a torch file (zip) or a .keras file


def weights_problem(v: Any) -> str | None:
    """What is wrong with a `model.weights` value (None: nothing), from the path and the file's first bytes."""
    if v is None:
        return None
    text = str(v)
    keras = text.startswith("keras:")
    path = Path(text.removeprefix("keras:"))
    if not path.exists():
        return "no such file"
    if path.is_dir():
        if keras:
            return None if (path / "saved_model.pb").is_file() else "a folder, and not a SavedModel (no saved_model.pb)"
        return "a folder, not a file"
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as err:
        return f"cannot be read: {err.strerror or err}"
    if keras:
        if head.startswith(HDF5_SIGNATURE) or head.startswith(ZIP_SIGNATURE):
            return None
        return f"not a Keras file: neither HDF5 (.h5) nor a .keras zip; it starts with {head[:8]!r}"
    if path.suffix == ".safetensors":  # timm reads a file as safetensors by its name
        size = int.from_bytes(head[:8], "little") if len(head) >= 9 else 0
        return None if 0 < size < path.stat().st_size and head[8:9] == b"{" else "named .safetensors, not one inside"
    if head.startswith(ZIP_SIGNATURE) or head[:1] == b"\x80":  # torch.save: a zip, or a legacy pickle
        return None
    if head.startswith(HDF5_SIGNATURE):
        return "a Keras HDF5 file: pass it as keras:PATH"
    return f"not a torch state dict (.pt/.pth/.bin/.ckpt) or .safetensors file; it starts with {head[:8]!r}"


def _accelerator_problem(v: Any) -> str | None:
    if not isinstance(v, str):
        return None  # an Accelerator instance or class_path: Lightning checks it
    name = v.lower()
    if name in ("gpu", "cuda"):
        import torch

        return None if torch.cuda.is_available() else "torch sees no CUDA device on this machine"
    if name == "mps":
        import torch

        return None if torch.backends.mps.is_available() else "MPS is not available on this machine"
    return None


# Options only `fit` has (the Trainer's and the callbacks' own values); every other table lives with its class.
FIT_RULES = (
    Rule("model.weights", lambda v: weights_problem(v) is None,
         "must be an existing weights file (a torch state dict or .safetensors), keras:PATH to a Keras file, or null",
         hint=lambda v: f" ({weights_problem(v)})"),
    Rule("trainer.accelerator", lambda v: _accelerator_problem(v) is None, "must be an accelerator this machine has",
         hint=lambda v: f" ({_accelerator_problem(v)}; use cpu or auto)"),
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


def fact_problems(cfg: Any, skip: set[str] = frozenset()) -> list[str]:
    """Facts that need several keys or a look at the machine; keys in `skip` (already refused) are not looked at."""
    def get(key: str) -> Any:
        return None if key in skip else value_at(cfg, key, None)

    found = []
    backbone, weights = get("model.backbone"), get("model.weights")
    usable_backbone = isinstance(backbone, str) and "model.backbone" not in skip
    devices, accelerator = get("trainer.devices"), get("trainer.accelerator")
    if isinstance(accelerator, str) and accelerator.lower() in ("gpu", "cuda") and integer(devices) and devices > 0:
        import torch

        if torch.cuda.is_available() and devices > torch.cuda.device_count():
            found.append(f"trainer.devices must be at most the {torch.cuda.device_count()} GPU(s) this machine has, "
                         f"got {devices}")
    layers = get("freeze.trainable_layers")
    if usable_backbone and integer(layers) and layers > 0 and "model.weights" not in skip:
        count = _weighted_layer_count(backbone, weights)
        if count is not None and layers > count:
            found.append(f"freeze.trainable_layers must be at most the {count} weighted layers of {backbone!r}, got "
                         f"{layers} (null trains the whole backbone)")
    if usable_backbone and get("model.pretrained") is True and weights is None:
        problem = _pretrained_problem(backbone)
        if problem:
            found.append(problem)
    return found


def _weighted_layer_count(backbone: str, weights: Any) -> int | None:
    """The backbone's weighted layers, counted on a model built without weights (about half a second)."""
    import timm

    from lit_garbage.models.network import (
        KERAS_BACKBONE_KWARGS,
        is_keras_weights,
        weighted_layers,
    )

    extra = KERAS_BACKBONE_KWARGS if is_keras_weights(weights) else {}
    try:
        model = timm.create_model(backbone, pretrained=False, num_classes=0, global_pool="", **extra)
    except Exception:  # noqa: BLE001 - the model build itself will say what is wrong
        return None
    return len(weighted_layers(model))


def _hub_offline() -> bool:
    try:
        import huggingface_hub.constants

        return bool(huggingface_hub.constants.HF_HUB_OFFLINE)
    except ImportError:
        return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _pretrained_problem(backbone: str) -> str | None:
    """`model.pretrained true` that cannot work: timm has no weights for the model, or they are on the Hugging Face
    Hub, not in the local cache, and the hub is switched off (HF_HUB_OFFLINE)."""
    import timm

    from lit_garbage.models.imagenet_weights import find_local_imagenet_file, offline_routes

    if find_local_imagenet_file(backbone) is not None:  # torchvision's own file, used offline (network.py)
        return None
    advice = ("point --model.weights at a local file (a timm/torch state dict or .safetensors, torchvision's "
              "MobileNetV2 file, or keras:PATH to a Keras MobileNetV2), or train from scratch with "
              "--model.pretrained false." + offline_routes(backbone))
    try:
        cfg = timm.models.get_pretrained_cfg(backbone)
    except Exception:  # noqa: BLE001
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        return f"model.pretrained true, but timm has no pretrained weights for {backbone!r}: {advice}"
    if not cfg.hf_hub_id:
        return None
    try:
        import huggingface_hub
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        if isinstance(huggingface_hub.try_to_load_from_cache(cfg.hf_hub_id, filename), str):
            return None
    where = (f"model.pretrained true needs timm's pretrained weights for {backbone!r} ({cfg.hf_hub_id} on the Hugging "
             "Face Hub), which are not in the local cache")
    if _hub_offline():
        return f"{where}, and the hub is offline (HF_HUB_OFFLINE): {advice}"
    unreachable = _hub_unreachable(huggingface_hub.constants.ENDPOINT)
    if unreachable:
        return f"{where}, and the hub cannot be reached ({unreachable}): {advice}"
    return None


def _hub_unreachable(endpoint: str, timeout: float = 3.0) -> str | None:
    """Why the hub's host cannot be reached (None: it can, or a proxy is set up, which only the download can try).
    Without it, timm retries for about a minute after the scan before failing."""
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout).close()
    except OSError as err:
        return f"{url.hostname}: {err.strerror or err}"
    return None


def check_config(cfg: Any) -> None:
    found = config_problems(cfg)
    refused = {p.split()[0].rstrip(":") for p in found}
    found += fact_problems(cfg, skip=refused)
    if found:
        raise ConfigError("invalid config: " + "; ".join(found))
