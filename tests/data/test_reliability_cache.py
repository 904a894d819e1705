"""Reliability: a damaged decoded-image cache is detected (header, size, shape, a checksum per row) and rebuilt with
a message naming the file, never used: not a crash deep in numpy, not wrong pixels.

The cache of `tiny_run` lives in RUN/image_cache/images-64px-<key>/{train,val,test}.{npy,json}.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from tests.conftest import fit_args
from tests.reliability_support import call_main


def _npy(run, split="train"):
    return next((run / "image_cache").glob(f"*/{split}.npy"))


def _truth(dm, split, i):
    from lit_garbage.data.image_cache import cached_pixels
    from lit_garbage.data.images import load_rgb

    return cached_pixels(load_rgb(dm.root / dm.manifest.split(split)[i].path), dm.image_size)


def _datamodule(run, root):
    from lit_garbage.data.datamodule import GarbageDataModule

    return GarbageDataModule(str(root), manifest=str(run / "split.csv"), image_size=64, num_workers=0)


def _read_all(dm, split):
    """Every cached image of the split as the dataset serves it, plus what was said while reading."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cached = dm.cached_split(split)
        images = [cached.get(i) for i in range(len(cached))]
    return images, " ".join(str(w.message) for w in caught)


def test_resume_with_a_truncated_cache_rebuilds_it(run_copy, synthetic_root, capsys):
    from lit_garbage.training.cli import main

    npy = _npy(run_copy)
    with open(npy, "r+b") as f:
        f.truncate(npy.stat().st_size // 2)
    (run_copy / "model.ckpt").unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = call_main(main, fit_args(synthetic_root, run_copy, "--trainer.max_epochs", "2", "--resume", "true"))
    out = capsys.readouterr()
    assert outcome[0] == "returned", f"--resume with a truncated {npy.name}: {outcome[0]} {outcome[1]!r}"
    said = out.out + out.err + " ".join(str(w.message) for w in caught)
    assert npy.name in said and "cache" in said.lower(), "the damaged cache was replaced without a word"
    assert np.load(npy, mmap_mode="r").shape[0] == len([r for r in _datamodule(run_copy, synthetic_root).manifest.records
                                                         if r.split == "train"])


@pytest.mark.parametrize("damage", ["overwritten, same size", "another shape", "object dtype", "not a .npy file"])
def test_a_damaged_cache_is_rebuilt_with_a_message(damage, run_copy, synthetic_root):
    npy = _npy(run_copy)
    n = np.load(npy, mmap_mode="r").shape[0]
    if damage == "overwritten, same size":  # a disk fault, another tool, a copy gone wrong
        arr = np.load(npy, mmap_mode="r+")
        arr[:] = 255 - arr
        arr.flush()
        del arr
    elif damage == "another shape":  # e.g. a cache of another image size copied over this one
        np.save(npy, np.zeros((n, 3, 32, 32), np.uint8))
    elif damage == "object dtype":  # not pixels at all (np.load refuses pickles: this must be a rebuild, not a crash)
        np.save(npy, np.array([{"x": 1}] * n, dtype=object), allow_pickle=True)
    else:
        npy.write_bytes(b"\0" * npy.stat().st_size)
    dm = _datamodule(run_copy, synthetic_root)
    try:
        images, said = _read_all(dm, "train")
    except Exception as err:  # noqa: BLE001
        pytest.fail(f"{damage}: reading the cache raised {type(err).__name__}: {err}")
    wrong = [i for i, im in enumerate(images) if im is not None and not torch.equal(im, _truth(dm, "train", i))]
    assert not wrong, f"{damage}: {len(wrong)} of {len(images)} cached images are not the files' pixels"
    assert "cache" in said.lower() and npy.name in said, f"{damage}: rebuilt without a message ({said!r})"
    # the next open serves the files' own pixels from a sound cache, silently
    images, said = _read_all(_datamodule(run_copy, synthetic_root), "train")
    assert not said and all(im is not None for im in images), said


def test_a_cache_of_an_older_version_without_checksums_is_rebuilt(run_copy, synthetic_root):
    import json

    index = next((run_copy / "image_cache").glob("*/train.json"))
    meta = json.loads(index.read_text())
    del meta["crc32"]
    index.write_text(json.dumps(meta))
    dm = _datamodule(run_copy, synthetic_root)
    dm.cached_split("train")
    assert "crc32" in json.loads(index.read_text())
