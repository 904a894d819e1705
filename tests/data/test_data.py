"""Data: the split manifest, class weights, the preprocessing contract and clear dataset errors."""

from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.utils.class_weight import compute_class_weight

from lit_garbage.data.datamodule import GarbageDataModule
from lit_garbage.data.images import load_rgb
from lit_garbage.data.manifest import (
    DatasetError,
    Manifest,
    build_manifest,
    load_or_build_manifest,
)
from lit_garbage.data.transforms import (
    Augment,
    eval_transform,
    train_transform,
)


def test_split_is_stratified_and_deterministic(synthetic_root):
    a = build_manifest(synthetic_root, seed=42)
    b = build_manifest(synthetic_root, seed=42)
    c = build_manifest(synthetic_root, seed=7)
    assert a == b
    assert a != c
    assert len(a.records) == 140
    for split, share in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        counts = a.counts(split)
        assert all(v >= 1 for v in counts.values()), (split, counts)
        assert max(counts.values()) - min(counts.values()) <= 1  # stratified: classes are balanced here
        assert abs(sum(counts.values()) / 140 - share) < 0.03
    assert a.class_names == ("battery", "biological", "cardboard", "clothes", "glass",
                             "metal", "paper", "plastic", "shoes", "trash")


def test_manifest_is_reused_from_disk(synthetic_root, tmp_path):
    path = tmp_path / "split.csv"
    first = load_or_build_manifest(synthetic_root, path, seed=42)
    assert path.is_file()
    # Edit the saved split: a reused manifest must return the file's content, not a new split.
    text = path.read_text().splitlines()
    row = text[1].split(",")
    row[2] = "test" if row[2] != "test" else "train"
    path.write_text("\n".join([text[0], ",".join(row), *text[2:]]) + "\n")
    again = load_or_build_manifest(synthetic_root, path, seed=999)
    assert again.records[0].split == row[2] != first.records[0].split
    assert again.records[1:] == first.records[1:]
    assert all(len(r.sha256) == 64 and r.bytes > 0 for r in again.records)


def test_class_weights_equal_sklearn_balanced(tmp_path):
    root = tmp_path / "imbalanced"
    for name, n in (("a", 40), ("b", 20), ("c", 10)):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(root / name / f"{i}.png")
    manifest = build_manifest(root, seed=0)
    train = [r.label for r in manifest.split("train")]
    counts = Counter(train)
    expected = compute_class_weight("balanced", classes=np.array(["a", "b", "c"]), y=np.array(train))
    assert np.allclose(manifest.class_weights(), expected)
    assert np.allclose(manifest.class_weights(), [len(train) / (3 * counts[c]) for c in "abc"])


@pytest.mark.parametrize("layout", ["missing", "empty", "one_class", "empty_class", "too_small"])
def test_bad_dataset_layout_gives_clear_error(tmp_path, layout):
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    if layout in ("one_class", "empty_class", "too_small"):
        for name in ("a", "b") if layout != "one_class" else ("a",):
            (root / name).mkdir()
            n = 2 if layout == "too_small" else (0 if layout == "empty_class" and name == "b" else 12)
            for i in range(n):
                Image.new("RGB", (8, 8)).save(root / name / f"{i}.png")
    expected = {
        "missing": "does not exist", "empty": "no class sub-folders", "one_class": "at least 2",
        "empty_class": "without images.*b", "too_small": "stratified",
    }[layout]
    with pytest.raises(DatasetError, match=expected):
        build_manifest(root)


def test_manifest_with_other_classes_than_root_is_refused(synthetic_root, tmp_path):
    path = tmp_path / "split.csv"
    load_or_build_manifest(synthetic_root, path)
    other = tmp_path / "other"
    shutil.copytree(synthetic_root, other)
    shutil.rmtree(other / "trash")
    with pytest.raises(DatasetError, match="lists classes"):
        load_or_build_manifest(other, path)


def test_load_rgb_applies_exif_orientation_and_composites_alpha(tmp_path):
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    im.save(tmp_path / "rot.jpg", exif=exif)
    assert load_rgb(tmp_path / "rot.jpg").size == (20, 40)
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert load_rgb(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "deep.png")
    assert load_rgb(tmp_path / "deep.png").getpixel((0, 0)) == (255, 255, 255)


def test_transforms_give_unit_range_tensors_of_the_configured_size(synthetic_root):
    image = load_rgb(next(synthetic_root.glob("*/*.jpg")))
    x = eval_transform(48)(image)
    assert x.shape == (3, 48, 48) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1
    torch.manual_seed(0)
    aug = train_transform(48, Augment())
    y = aug(image)
    assert y.shape == (3, 48, 48) and 0 <= y.min() and y.max() <= 1
    assert not torch.equal(y, x)
    assert torch.equal(train_transform(48, Augment(enabled=False))(image), x)


def test_augment_refuses_impossible_values():
    with pytest.raises(ValueError, match="data.augment.zoom"):
        Augment(zoom=1.5)
    with pytest.raises(ValueError, match="data.augment.brightness"):
        Augment(brightness=(1.2, 0.8))


def test_datamodule_batches_follow_the_manifest(synthetic_root, tmp_path):
    dm = GarbageDataModule(str(synthetic_root), manifest=str(tmp_path / "split.csv"), image_size=32,
                           batch_size=8, num_workers=0)
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (8, 3, 32, 32) and labels.dtype == torch.int64
    assert len(dm.dataset("train")) == len(dm.manifest.split("train"))
    assert Manifest.read(tmp_path / "split.csv") == dm.manifest
    assert len(dm.class_weights) == 10


def test_image_extensions_cover_torchvision_imagefolder():
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from lit_garbage.data.images import IMAGE_EXTENSIONS

    assert set(IMG_EXTENSIONS) <= set(IMAGE_EXTENSIONS) and {".gif", ".jfif"} <= set(IMAGE_EXTENSIONS)


@pytest.mark.parametrize("size", [64, 160, 224])
def test_numpy_model_input_equals_the_torchvision_transform_bit_for_bit(synthetic_root, real_smoke, size):
    """The torch-free contract (`model_input`, what LiteRT-only installs use) and training's `eval_transform`."""
    from lit_garbage.data.images import model_input

    files = sorted(synthetic_root.rglob("*.jpg"))[:5] + sorted(real_smoke.rglob("*.jpg"))[::10][:15]
    assert len(files) == 20
    tf = eval_transform(size)
    for f in files:
        image = load_rgb(f)
        x = model_input(image, size)
        assert x.dtype == np.float32 and x.shape == (3, size, size)
        assert np.array_equal(x, tf(image).numpy()), f


def test_workers_default_to_the_usable_cores(synthetic_root, monkeypatch):
    """data.num_workers null (the default, and the configs'): one worker per core this process may use, capped,
    so DataLoader never starts more workers than there are cores."""
    import os

    from lit_garbage.data.datamodule import MAX_AUTO_WORKERS
    from lit_garbage.training.config_checks import config_problems

    cores = len(os.sched_getaffinity(0))
    assert GarbageDataModule(str(synthetic_root)).num_workers == min(cores, MAX_AUTO_WORKERS)
    assert GarbageDataModule(str(synthetic_root), num_workers=0).num_workers == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert GarbageDataModule(str(synthetic_root), num_workers=None).num_workers == MAX_AUTO_WORKERS
    cfg = {"data": {"root": "d", "image_size": 64, "batch_size": 4, "num_workers": None}}
    assert not [p for p in config_problems(cfg) if "num_workers" in p]
