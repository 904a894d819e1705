"""The seed's train-time augmentation on whole batches, on the training device (`data.augment_on: device`).

On a GPU the per-image CPU transforms become the limit long before the network does: one 224-px affine
warp costs ~4 ms of a CPU core, so a few thousand images/s would need dozens of DataLoader workers. Here the
workers only hand over the cached uint8 pixels and the GPU warps the whole batch with one `grid_sample`.

Same augmentation as `lit_garbage.data.transforms.train_transform` (per image, the same distributions as
torchvision's `RandomAffine`; the same warp, fill, channel shift, flip and brightness), one difference: the CPU
path rounds the warped image back to uint8 before the colour steps, this one stays in float (<= 0.5/255).
Not available for the options that need the full-resolution image or a per-image policy (`crop_scale`,
`auto`, `erasing`): those stay on the CPU.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lit_garbage.data.transforms import Augment

# Options a batch on the device cannot do (they need the full-size file or a per-image policy).
CPU_ONLY_OPTIONS = ("crop_scale", "auto", "erasing")


def device_augment_blockers(aug: Augment) -> list[str]:
    """The options of `aug` that keep its augmentation on the CPU (empty: it can run on the device)."""
    return [name for name in CPU_ONLY_OPTIONS if getattr(aug, name)]


def affine_theta(params: list[dict], size: tuple[int, int]) -> torch.Tensor:
    """torchvision RandomAffine parameters -> (B, 2, 3) `F.affine_grid` matrices (normalised coordinates).

    torchvision's inverse matrix maps output pixels (centred on the image) to input pixels; affine_grid
    works in [-1, 1] coordinates (align_corners=False), i.e. pixel / (size / 2) for a same-size output.
    """
    from torchvision.transforms.v2.functional._geometry import (
        _get_inverse_affine_matrix,
    )

    h, w = size
    rows = [_get_inverse_affine_matrix([0.0, 0.0], p["angle"], [float(t) for t in p["translate"]], p["scale"],
                                       list(p["shear"])) for p in params]
    theta = torch.tensor(rows, dtype=torch.float32).view(-1, 2, 3)
    half = torch.tensor([w / 2, h / 2])
    theta[:, :, :2] *= half.view(1, 1, 2) / half.view(1, 2, 1)
    theta[:, :, 2] /= half
    return theta


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    # A copy from pageable memory makes the host wait for the GPU's queue; from pinned memory it does not.
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t.to(device)


class BatchAugment(nn.Module):
    """uint8 (B, 3, H, W) batch -> float32 [0, 1] batch, each image augmented with its own random draws.

    The draws come from the global CPU generator (seeded by `seed_everything`) in one go per batch, and
    reach the device in one pinned, non-blocking copy, so the host never waits for the GPU here.
    """

    def __init__(self, aug: Augment) -> None:
        super().__init__()
        blockers = device_augment_blockers(aug)
        if blockers:
            raise ValueError(f"data.augment_on: device cannot apply data.augment.{', '.join(blockers)} "
                             "(they need the full-size image or a per-image policy); use data.augment_on: cpu")
        self.aug = aug

    def affine_params(self, batch: torch.Tensor) -> list[dict]:
        """One draw per image from v2.RandomAffine's distributions (`make_params`, drawn for the whole batch):
        angle, x-shear uniform; translation in whole pixels up to `shift` x size; one scale for both axes."""
        a, (h, w) = self.aug, batch.shape[-2:]
        u = torch.rand(batch.shape[0], 5, dtype=torch.float64).mul_(2).sub_(1)  # uniform in [-1, 1)
        rows = torch.stack([u[:, 0] * a.rotation, (u[:, 1] * a.shift * w).round(), (u[:, 2] * a.shift * h).round(),
                            1 + u[:, 3] * a.zoom, u[:, 4] * a.shear], 1).tolist()
        return [{"angle": angle, "translate": (int(tx), int(ty)), "scale": scale, "shear": (shear, 0.0)}
                for angle, tx, ty, scale, shear in rows]

    def warp(self, images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Float images warped by their (B, 2, 3) `affine_theta` matrices, Keras- or black-filled."""
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        if self.aug.fill == "nearest":
            return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        # torchvision's constant fill warps a ones-mask along and blends with it (edge pixels fade to black).
        ones = images.new_ones(images.shape[0], 1, *images.shape[-2:])
        warped = F.grid_sample(torch.cat([images, ones], 1), grid, mode="bilinear", padding_mode="zeros",
                               align_corners=False)
        return warped[:, :-1] * warped[:, -1:]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"BatchAugment takes the uint8 batch from the loader, got {images.dtype}")
        aug = self.aug
        x = images.float().div_(255)
        if not aug.enabled:
            return x
        b = x.shape[0]
        # Per image: 6 affine coefficients, channel shift, flip (0/1), brightness factor.
        draws = torch.empty(b, 9)
        draws[:, :6] = affine_theta(self.affine_params(x), x.shape[-2:]).flatten(1) if aug.affine else 0
        draws[:, 6].uniform_(-aug.channel_shift, aug.channel_shift)
        draws[:, 7] = (torch.rand(b) < 0.5).float()
        draws[:, 8].uniform_(*aug.brightness)
        draws = _to(draws, x.device).view(b, 9, 1, 1)
        if aug.affine:
            x = self.warp(x, draws[:, :6].reshape(b, 2, 3))
        if aug.channel_shift:  # Keras apply_channel_shift: one value for all channels, clipped to the image's range
            lo = x.amin(dim=(1, 2, 3), keepdim=True)
            hi = x.amax(dim=(1, 2, 3), keepdim=True)
            x = torch.minimum(torch.maximum(x + draws[:, 6:7], lo), hi)
        if aug.horizontal_flip:
            x = torch.where(draws[:, 7:8] > 0.5, x.flip(-1), x)
        if tuple(aug.brightness) != (1.0, 1.0):  # ColorJitter(brightness): blend with black, clamp
            x = (x * draws[:, 8:9]).clamp_(0, 1)
        return x
