"""Augmentation of whole batches on the training device: the same pictures as the per-image CPU path."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch.nn import functional as F

from lit_garbage.data.batch_augment import BatchAugment, affine_theta
from lit_garbage.data.datamodule import GarbageDataModule
from lit_garbage.data.transforms import Augment, _affine
from lit_garbage.training.config_checks import config_problems
from lit_garbage.training.module import GarbageClassifier


def _smooth_images(n: int, size: int = 48) -> torch.Tensor:
    torch.manual_seed(0)
    coarse = torch.rand(n, 3, 6, 6) * 255
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False).round().to(torch.uint8)


@pytest.mark.parametrize("fill", ["nearest", "black"])
def test_batch_warp_equals_the_per_image_affine(fill):
    aug = Augment(fill=fill)
    batch_aug, per_image = BatchAugment(aug), _affine(48, aug)[0]
    images = _smooth_images(6)
    params = batch_aug.affine_params(images)
    assert len({p["angle"] for p in params}) == 6  # one draw per image
    warped = batch_aug.warp(images.float() / 255, affine_theta(params, (48, 48)))
    for i, p in enumerate(params):
        expected = per_image.transform(images[i], p).float() / 255  # the CPU path rounds to uint8 here
        assert (warped[i] - expected).abs().max() <= 0.5 / 255 + 1e-6, (fill, i)


def test_affine_draws_follow_torchvision_random_affine():
    torch.manual_seed(0)
    aug = Augment()
    ours = BatchAugment(aug).affine_params(torch.zeros(4000, 3, 40, 60, dtype=torch.uint8))
    reference = _affine(40, aug)[0]
    theirs = [reference.make_params([torch.zeros(3, 40, 60)]) for _ in range(4000)]

    def columns(params):
        return torch.tensor([[p["angle"], *p["translate"], p["scale"], *p["shear"]] for p in params]).T

    for name, a, b in zip(("angle", "tx", "ty", "scale", "shear x", "shear y"), columns(ours), columns(theirs)):
        assert a.min() >= b.min() - 0.05 * (b.max() - b.min() + 1) and a.max() <= b.max() + 0.05 * (b.max() - b.min() + 1)
        assert abs(a.mean() - b.mean()) < 0.1 * (b.std() + 1e-3) + 1e-6, name
        assert abs(a.std() - b.std()) < 0.05 * b.std() + 1e-6, name
    assert all(isinstance(t, int) for p in ours for t in p["translate"])  # whole pixels, as torchvision


def test_colour_steps_and_flip_follow_the_augment_settings():
    images = _smooth_images(64)
    flip_only = Augment(rotation=0, shift=0, shear=0, zoom=0, channel_shift=0, brightness=(1.0, 1.0))
    out = BatchAugment(flip_only)(images)
    plain, flipped = images.float() / 255, images.float().flip(-1) / 255
    same = [torch.equal(o, p) for o, p in zip(out, plain)]
    mirrored = [torch.equal(o, f) for o, f in zip(out, flipped)]
    assert all(a or b for a, b in zip(same, mirrored))
    assert 10 < sum(mirrored) < 54  # p = 0.5 per image

    dark = Augment(rotation=0, shift=0, shear=0, zoom=0, channel_shift=0, horizontal_flip=False, brightness=(0.5, 0.5))
    assert torch.allclose(BatchAugment(dark)(images), plain * 0.5)

    shift = Augment(rotation=0, shift=0, shear=0, zoom=0, horizontal_flip=False, brightness=(1.0, 1.0),
                    channel_shift=0.2)
    out = BatchAugment(shift)(images)
    lo, hi = plain.amin(dim=(1, 2, 3), keepdim=True), plain.amax(dim=(1, 2, 3), keepdim=True)
    assert ((out >= lo - 1e-6) & (out <= hi + 1e-6)).all()  # clipped to each image's own range (Keras)
    moved = (out - plain).flatten(1)
    assert moved.abs().max() <= 0.2 + 1e-6 and moved.mean(1).std() > 0.01  # a different shift per image


def test_full_seed_augmentation_on_a_batch():
    out = BatchAugment(Augment())(_smooth_images(8))
    assert out.dtype == torch.float32 and out.shape == (8, 3, 48, 48)
    assert 0 <= out.min() and out.max() <= 1
    with pytest.raises(TypeError, match="uint8"):
        BatchAugment(Augment())(out)


def test_options_that_need_the_cpu_are_refused(synthetic_root):
    with pytest.raises(ValueError, match="crop_scale"):
        GarbageDataModule(str(synthetic_root), augment=Augment(crop_scale=(0.5, 1.0)), augment_on="device")
    with pytest.raises(ValueError, match="augment_on"):
        GarbageDataModule(str(synthetic_root), augment_on="gpu")
    problems = config_problems({"data": {"root": "x", "augment_on": "gpu"}})
    assert any(p.startswith("data.augment_on") for p in problems)


@pytest.mark.parametrize("augment_on", ["device", "auto"])
def test_lightning_fit_augments_where_configured(synthetic_root, tmp_path, augment_on):
    dm = GarbageDataModule(str(synthetic_root), manifest=str(tmp_path / "split.csv"), image_size=32, batch_size=8,
                           num_workers=0, augment_on=augment_on)
    seen = []

    class Probe(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(batch[0].dtype)

    model = GarbageClassifier(dm.class_names, image_size=32, class_weights=dm.class_weights)
    trainer = pl.Trainer(accelerator="cpu", max_steps=2, limit_val_batches=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Probe()])
    trainer.fit(model, datamodule=dm)
    # The model always receives float [0, 1] images; only "device" moves the work out of the loader.
    assert seen == [torch.float32, torch.float32]
    assert (dm.batch_augment is not None) == (augment_on == "device")  # auto on a CPU: the workers augment
    raw = next(iter(dm.train_dataloader()))[0]
    assert raw.dtype == (torch.uint8 if augment_on == "device" else torch.float32)
