"""Reliability: exact and near duplicates are found, kept in one split (no leak), or dropped with --data.dedupe."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from lit_garbage.data.datamodule import GarbageDataModule
from lit_garbage.data.manifest import (
    build_manifest,
    duplicate_groups,
    load_or_build_manifest,
)


def _smooth(seed: int, size: int = 64) -> Image.Image:
    """A photo-like image: random low-frequency structure (a perceptual hash needs some)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), "RGB")
    return small.resize((size, size), Image.Resampling.BICUBIC)


# copy name -> (original, how it was made)
COPIES = {
    "a/copy_of_a0.png": ("a/a0.png", "exact"),
    "a/copy2_of_a0.png": ("a/a0.png", "exact"),
    "b/small_b1.png": ("b/b1.png", "resized"),
    "c/c2_q40.jpg": ("c/c2.png", "re-encoded"),
    "a/a3_small_q50.jpg": ("a/a3.png", "resized + re-encoded"),
    "c/b4_in_c.png": ("b/b4.png", "exact, other class"),
}


@pytest.fixture(scope="module")
def dup_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dups")
    for k, cls in enumerate("abc"):
        (root / cls).mkdir()
        for i in range(12):
            _smooth(100 * k + i).save(root / cls / f"{cls}{i}.png")
    for copy, (orig, how) in COPIES.items():
        im = Image.open(root / orig)
        if how.startswith("exact"):
            shutil.copyfile(root / orig, root / copy)
        elif how == "resized":
            im.resize((45, 45), Image.Resampling.LANCZOS).save(root / copy)
        elif how == "re-encoded":
            im.save(root / copy, quality=40)
        else:
            im.resize((50, 50), Image.Resampling.BILINEAR).save(root / copy, quality=50)
    return root


def _groups_of(manifest) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for d in manifest.duplicates:
        out.setdefault(d.group, set()).add(d.path)
    return out


def test_exact_and_near_duplicates_are_grouped(dup_root):
    manifest = build_manifest(dup_root)
    groups = sorted(_groups_of(manifest).values(), key=sorted)
    expected = {}
    for copy, (orig, _) in COPIES.items():
        expected.setdefault(orig, {orig}).add(copy)
    assert groups == sorted(expected.values(), key=sorted)
    kinds = {d.path: d.kind for d in manifest.duplicates}
    assert kinds["a/copy_of_a0.png"] == "exact" and kinds["b/small_b1.png"] == "near"
    # The 36 originals are all distinct: no false groups among them.
    assert sum(len(g) for g in groups) == 3 + 2 + 2 + 2 + 2


def test_default_split_keeps_each_group_in_one_split(dup_root, tmp_path, capsys):
    path = tmp_path / "split.csv"
    manifest = load_or_build_manifest(dup_root, path, verbose=True)
    split_of = {r.path: r.split for r in manifest.records}
    assert len(split_of) == 36 + len(COPIES)  # nothing dropped by default
    for group in _groups_of(manifest).values():
        assert len({split_of[p] for p in group}) == 1, group
    # Independent check: no test or val image has an exact or perceptual twin in train.
    train = [r for r in manifest.records if r.split == "train"]
    for r in manifest.records:
        if r.split != "train":
            for t in train:
                assert r.sha256 != t.sha256
                assert (int(r.phash, 16) ^ int(t.phash, 16)).bit_count() > 4, (r.path, t.path)
    # The report: duplicates.csv beside the manifest + a summary line.
    with (tmp_path / "duplicates.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["path"] for r in rows} == {p for g in _groups_of(manifest).values() for p in g}
    assert all(r["split"] in ("train", "val", "test") for r in rows)
    err = capsys.readouterr().err
    assert "5 duplicate groups (2 exact, 3 near) covering 11 images" in err
    assert "1 of them across classes" in err and "each group kept in one split" in err
    # The group id travels in the manifest itself.
    assert {r.group for r in manifest.records if r.path == "a/copy_of_a0.png"} == {
        r.group for r in manifest.records if r.path == "a/a0.png"} != {""}


def test_dedupe_keeps_one_image_per_group(dup_root, tmp_path, capsys):
    dm = GarbageDataModule(str(dup_root), manifest=str(tmp_path / "split.csv"), image_size=32,
                           num_workers=0, dedupe=True)
    manifest = dm.manifest
    paths = {r.path for r in manifest.records}
    assert len(paths) == 36  # every copy dropped, every original kept (the largest image of a group wins)
    assert all(orig in paths and copy not in paths for copy, (orig, _) in COPIES.items())
    dropped = {d.path for d in manifest.duplicates if d.split == "dropped"}
    assert dropped == set(COPIES)
    assert "dedupe dropped 6 copies" in capsys.readouterr().err


def test_near_duplicate_matching_can_be_turned_off(dup_root):
    manifest = build_manifest(dup_root, near_duplicate_distance=None)
    assert sorted(map(len, _groups_of(manifest).values())) == [2, 3]  # the exact copies only


def test_duplicate_search_scales_to_a_real_dataset():
    import time

    rng = np.random.default_rng(0)
    hashes = [f"{int(h):016x}" for h in rng.integers(0, 2**63, 20000, dtype=np.int64)]
    hashes[5] = hashes[19999]
    t = time.perf_counter()
    groups = duplicate_groups([str(i) for i in range(20000)], hashes, 4)
    assert [sorted(g) for g, _ in groups] == [[5, 19999]]
    assert time.perf_counter() - t < 30
