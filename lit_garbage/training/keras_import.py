"""Keras -> this project: a Keras MobileNetV2 (with or without the seed's head) as a `GarbageClassifier`.

Reading the Keras file and mapping its weights onto timm's modules is `lit_garbage.models.keras_backbone`
(supported files, weight layouts); this module builds the LightningModule around them, records where
they came from, compares Keras and torch on images and writes the checkpoint.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lit_garbage.data.images import DEFAULT_IMAGE_SIZE
from lit_garbage.files import replaced_atomically
from lit_garbage.models.keras_backbone import (
    KerasMobileNetV2,
    _flat_layers,
    load_state_exactly,
    read_keras_mobilenetv2,
)

# Input range the Keras model was fed, expressed as mean/std applied to this project's [0, 1] input.
INPUT_RANGES = {
    # the seed notebook feeds [0, 1] pixels straight into MobileNetV2 (../shared/SPEC.md)
    "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    # `keras.applications.mobilenet_v2.preprocess_input`: [-1, 1], what ImageNet weights expect
    "symmetric": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def import_keras(path: str | Path, class_names: Sequence[str] | None = None, image_size: int | None = None,
                 input_range: str = "auto", keras_model=None, **hparams: Any):
    """A `GarbageClassifier` holding every weight of the Keras model in `path` (see the module docstring).

    `input_range`: what the Keras model was fed, "unit" ([0, 1], the seed notebook), "symmetric"
    ([-1, 1], `mobilenet_v2.preprocess_input` / ImageNet weights) or "auto" (unit with the seed's head,
    symmetric without). Returns (module, KerasMobileNetV2 report).
    """
    from lit_garbage.training.module import GarbageClassifier

    found = read_keras_mobilenetv2(path, keras_model)
    if input_range == "auto":
        input_range = "unit" if found.has_seed_head else "symmetric"
    if input_range not in INPUT_RANGES:
        raise ValueError(f"input_range must be one of auto, {', '.join(INPUT_RANGES)}; got {input_range!r}")
    mean, std = INPUT_RANGES[input_range]
    if class_names is None:
        n = found.num_classes or 10
        class_names = [f"class_{i}" for i in range(n)]
        warnings.warn(f"no class names given: using {class_names[0]} .. {class_names[-1]}; pass class names "
                      "(in the order of the Keras model's outputs) to name them", stacklevel=2)
    class_names = list(class_names)
    if found.num_classes is not None and len(class_names) != found.num_classes:
        raise ValueError(f"{len(class_names)} class names for a Keras head with {found.num_classes} outputs")
    size = image_size or found.input_size or DEFAULT_IMAGE_SIZE
    kwargs = dict(hparams)
    if found.dropout is not None:
        kwargs.setdefault("dropout", found.dropout)
    module = GarbageClassifier(class_names=class_names, image_size=size, keras_compat=True, mean=list(mean),
                               std=list(std), **kwargs)
    load_state_exactly(module.net.backbone, found.backbone, "backbone")
    if found.head is not None:
        load_state_exactly(module.net.head, found.head, "head")
    # Provenance travels in the checkpoint (not in the hyper-parameters, which are __init__ arguments).
    module.keras_source = {"file": str(Path(path).resolve()), "model": found.model_name,
                                   "input_range": input_range, "head_imported": found.has_seed_head,
                                   "head_layers": found.head_layers}
    return module.eval(), found


def save_checkpoint(module, path: str | Path) -> Path:
    """A Lightning checkpoint (weights + hyper-parameters) that `GarbageClassifier.load_from_checkpoint` reads."""
    import lightning

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": lightning.__version__,
        "epoch": 0,
        "global_step": 0,
    }
    if getattr(module, "keras_source", None):
        ckpt["keras_source"] = module.keras_source
    with replaced_atomically(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def compare_with_keras(keras_model, module, found: KerasMobileNetV2, images: torch.Tensor) -> dict[str, float]:
    """Max abs differences between Keras and the imported torch model on `images` ([0, 1] NCHW).

    Keras gets the images in the range it was fed (`module`'s mean/std applied, NHWC). Compares the
    backbone's last feature map and, with the seed head, the model's softmax output.
    """
    import keras

    names = [layer.name for layer in _flat_layers(keras_model)]
    feature_layer = "out_relu" if "out_relu" in names else "Conv_1_bn"
    net = module.net.eval()
    with torch.no_grad():
        keras_in = ((images - net.mean) / net.std).permute(0, 2, 3, 1).numpy()
        feats = net.backbone.forward_features((images - net.mean) / net.std)
        probs = net.probabilities(images)
    backbone_model = _find_backbone_model(keras_model, feature_layer)
    ref_feats = np.asarray(keras.Model(backbone_model.inputs, backbone_model.get_layer(feature_layer).output).predict(
        keras_in, verbose=0))
    if feature_layer == "Conv_1_bn":  # no ReLU6 layer in the file: apply timm's
        ref_feats = np.clip(ref_feats, 0, 6)
    out = {"features_max_abs_diff": float(np.abs(feats.permute(0, 2, 3, 1).numpy() - ref_feats).max())}
    if found.has_seed_head:
        ref = np.asarray(keras_model.predict(keras_in, verbose=0))
        if keras_model.layers[-1].get_config().get("activation") == "linear":
            ref = torch.from_numpy(ref).softmax(1).numpy()
        out["probabilities_max_abs_diff"] = float(np.abs(probs.numpy() - ref).max())
    return out


def _find_backbone_model(model, layer_name: str):
    """The (sub-)model that directly holds `layer_name`."""
    if any(layer.name == layer_name for layer in model.layers):
        return model
    for layer in model.layers:
        if hasattr(layer, "layers"):
            try:
                return _find_backbone_model(layer, layer_name)
            except KeyError:
                pass
    raise KeyError(layer_name)
