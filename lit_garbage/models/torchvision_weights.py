"""torchvision's ImageNet MobileNetV2 weights (`mobilenet_v2-b0353104.pth`) in timm's `mobilenetv2_100`.

torchvision and timm build the same network and define its layers in the same order, so the tensors map one
to one by position (classifier and BatchNorm step counters left out); each pair's shape is checked. The file
is looked up where torch keeps downloaded weights (`torch.hub.get_dir()/checkpoints`), or given by path.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lit_garbage.safe_loading import read_state_dict

IMAGENET_FILE = "mobilenet_v2-b0353104.pth"
ARCHITECTURE = "mobilenetv2_100"


def find_imagenet_weights(path: str | Path | None = None) -> Path | None:
    """The weights file: `path` when given (it must exist), else the one in torch's hub cache, else None."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ImageNet weights file not found: {path}")
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE
    return cached if cached.is_file() else None


def _tensors(state: dict) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in state.items() if not k.startswith("classifier") and not k.endswith("num_batches_tracked")]


def load_imagenet_backbone(path: str | Path) -> nn.Module:
    """A timm `mobilenetv2_100` without classifier or pooling, holding torchvision's ImageNet weights."""
    import timm

    model = timm.create_model(ARCHITECTURE, pretrained=False, num_classes=0, global_pool="")
    source, target = _tensors(read_state_dict(path)), _tensors(model.state_dict())
    if len(source) != len(target) or any(a.shape != b.shape for (_, a), (_, b) in zip(source, target)):
        raise ValueError(f"{path} does not hold torchvision mobilenet_v2 weights ({len(source)} tensors; "
                         f"timm {ARCHITECTURE} has {len(target)})")
    model.load_state_dict({name: tensor for (name, _), (_, tensor) in zip(target, source)}, strict=False)
    return model.eval()
