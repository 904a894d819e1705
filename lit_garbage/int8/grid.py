"""Weights on TFLite's int8 weight grid: fake quantisation for training, and the snap that ends it.

TFLite's full-integer quantisation stores every convolution / dense kernel per output channel, symmetric, in
[-127, 127], with scale = max|w_c| / 127 -- of the kernel *after* the BatchNorm that follows it has been folded
in (w_c * gamma_c / sqrt(var_c + eps)). Folding multiplies each output channel by one constant, so a kernel whose
raw channels lie on their own grid (w_c = k * max|w_c| / 127, k integer) still lies on the grid of its folded
channel: the converter's rounding is then exact, and int8 keeps the float model's weights unchanged.

`Int8WeightFakeQuant` (a `torch.nn.utils.parametrize` parametrization, straight-through gradients via
`torch.fake_quantize_per_channel_affine`) makes a network train with the weights it will have in int8;
`snap_to_int8_grid_` writes those weights for good. The activation ranges of the exported file stay the
converter's calibration (`lit_garbage.export.tensorflow.quantize_int8`); `add_activation_fake_quant` only lets
the network train with its activations rounded as int8 will round them (per tensor, affine, [-128, 127], each
range the min / max over calibration images, as the converter's `minmax` calibration picks it, then fixed), so
that it learns to keep its answers through that rounding.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.ao.quantization import FakeQuantize, MinMaxObserver
from torch.nn.utils import parametrize
from torch.utils.hooks import RemovableHandle
from torchvision.ops import FrozenBatchNorm2d

# TFLite's int8 weights: symmetric, the -128 code unused (so that -w is representable).
INT8_WEIGHT_MAX = 127
_TINY = 1e-12  # scale of an all-zero channel (its weights stay 0)


def grid_scale(weight: torch.Tensor) -> torch.Tensor:
    """Per output channel (dim 0) scale of the int8 grid: max|w_c| / 127, float32."""
    return (weight.detach().abs().flatten(1).amax(1).clamp_min(_TINY) / INT8_WEIGHT_MAX).float()


def fake_quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """`weight` rounded onto its per-channel int8 grid; gradients pass straight through."""
    scale = grid_scale(weight)
    zero = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -INT8_WEIGHT_MAX, INT8_WEIGHT_MAX)


def grid_error(weight: torch.Tensor) -> float:
    """Largest distance of a weight from its grid, in grid steps (0 = exactly representable in int8)."""
    w = weight.detach().double()
    steps = w / grid_scale(weight).double().view((-1,) + (1,) * (w.dim() - 1))
    return float((steps - steps.round()).abs().max())


class Int8WeightFakeQuant(nn.Module):
    """Parametrization: the module's weight as int8 will hold it."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return fake_quantize_weight(weight)


def quantized_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers whose weights TFLite stores as int8: every Conv2d and Linear."""
    return [(name, m) for name, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def add_weight_fake_quant(net: nn.Module) -> int:
    """Put `Int8WeightFakeQuant` on every quantised layer's weight; returns how many."""
    layers = quantized_layers(net)
    for _, m in layers:
        if not parametrize.is_parametrized(m, "weight"):
            parametrize.register_parametrization(m, "weight", Int8WeightFakeQuant())
    return len(layers)


def remove_weight_fake_quant(net: nn.Module) -> int:
    """Take the parametrizations off, keeping the fake-quantised (= snapped) weights; returns how many."""
    n = 0
    for _, m in quantized_layers(net):
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
            n += 1
    return n


@torch.no_grad()
def snap_to_int8_grid_(net: nn.Module) -> int:
    """Round every quantised layer's weight onto its int8 grid, in place; returns how many tensors."""
    remove_weight_fake_quant(net)
    layers = quantized_layers(net)
    for _, m in layers:
        m.weight.copy_(fake_quantize_weight(m.weight))
    return len(layers)


def max_grid_error(net: nn.Module) -> float:
    """The largest `grid_error` over the network's quantised layers."""
    return max((grid_error(m.weight) for _, m in quantized_layers(net)), default=0.0)


# ---------------------------------------------------------------- activations


_FUSES_CONV = (nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.ReLU6)


def activation_points(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules whose outputs TFLite stores as int8 tensors, in registration order (timm's and the head's
    are in execution order): BatchNorms (timm's fold the activation in), activations, convolutions, dense
    layers, pooling and residual blocks (their output is the ADD's). A convolution whose next point is a
    BatchNorm or an activation is left out: the converter fuses it with that op, whose output is the tensor."""
    modules = dict(net.named_modules())
    points = [(n, m) for n, m in modules.items()
              if (isinstance(m, (*_FUSES_CONV, FrozenBatchNorm2d, nn.Conv2d, nn.Linear, nn.AdaptiveAvgPool2d))
                  or getattr(m, "has_skip", False))
              # timm's BatchNormAct2d applies its activation inside: its output is the BatchNorm's
              and not isinstance(modules.get(n.rpartition(".")[0]), nn.modules.batchnorm._BatchNorm)]
    return [(n, m) for i, (n, m) in enumerate(points)
            if not (isinstance(m, nn.Conv2d) and i + 1 < len(points) and isinstance(points[i + 1][1], _FUSES_CONV))]


def add_activation_fake_quant(net: nn.Module, calibration: Iterable[torch.Tensor]) -> list[RemovableHandle]:
    """Forward hooks rounding every `activation_points` output to int8 (per tensor, affine, straight-through
    gradients). Each range is the min / max of that tensor over the `calibration` batches (inference mode, no
    gradients), as the converter's calibration picks it, and stays fixed afterwards. The observers live on
    the hooks, not in the network's state dict; remove the returned handles to take them off."""
    handles, quantizers = [], []
    for _, m in activation_points(net):
        fq = FakeQuantize(observer=MinMaxObserver, quant_min=-128, quant_max=127, dtype=torch.qint8,
                          qscheme=torch.per_tensor_affine)
        fq.disable_fake_quant()
        quantizers.append(fq)

        def hook(mod, args, out, fq=fq):
            if not isinstance(out, torch.Tensor) or not out.is_floating_point():
                return out
            return fq.to(out.device)(out)

        handles.append(m.register_forward_hook(hook))
    training = net.training
    net.eval()
    with torch.no_grad():
        for images in calibration:
            net(images)
    net.train(training)
    for fq in quantizers:
        fq.disable_observer()
        fq.enable_fake_quant()
    return handles
