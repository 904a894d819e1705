"""A `GarbageClassifier` from the files that carry one: a Lightning checkpoint, or an export's `model.safetensors`.

Both are read as data only: the checkpoint with `lit_garbage.safe_loading.load_torch_file` (`weights_only=True`,
a file holding Python objects is refused naming them), the safetensors file with the `safetensors` library
(tensors and a JSON header, nothing to run). The network is built from the recorded hyper-parameters with
`weights=None, pretrained=False`: the stored weights replace the initial ones anyway, so building the model
never opens another file (a Keras file a forged `weights` names) or the network (timm's pretrained weights).

`model.safetensors` (written by `save_safetensors`, one per export) holds the float weights of `GarbageNet`
under `net.*`, as in a checkpoint's state_dict, and in its header the hyper-parameters that rebuild the model
plus the export's facts: the way to share a model without a pickle. It is also a `--model.weights` file (the
`net.backbone.` prefix is understood there).
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any, Mapping

from lit_garbage.files import file_mode

HPARAMS_KEY = "hyper_parameters"  # safetensors header key: the GarbageClassifier's hyper-parameters, as JSON
FACTS_KEY = "lit_garbage"          # safetensors header key: the export's facts (`artifacts.embedded_facts`)
# What only says where the initial weights came from: never followed when a model is rebuilt from its weights.
_NOT_REBUILT = {"weights": None, "pretrained": False}


class CheckpointError(ValueError):
    """The file does not hold a GarbageClassifier this project can rebuild; the message says why."""


def _init_args(hparams: Mapping[str, Any]) -> dict[str, Any]:
    from lit_garbage.training.module import GarbageClassifier

    names = set(inspect.signature(GarbageClassifier.__init__).parameters) - {"self"}
    return {**{k: v for k, v in hparams.items() if k in names}, **_NOT_REBUILT}


def classifier_from_checkpoint(ckpt: Mapping[str, Any], path: str | Path = "checkpoint"):
    """A GarbageClassifier (eval mode) from an already loaded Lightning checkpoint dict: its hyper-parameters
    (Lightning's `_instantiator` / `_class_path` entries ignored) and its state_dict, strictly."""
    from lit_garbage.training.module import GarbageClassifier

    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, Mapping) else None
    if not isinstance(hparams, Mapping) or "class_names" not in hparams or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is a PyTorch file but not a lit_garbage GarbageClassifier checkpoint "
                              "(no 'state_dict' / 'hyper_parameters.class_names'); pass the model.ckpt of a "
                              "`lit-garbage fit` run")
    module = GarbageClassifier(**_init_args(hparams))
    module.on_load_checkpoint(dict(ckpt))  # as Lightning's load_from_checkpoint does
    module.load_state_dict(ckpt["state_dict"], strict=True)
    return module.eval()


def save_safetensors(module, path: str | Path, facts: Mapping[str, Any] | None = None) -> Path:
    """Write `module.net`'s weights (`net.*` keys, contiguous CPU tensors) and, in the header, the
    hyper-parameters that rebuild it (plus `facts`, the export's embedded facts)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items() if k.startswith("net.")}
    hparams = {k: v for k, v in dict(module.hparams).items() if not k.startswith("_")}
    header = {HPARAMS_KEY: json.dumps(hparams, default=_jsonable)}
    if facts is not None:
        header[FACTS_KEY] = json.dumps(facts, default=_jsonable)
    save_file(tensors, str(path), metadata=header)
    os.chmod(path, file_mode())  # safetensors writes 0600; the file to share is readable like the others
    return path


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def read_safetensors_header(path: str | Path) -> dict[str, Any]:
    """The JSON entries of a safetensors file's header (hyper-parameters, facts), decoded; {} if it has none."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as err:  # noqa: BLE001 - SafetensorError, OSError
        raise CheckpointError(f"{path} is not a readable safetensors file: {type(err).__name__}: {err}") from None
    out = {}
    for key, value in header.items():
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            out[key] = value
    return out


def classifier_from_safetensors(path: str | Path):
    """(GarbageClassifier in eval mode, the facts in the header or {}) from an export's model.safetensors."""
    from safetensors.torch import load_file

    from lit_garbage.training.module import GarbageClassifier

    path = Path(path)
    header = read_safetensors_header(path)
    hparams = header.get(HPARAMS_KEY)
    if not isinstance(hparams, Mapping) or "class_names" not in hparams:
        raise CheckpointError(f"{path} holds weights but not the hyper-parameters that rebuild a GarbageClassifier "
                              f"(no '{HPARAMS_KEY}' in its header; it is not an export's model.safetensors): use it "
                              "as --model.weights to start a run from it")
    state = load_file(str(path), device="cpu")
    module = GarbageClassifier(**_init_args(hparams))
    net_state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    try:
        module.net.load_state_dict(net_state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not match the GarbageClassifier its header describes: "
                              f"{str(err)[:300]}") from None
    facts = header.get(FACTS_KEY)
    return module.eval(), facts if isinstance(facts, dict) else {}
