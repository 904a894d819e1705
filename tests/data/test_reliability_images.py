"""Reliability: bad image files are sorted once by the scan; readable oddities decode correctly."""

from __future__ import annotations

import csv
import io
import os

import numpy as np
import pytest
from PIL import Image

from lit_garbage.data.datamodule import (
    GarbageDataModule,
    ManifestDataset,
    UnreadableImagesError,
)
from lit_garbage.data.images import MAX_DECODE_SIDE, load_rgb
from lit_garbage.data.manifest import (
    DatasetError,
    Manifest,
    build_manifest,
    load_or_build_manifest,
)
from lit_garbage.data.transforms import eval_transform


def _noise(seed: int, size=(32, 32), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB").convert(mode)


def _jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    return buf.getvalue()


# name -> expected skip reason (a regex fragment), or None when the file must be read.
BAD = {
    "a/truncated.jpg": "truncated",
    "a/empty.jpg": "empty file",
    "a/text.jpg": "not an image",
    "a/notes.txt": "not an image file type",
    "a/tiny.png": "too small",
    "a/broken.png": "corrupt|truncated",
    "a/dangling.jpg": "cannot read file",
    "loose.jpg": "not inside a class folder",
}
GOOD = ("b/cmyk.jpg", "b/gray.jpg", "b/rgba.png", "b/deep16.png", "b/palette.gif", "b/alpha.webp",
        "b/huge.jpg", "b/rotated.jpg", "b/la.png")


@pytest.fixture(scope="module")
def messy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy")
    for cls in "ab":
        (root / cls).mkdir()
        for i in range(8):  # enough plain images per class for a stratified split
            _noise(100 * ord(cls) + i).save(root / cls / f"ok{i}.jpg", quality=90)
    good = _jpeg_bytes(_noise(1, (64, 64)))
    (root / "a/truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "a/empty.jpg").write_bytes(b"")
    (root / "a/text.jpg").write_text("this is not a picture\n")
    (root / "a/notes.txt").write_text("labelling notes\n")
    (root / "a/.DS_Store").write_bytes(b"\0\0\0\1Bud1")  # OS litter: ignored silently
    Image.new("RGB", (1, 1), (9, 9, 9)).save(root / "a/tiny.png")
    png = io.BytesIO()
    _noise(2, (64, 64)).save(png, "PNG")
    data = bytearray(png.getvalue())
    data[len(data) // 2: len(data) // 2 + 64] = b"\xff" * 64  # damage the compressed pixel data
    (root / "a/broken.png").write_bytes(bytes(data))
    os.symlink(root / "a/gone.jpg", root / "a/dangling.jpg")
    _noise(3).save(root / "loose.jpg")
    # Readable oddities, each with content (noise) so that none is a near duplicate of another.
    Image.fromarray(np.dstack([np.zeros((32, 32), np.uint8), np.full((32, 32), 255, np.uint8),
                               np.full((32, 32), 255, np.uint8), np.zeros((32, 32), np.uint8)]),
                    "CMYK").save(root / "b/cmyk.jpg")  # C=0 M=Y=255 K=0: red
    _noise(4, mode="L").save(root / "b/gray.jpg")
    rgba = _noise(5).convert("RGBA")
    rgba.putalpha(Image.new("L", (32, 32), 0))  # fully transparent: must come out white
    rgba.save(root / "b/rgba.png")
    Image.fromarray(np.full((32, 32), 32896, np.uint16)).save(root / "b/deep16.png")  # 32896 = 128 * 257
    pal = _noise(6).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(root / "b/palette.gif", transparency=0)
    rgba2 = _noise(7).convert("RGBA")
    rgba2.save(root / "b/alpha.webp", lossless=True)
    Image.fromarray(np.random.default_rng(8).integers(0, 256, (60, 80, 3), dtype=np.uint8)).resize(
        (8000, 6000), Image.Resampling.NEAREST).save(root / "b/huge.jpg", quality=70)
    left_red = Image.new("RGB", (40, 20), (255, 0, 0))
    left_red.paste((0, 0, 255), (20, 0, 40, 20))  # left half red, right half blue
    exif = left_red.getexif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    left_red.save(root / "b/rotated.jpg", exif=exif, quality=95)
    _noise(9, mode="LA").save(root / "b/la.png")
    return root


@pytest.fixture(scope="module")
def messy_manifest(messy_root, tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "split.csv"
    return path, load_or_build_manifest(messy_root, path, verbose=True)


def test_scan_sorts_bad_files_into_skipped_csv(messy_manifest, messy_root, capsys):
    path, manifest = messy_manifest
    with (path.parent / "skipped.csv").open(newline="") as f:
        skipped = {r["path"]: r["reason"] for r in csv.DictReader(f)}
    assert set(skipped) == set(BAD), skipped
    for name, pattern in BAD.items():
        assert any(p in skipped[name] for p in pattern.split("|")), (name, skipped[name])
    kept = {r.path for r in manifest.records}
    assert kept == {f"{c}/ok{i}.jpg" for c in "ab" for i in range(8)} | set(GOOD)
    assert not any(BAD.keys() & kept) and ".DS_Store" not in str(kept)
    assert {r.split for r in manifest.records} == {"train", "val", "test"}
    # The scan ran once: the manifest on disk is reused without decoding anything again.
    assert Manifest.read(path) == manifest
    assert load_or_build_manifest(messy_root, path) == manifest


def test_scan_prints_a_summary_line(messy_root, capsys):
    build_manifest(messy_root, verbose=True)
    err = capsys.readouterr().err
    assert f"{len(BAD)} skipped (see skipped.csv)" in err and f"{16 + len(GOOD)} images in 2 classes" in err


def test_readable_oddities_convert_correctly(messy_root):
    px = {name: load_rgb(messy_root / name) for name in GOOD}
    assert all(im.mode == "RGB" for im in px.values())
    r, g, b = px["b/cmyk.jpg"].getpixel((16, 16))
    assert r > 200 and g < 60 and b < 60, (r, g, b)  # CMYK red stays red
    gray = np.asarray(px["b/gray.jpg"])
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert px["b/rgba.png"].getpixel((3, 3)) == (255, 255, 255)  # transparent -> white
    assert px["b/deep16.png"].getpixel((0, 0)) == (128, 128, 128)  # 16 bit scaled by 1/257, not clipped
    assert px["b/palette.gif"].size == (32, 32)
    assert px["b/alpha.webp"].size == (32, 32)
    huge = px["b/huge.jpg"]  # decoded at a reduced scale: aspect kept, no 48-megapixel buffer
    assert huge.size == (4000, 3000) and max(huge.size) >= MAX_DECODE_SIDE
    rot = px["b/rotated.jpg"]
    assert rot.size == (20, 40)  # EXIF orientation applied
    assert rot.getpixel((10, 5))[0] > 200 and rot.getpixel((10, 35))[2] > 200  # red on top after rotating
    assert len(set(np.asarray(px["b/la.png"])[..., 0].ravel().tolist())) > 1
    # A 1x1 image is skipped by the scan as useless, but load_rgb itself still reads it.
    one = Image.new("RGB", (1, 1), (10, 20, 30))
    assert eval_transform(32)(one).shape == (3, 32, 32)


def test_decompression_bomb_is_skipped_not_fatal(tmp_path, monkeypatch):
    for cls in "ab":
        (tmp_path / cls).mkdir()
        for i in range(8):
            _noise(10 * ord(cls) + i).save(tmp_path / cls / f"{i}.png")
    _noise(1, (128, 128)).save(tmp_path / "a" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)  # 128x128 > 2x the limit: PIL refuses it
    manifest = build_manifest(tmp_path)
    reasons = {s.path: s.reason for s in manifest.skipped}
    assert "too large" in reasons["a/bomb.png"]
    assert len(manifest.records) == 16


def test_class_with_only_unreadable_files_is_refused(tmp_path):
    for cls in "ab":
        (tmp_path / cls).mkdir()
    for i in range(8):
        _noise(i).save(tmp_path / "a" / f"{i}.jpg")
        (tmp_path / "b" / f"{i}.jpg").write_text("not an image")
    with pytest.raises(DatasetError, match="no readable image.*b"):
        build_manifest(tmp_path)


def test_file_broken_after_scan_does_not_crash_an_epoch(messy_root, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(messy_root, root, symlinks=True)
    dm = GarbageDataModule(str(root), manifest=str(tmp_path / "split.csv"), image_size=32, batch_size=4,
                           num_workers=0)
    train = dm.manifest.split("train")
    (root / train[0].path).write_bytes(b"overwritten")  # broken after the scan...
    (root / train[1].path).unlink()  # ...or gone
    ds = dm.dataset("train")
    with pytest.warns(UserWarning, match="cannot read"):
        batches = list(dm.train_dataloader())
    assert sum(len(y) for _, y in batches) == len(train)  # every step still gets a full batch
    assert set(ds.class_to_idx) == {"a", "b"}
    # Worker processes: the same substitution, nothing crashes.
    dm.num_workers = 1
    assert sum(len(y) for _, y in dm.val_dataloader()) == len(dm.manifest.split("val"))
    # Too many unreadable files: a clear error instead of training on a different dataset.
    ds = ManifestDataset(root, train, dm.class_names, eval_transform(32), max_unreadable=1)
    with pytest.warns(UserWarning), pytest.raises(UnreadableImagesError, match="changed after the scan"):
        [ds[i] for i in range(len(ds))]
