"""The decoded-image cache: same tensors as decoding every epoch, rebuilt when the manifest changes, reused otherwise."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from lit_garbage.data import image_cache
from lit_garbage.data.datamodule import GarbageDataModule
from lit_garbage.data.images import load_rgb
from lit_garbage.data.manifest import Manifest
from lit_garbage.data.transforms import Augment, eval_transform

SIZE = 40  # not the generated images' size: the cache really resizes


@pytest.fixture()
def root(synthetic_root, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(synthetic_root, copy)
    return copy


def _dm(root, manifest, cache="auto", workers=0, **kw):
    return GarbageDataModule(str(root), manifest=str(manifest), image_size=SIZE, batch_size=8, num_workers=workers,
                             cache=cache, **kw)


def _cache_files(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_cached_eval_tensors_equal_decoding_every_time(root, tmp_path):
    manifest = tmp_path / "run" / "split.csv"
    cached, plain = _dm(root, manifest), _dm(root, manifest, cache="none")
    a, b = cached.dataset("val"), plain.dataset("val")
    assert a.cache is not None and b.cache is None
    assert (manifest.parent / "image_cache").is_dir()  # auto: next to the manifest
    for i in range(len(a)):
        xa, ya = a[i]
        xb, yb = b[i]
        assert ya == yb and xa.dtype == xb.dtype == torch.float32 and xa.shape == (3, SIZE, SIZE)
        assert torch.equal(xa, xb), i  # bit-identical: the cache stores exactly ToImage + Resize
    # The same holds for a whole loader batch, and the resize of a same-size tensor is a no-op.
    xa, _ = next(iter(cached.val_dataloader()))
    xb, _ = next(iter(plain.val_dataloader()))
    assert torch.equal(xa, xb)
    img = image_cache.cached_pixels(load_rgb(root / a.records[0].path), SIZE)
    assert torch.equal(eval_transform(SIZE)(img), eval_transform(SIZE)(load_rgb(root / a.records[0].path)))


def test_cached_train_tensors_equal_for_the_same_random_state(root, tmp_path):
    manifest = tmp_path / "split.csv"
    a, b = _dm(root, manifest).dataset("train"), _dm(root, manifest, cache=None).dataset("train")
    for i in range(5):
        torch.manual_seed(i)
        xa, _ = a[i]
        torch.manual_seed(i)
        xb, _ = b[i]
        assert torch.equal(xa, xb), i


def test_cache_is_reused_without_decoding(root, tmp_path, monkeypatch):
    manifest = tmp_path / "split.csv"
    dm = _dm(root, manifest)
    dm.prepare_data()  # all three splits
    files = _cache_files(tmp_path / "image_cache")
    assert [p.name for p in files if p.suffix == ".npy"] == ["test.npy", "train.npy", "val.npy"]
    stamps = {p: p.stat().st_mtime_ns for p in files}

    def no_decoding(*a, **k):
        raise AssertionError("decoded an image although the cache is complete")

    monkeypatch.setattr(image_cache.ImageCache, "build", no_decoding)
    monkeypatch.setattr("lit_garbage.data.datamodule.load_rgb", no_decoding)
    again = _dm(root, manifest)
    batches = list(again.train_dataloader())
    assert sum(len(y) for _, y in batches) == len(again.manifest.split("train"))
    assert {p: p.stat().st_mtime_ns for p in _cache_files(tmp_path / "image_cache")} == stamps


def test_cache_is_rebuilt_when_the_manifest_or_size_changes(root, tmp_path):
    manifest = tmp_path / "split.csv"
    dm = _dm(root, manifest)
    first = dm.image_cache.dir
    dm.dataset("val")
    # Another split of the same images: another manifest content, another cache entry.
    m = Manifest.read(manifest)
    rows = manifest.read_text().splitlines()
    header, body = rows[0], rows[1:]
    cols = header.split(",")
    split_col = cols.index("split")
    val_row = next(i for i, r in enumerate(body) if r.split(",")[split_col] == "val")
    fields = body[val_row].split(",")
    fields[split_col] = "train"
    body[val_row] = ",".join(fields)
    manifest.write_text("\n".join([header, *body]) + "\n")
    changed = _dm(root, manifest)
    assert changed.manifest != m and changed.image_cache.dir != first
    ds = changed.dataset("val")
    assert len(ds) == len(m.split("val")) - 1 and ds.cache is not None and len(ds.cache) == len(ds)
    assert changed.image_cache.is_complete("val")
    other_size = GarbageDataModule(str(root), manifest=str(manifest), image_size=SIZE + 8, num_workers=0)
    assert other_size.image_cache.dir != changed.image_cache.dir
    x, _ = other_size.dataset("val")[0]
    assert x.shape == (3, SIZE + 8, SIZE + 8)


def test_a_file_changed_after_the_scan_is_neither_cached_nor_read(root, tmp_path):
    """The cache marks the file stale (size, mtime), and the data module does not read its new content either:
    split.csv no longer describes it (its label may be wrong). Another image of its class takes its place, and a
    warning names the file."""
    import warnings

    manifest = tmp_path / "split.csv"
    dm = _dm(root, manifest)
    dm.prepare_data()
    rec = dm.manifest.split("val")[0]
    Image.new("RGB", (50, 50), (255, 0, 0)).save(root / rec.path)  # replaced after the cache was built
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = _dm(root, manifest).dataset("val")
    assert any(rec.path in str(w.message) and "changed since the dataset scan" in str(w.message) for w in caught)
    assert not ds.cache.ok[0] and ds.cache.ok[1:].all()
    x, _ = ds[0]
    assert not (x[0].min() > 0.9 and x[1:].max() < 0.1), "the replaced file's new (red) pixels were used"
    other = next(j for j, r in enumerate(ds.records) if j > 0 and r.label == rec.label)
    torch.testing.assert_close(x, ds[other][0])


def test_interrupted_build_leaves_no_index(root, tmp_path, monkeypatch):
    manifest = tmp_path / "split.csv"
    dm = _dm(root, manifest)
    calls = {"n": 0}
    real = image_cache.cached_pixels

    def flaky(image, size):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(image, size)

    monkeypatch.setattr(image_cache, "cached_pixels", flaky)
    with pytest.raises(KeyboardInterrupt):
        dm.dataset("val")
    assert not dm.image_cache.is_complete("val")
    assert _cache_files(dm.image_cache.dir) == []  # no temporary left behind, no index
    monkeypatch.setattr(image_cache, "cached_pixels", real)
    assert len(_dm(root, manifest).dataset("val")) > 0


def test_cache_with_two_workers(root, tmp_path):
    manifest = tmp_path / "split.csv"
    dm = _dm(root, manifest, workers=2, augment=Augment(enabled=False))
    ds = dm.dataset("train")  # built with two decode workers
    assert ds.cache.ok.all()
    plain = _dm(root, manifest, cache="none", augment=Augment(enabled=False))
    got = torch.cat([x for x, _ in dm.val_dataloader()])
    want = torch.cat([x for x, _ in plain.val_dataloader()])
    assert torch.equal(got, want)
    n = sum(len(y) for _, y in dm.train_dataloader())
    assert n == len(dm.manifest.split("train"))
    arr = np.load(ds.cache.array_path, mmap_mode="r")
    assert arr.dtype == np.uint8 and arr.shape == (len(ds), 3, SIZE, SIZE)


def test_cache_values(tmp_path, root):
    manifest = tmp_path / "split.csv"
    assert _dm(root, manifest, cache="none").image_cache is None
    explicit = tmp_path / "shared-cache"
    dm = _dm(root, manifest, cache=str(explicit))
    dm.dataset("test")
    assert dm.image_cache.dir.parent == explicit and dm.image_cache.is_complete("test")
    no_manifest = GarbageDataModule(str(root), manifest=None, image_size=SIZE, num_workers=0)
    assert no_manifest.image_cache is None  # auto without a run directory: decode as before
    assert os.path.basename(str(dm.image_cache.dir)).startswith(f"images-{SIZE}px-")
    # A manifest kept inside the dataset root: the cache folder is hidden, so the next scan sees no extra class.
    inside = _dm(root, root / "split.csv")
    inside.dataset("val")
    assert inside.image_cache.dir.parent == root / ".image_cache"
    assert GarbageDataModule(str(root), manifest=None, num_workers=0).class_names == inside.class_names


def test_unwritable_cache_folder_falls_back_to_decoding(root, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    dm = _dm(root, tmp_path / "split.csv", cache=str(blocker))
    with pytest.warns(UserWarning, match="decoded-image cache"):
        ds = dm.dataset("val")
    assert ds.cache is None and ds[0][0].shape == (3, SIZE, SIZE)


def test_random_resized_crop_reads_the_full_image(root, tmp_path):
    if "crop_scale" not in Augment.__dataclass_fields__:
        pytest.skip("this Augment has no crop_scale")
    dm = _dm(root, tmp_path / "split.csv", augment=Augment(crop_scale=(0.5, 1.0)))
    assert dm.dataset("train").cache is None  # cropping cached (already resized) pixels would blur the crop
    assert dm.dataset("train", train=False).cache is not None and dm.dataset("val").cache is not None
