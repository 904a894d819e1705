"""The contract as torchvision transforms (`eval_transform`, the same numbers as `images.model_input`) and the
seed's augmentation.

Every consumer, training, evaluation, prediction on any backend and the export calibration, goes through
`images.load_rgb` and the contract's resize (`images.resize_rgb`: PIL, antialiased bilinear), so there is a
single definition of what a model input is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from lit_garbage.checks import (
    Rule,
    enforce,
    fraction,
    non_negative,
    one_of,
    optional,
    ordered_pair,
    probability,
)
from lit_garbage.data.images import resize_rgb


class ContractResize(v2.Transform):
    """The contract's resize (`images.resize_rgb`) of a PIL image; a tensor (the decoded-image cache already holds
    pixels at the model's size) passes through unchanged."""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size

    def transform(self, inpt, params):
        return resize_rgb(inpt, self.image_size) if isinstance(inpt, Image.Image) else inpt


def resize_uint8(image_size: int) -> v2.Compose:
    """PIL RGB image (or cached uint8 tensor) -> uint8 CHW tensor at image_size x image_size."""
    return v2.Compose([ContractResize(image_size), v2.ToImage()])


def eval_transform(image_size: int) -> v2.Compose:
    """PIL RGB image -> float32 CHW tensor in [0, 1] at image_size x image_size (= `images.model_input`)."""
    return v2.Compose([*resize_uint8(image_size).transforms, v2.ToDtype(torch.float32, scale=True)])


class RandomChannelShift(v2.Transform):
    """Keras `channel_shift_range`: add one uniform value in [-intensity, intensity] to every channel,
    then clip to the image's own range (Keras `apply_channel_shift`). Intensity is in [0, 1] units."""

    def __init__(self, intensity: float) -> None:
        super().__init__()
        self.intensity = intensity

    def make_params(self, flat_inputs):
        return {"shift": float(torch.empty(1).uniform_(-self.intensity, self.intensity))}

    def transform(self, inpt, params):
        if not isinstance(inpt, torch.Tensor) or not inpt.is_floating_point():
            return inpt
        return (inpt + params["shift"]).clamp(inpt.min(), inpt.max())


# torchvision v2 automatic augmentation policies, by config name.
AUTO_AUGMENT = {"trivialaugment": v2.TrivialAugmentWide, "randaugment": v2.RandAugment,
                "augmix": v2.AugMix, "autoaugment": v2.AutoAugment}


FILLS = ("nearest", "black")
AUGMENT_RULES = (
    *(Rule(f"data.augment.{key}", non_negative, "must be >= 0") for key in ("rotation", "shift", "shear", "channel_shift")),
    Rule("data.augment.zoom", fraction, "must be in [0, 1)"),
    Rule("data.augment.brightness", ordered_pair(0, math.inf), "must be (low, high) with 0 < low <= high"),
    Rule("data.augment.crop_scale", optional(ordered_pair(0, 1)), "must be (low, high) with 0 < low <= high <= 1, or null"),
    Rule("data.augment.auto", optional(one_of(*AUTO_AUGMENT)), f"must be one of {', '.join(AUTO_AUGMENT)} or null"),
    Rule("data.augment.fill", one_of(*FILLS), f"must be one of {', '.join(FILLS)}"),
    Rule("data.augment.erasing", probability, "must be a probability in [0, 1]"),
)


@dataclass
class Augment:
    """Train-time augmentation: the seed's ImageDataGenerator settings in torchvision terms, plus options.

    The seed fixes rotation (25 degrees), width/height shift (0.15) and horizontal flip; it names
    shear, zoom, channel shift and brightness without amounts, so these defaults are the common
    Keras-tutorial values: shear 10 degrees (Keras's shear_range is in degrees), zoom +-20 %,
    channel shift 20/255 (Keras's range is in 0-255 pixel units) and brightness 0.8-1.2.
    Set `enabled: false` for no augmentation.

    Beyond the seed (all off by default): `crop_scale` (low, high) takes a RandomResizedCrop of that
    area fraction instead of the plain resize; `auto` adds a torchvision policy (`trivialaugment`,
    `randaugment`, `augmix`, `autoaugment`) on the uint8 image; `erasing` is RandomErasing's probability.
    The affine step runs only when one of rotation / shift / shear / zoom is non-zero. `fill` is what
    it shows beyond the image's edges: `nearest` (the edge pixels repeated outwards, Keras
    ImageDataGenerator's default `fill_mode`, so the seed's) or `black` (torchvision's constant fill).
    """

    enabled: bool = True
    rotation: float = 25.0
    shift: float = 0.15
    shear: float = 10.0
    zoom: float = 0.2
    channel_shift: float = 20 / 255
    brightness: tuple[float, float] = (0.8, 1.2)
    horizontal_flip: bool = True
    crop_scale: tuple[float, float] | None = None
    auto: str | None = None
    erasing: float = 0.0
    fill: str = "nearest"

    def __post_init__(self) -> None:
        enforce(AUGMENT_RULES, **{rule.name: getattr(self, rule.name) for rule in AUGMENT_RULES})

    @property
    def affine(self) -> bool:
        return any((self.rotation, self.shift, self.shear, self.zoom))


# Keras's ImageDataGenerator warps with linear interpolation (`interpolation_order=1`); torchvision's
# RandomAffine defaults to nearest neighbour, which leaves jagged edges on every rotated training image.
BILINEAR = v2.InterpolationMode.BILINEAR


class RandomAffineEdgeFill(v2.RandomAffine):
    """`v2.RandomAffine` (same parameters, same random draws) whose outside repeats the nearest edge pixel,
    Keras ImageDataGenerator's default `fill_mode="nearest"`: the warp's sampling grid is clamped to the
    border (`grid_sample(padding_mode="border")`). torchvision fills only with a constant; padding the image
    with its edges first and cropping after gives the same picture at ~4x the cost.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, interpolation=BILINEAR, **kwargs)

    def transform(self, inpt, params):
        if not isinstance(inpt, torch.Tensor) or inpt.ndim != 3:
            return super().transform(inpt, params)
        from torchvision.transforms.v2.functional._geometry import (
            _affine_grid,
            _get_inverse_affine_matrix,
        )

        _, h, w = inpt.shape
        matrix = _get_inverse_affine_matrix([0.0, 0.0], params["angle"], [float(t) for t in params["translate"]],
                                            params["scale"], list(params["shear"]))
        theta = torch.tensor(matrix, dtype=torch.float32).reshape(1, 2, 3)
        grid = _affine_grid(theta, w=w, h=h, ow=w, oh=h)
        image = inpt.unsqueeze(0).float()
        out = torch.nn.functional.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if not inpt.is_floating_point():
            out = out.round_().clamp_(0, 255)
        out = out.squeeze(0).to(inpt.dtype)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


def _affine(image_size: int, aug: Augment) -> list:
    """The seed's random affine, filled beyond the edges with black (torchvision's constant) or Keras's nearest."""
    kind = RandomAffineEdgeFill if aug.fill == "nearest" else partial(v2.RandomAffine, interpolation=BILINEAR)
    return [kind(degrees=aug.rotation, translate=(aug.shift, aug.shift), scale=(1 - aug.zoom, 1 + aug.zoom),
                 shear=aug.shear)]


def train_transform(image_size: int, aug: Augment) -> v2.Compose:
    """Resize first (as Keras's flow_from_directory does), then augment at the target size."""
    if not aug.enabled:
        return eval_transform(image_size)
    if aug.crop_scale is not None:  # the crop cuts from the full-resolution image
        steps: list = [v2.ToImage(), v2.RandomResizedCrop((image_size, image_size), scale=tuple(aug.crop_scale),
                                                           antialias=True)]
    else:
        steps = [*resize_uint8(image_size).transforms]
    if aug.affine:
        steps += _affine(image_size, aug)
    if aug.auto is not None:
        steps.append(AUTO_AUGMENT[aug.auto]())
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if aug.channel_shift:
        steps.append(RandomChannelShift(aug.channel_shift))
    if aug.horizontal_flip:
        steps.append(v2.RandomHorizontalFlip())
    if tuple(aug.brightness) != (1.0, 1.0):
        steps.append(v2.ColorJitter(brightness=aug.brightness))
    if aug.erasing:
        steps.append(v2.RandomErasing(p=aug.erasing, value=0.5))
    return v2.Compose(steps)
