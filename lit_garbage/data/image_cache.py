"""Decoded-image cache: every image of a split decoded and resized ONCE into a uint8 store reused across epochs.

Without it, every epoch decodes every JPEG/PNG again (`images.load_rgb`) and resizes it to the model's
size, which is most of the input pipeline's work. With it, a split is one file of raw pixels that the
DataLoader workers read through a memory map (the OS page cache shares it between processes), and the
train / eval transforms run on the cached uint8 CHW tensor.

Layout (one folder per manifest content + image size, so a changed manifest or size never reads stale pixels):

    <cache dir>/images-<size>px-<key>/
        train.npy    uint8 [N, 3, size, size], row i = record i of the split, in manifest order
        train.json   the index: format version, key, size, count, per image ok (decoded), the file's
                     (bytes, mtime_ns) when it was decoded and the CRC-32 of its cached row; written last, so
                     its presence means complete
        val.npy, val.json, test.npy, test.json

`<key>` is a sha256 over the cache format version, the image size and the manifest's records (path, class,
split, bytes, sha256 of every file): any edit of the manifest (another split, added or removed images, a
file re-hashed) gives another folder. Files are written to a temporary name and renamed into place
(atomic), so an interrupted build leaves no half file, and two processes building the same split at once
(DDP ranks on separate nodes sharing a folder) both produce the same complete file.

Numerically identical to the uncached path: the store holds exactly `transforms.resize_uint8` of
`load_rgb(path)` (the contract's PIL resize, then ToImage), which is the first two steps of both transforms; on
the cached tensor those steps are no-ops (the resize passes tensors through), so eval tensors are bit-identical
and train tensors are identical for the same random state (tests/data/test_image_cache.py).

Images that cannot be decoded when the cache is built, or whose file changed (size or mtime) since, are marked
not-ok and read from the file as before (with the dataset's unreadable-file fallback).

The cache is checked, never trusted: opening a split reads the .npy header without mapping it (uint8, shape
[N, 3, size, size], C order, the file size that implies) and every row served is checked against its CRC-32
(about 30 us per 224 px row). A damaged file (truncated, overwritten, another shape, not pixels) is rebuilt,
and a row that fails its checksum is read from the image file; either way a warning names the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lit_garbage.files import replaced_atomically
from lit_garbage.runs import IMAGE_CACHE_DIR

CACHE_VERSION = 2  # 2: the contract's resize is PIL's (images.resize_rgb), no longer torch's
CACHE_SUBDIR = IMAGE_CACHE_DIR  # "auto": <folder of the manifest file>/image_cache
HIDDEN_CACHE_SUBDIR = ".image_cache"  # the same inside the dataset root, where a visible folder would be a class


def cache_key(records: Sequence, image_size: int) -> str:
    """sha256 (first 16 hex digits) over the format version, the image size and every record of the manifest."""
    h = hashlib.sha256(f"lit_garbage image cache v{CACHE_VERSION} size={image_size}\n".encode())
    for r in records:
        # surrogateescape: a file name that is not UTF-8 keys the cache by its own bytes
        h.update(f"{r.path}\t{r.label}\t{r.split}\t{r.bytes}\t{r.sha256}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def cached_pixels(image, image_size: int) -> torch.Tensor:
    """What the cache stores for one PIL RGB image: `transforms.resize_uint8`, the first steps of every transform."""
    from lit_garbage.data.transforms import resize_uint8

    return resize_uint8(image_size)(image)


def _file_stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


class _Decode(torch.utils.data.Dataset):
    """(index, uint8 CHW tensor or None, file stat before decoding) for the cache build (run by DataLoader workers)."""

    def __init__(self, root: Path, paths: Sequence[str], image_size: int) -> None:
        self.root, self.paths, self.image_size = root, list(paths), image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from lit_garbage.data.images import load_rgb

        path = self.root / self.paths[i]
        stat = _file_stat(path)
        try:
            return i, cached_pixels(load_rgb(path), self.image_size), stat
        except Exception:  # noqa: BLE001 - the dataset reads (and reports) this file itself at training time
            return i, None, stat


def _row_crc(row: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(row).data)


def npy_problem(path: Path, count: int, image_size: int) -> str | None:
    """Why the .npy file at `path` is not `count` uint8 images of 3 x size x size (None: it is), header only."""
    shape = (count, 3, image_size, image_size)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            got_shape, fortran, dtype = read_header(f)
            offset = f.tell()
        size = os.path.getsize(path)
    except (OSError, ValueError, EOFError) as err:
        return f"not a readable .npy file: {err}"
    if dtype != np.uint8 or fortran or tuple(got_shape) != shape:
        return (f"holds {dtype} {'Fortran' if fortran else 'C'}-order {tuple(got_shape)}, expected uint8 C-order "
                f"{shape}")
    expected = offset + int(np.prod(shape))
    if size != expected:
        return f"{size} bytes, expected {expected} (truncated or padded)"
    return None


@dataclass
class CachedSplit:
    """One split's cached pixels: `get(i)` is record i as a uint8 CHW tensor, or None (read the file instead).

    Every row is checked against its CRC-32 from the index: a row that does not match is never served (a warning
    names the file; the index is removed, so the next run rebuilds the split). Picklable for DataLoader workers:
    the memory map is opened lazily, once per process.
    """

    array_path: str
    ok: np.ndarray  # bool [N]
    image_size: int
    crc: np.ndarray | None = None  # uint32 [N]: CRC-32 of each row as built
    index_path: str | None = None  # removed when a row is found damaged

    def __post_init__(self) -> None:
        self._array = None
        self._warned = False

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_array"] = None  # every worker opens its own map
        return state

    def __len__(self) -> int:
        return len(self.ok)

    def get(self, i: int) -> torch.Tensor | None:
        if not self.ok[i]:
            return None
        if self._array is None:
            self._array = np.load(self.array_path, mmap_mode="r")
        row = np.array(self._array[i])  # a private copy: the map is read-only
        if self.crc is not None and _row_crc(row) != int(self.crc[i]):
            self.ok[i] = False
            if not self._warned:
                self._warned = True
                warnings.warn(f"decoded-image cache {self.array_path}: row {i} does not match its checksum (the file "
                              "was changed after it was built); reading the image files instead, and the cache will "
                              "be rebuilt on the next run", stacklevel=2)
            if self.index_path:
                Path(self.index_path).unlink(missing_ok=True)
            return None
        return torch.from_numpy(row)


class ImageCache:
    """The cache folder of one (manifest, image size): builds missing splits, opens complete ones."""

    def __init__(self, cache_dir: str | Path, root: str | Path, records: Sequence, image_size: int) -> None:
        self.records = list(records)
        self.key = cache_key(self.records, image_size)
        self.dir = Path(cache_dir) / f"images-{image_size}px-{self.key}"
        self.root = Path(root)
        self.image_size = image_size

    def paths(self, split: str) -> tuple[Path, Path]:
        return self.dir / f"{split}.npy", self.dir / f"{split}.json"

    def _index(self, split: str, count: int, check: bool = False) -> dict | None:
        """The split's index when the cache is complete and sound; None: build it. `check`: also the .npy
        header and size (a warning names a damaged file)."""
        array, index = self.paths(split)
        try:
            meta = json.loads(index.read_text())
        except (OSError, ValueError):
            return None
        if (not isinstance(meta, dict) or meta.get("version") != CACHE_VERSION or meta.get("key") != self.key
                or meta.get("count") != count or meta.get("image_size") != self.image_size or not array.is_file()):
            return None
        if any(not isinstance(meta.get(k), list) or len(meta[k]) != count for k in ("ok", "stat", "crc32")):
            return None  # an index of an older build (no checksums) or a damaged one: rebuild
        if check:
            problem = npy_problem(array, count, self.image_size)
            if problem:
                warnings.warn(f"decoded-image cache {array} is damaged ({problem}); rebuilding it", stacklevel=3)
                return None
        return meta

    def is_complete(self, split: str) -> bool:
        return self._index(split, len([r for r in self.records if r.split == split])) is not None

    def split(self, split: str, workers: int = 0) -> CachedSplit:
        """The cached split, built first when missing or incomplete."""
        paths = [r.path for r in self.records if r.split == split]
        meta = self._index(split, len(paths), check=True)
        if meta is None:
            meta = self.build(split, paths, workers)
        ok = np.array(meta["ok"], dtype=bool)
        # A file replaced since it was decoded: read it again instead of serving the old pixels.
        for i, (path, stat) in enumerate(zip(paths, meta["stat"])):
            if ok[i] and tuple(stat) != _file_stat(self.root / path):
                ok[i] = False
        array, index = self.paths(split)
        return CachedSplit(str(array), ok, self.image_size, np.array(meta["crc32"], dtype=np.uint32), str(index))

    def build(self, split: str, paths: list[str], workers: int = 0) -> dict:
        array_path, index_path = self.paths(split)
        self.dir.mkdir(parents=True, exist_ok=True)
        n, s = len(paths), self.image_size
        ok = [False] * n
        crc = [0] * n
        stat: list[tuple[int, int]] = [(-1, -1)] * n
        with replaced_atomically(array_path, prefix=f".{split}-", suffix=".npy.tmp") as tmp:
            store = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 3, s, s))
            loader = torch.utils.data.DataLoader(_Decode(self.root, paths, s), batch_size=None,
                                                 num_workers=min(workers, n))
            for i, image, st in loader:
                stat[i] = st
                if image is not None:
                    store[i] = image.numpy()
                    crc[i] = _row_crc(store[i])
                    ok[i] = True
            store.flush()
            del store
        meta = {"version": CACHE_VERSION, "key": self.key, "image_size": s, "count": n, "split": split,
                "root": str(self.root), "ok": ok, "stat": stat, "crc32": crc}
        with replaced_atomically(index_path, prefix=f".{split}-", suffix=".json.tmp") as tmp, tmp.open("w") as f:
            json.dump(meta, f)
        return meta


def resolve_cache_dir(cache: str | None, manifest_path: str | Path | None, image_size: int,
                      total_images: int, root: str | Path | None = None) -> Path | None:
    """Where the cache of a data module lives, or None for no cache (see `GarbageDataModule`'s `cache`)."""
    if cache is None or str(cache).lower() in ("none", "off", "false", ""):
        return None
    if str(cache).lower() != "auto":
        return Path(cache)
    if manifest_path is None:  # no run directory owns a cache: decode as before
        return None
    parent = Path(manifest_path).resolve().parent
    inside_root = root is not None and parent.is_relative_to(Path(root).resolve())
    folder = parent / (HIDDEN_CACHE_SUBDIR if inside_root else CACHE_SUBDIR)
    need = total_images * 3 * image_size * image_size
    probe = folder if folder.exists() else folder.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return folder
    if need > free // 2:
        warnings.warn(f"data.cache auto: the decoded images would take {need / 2**30:.1f} GiB, more than half of "
                      f"the {free / 2**30:.1f} GiB free under {probe}; decoding every epoch instead (set data.cache "
                      "to a folder with room to cache)", stacklevel=2)
        return None
    return folder
