"""Scanning an ImageFolder root and the split manifest that every later step reuses.

The manifest (CSV: path, label, split, bytes, sha256, phash, group) is the single record of which
file is in which split; training, resume, evaluation and export all read it instead of re-splitting.

The scan runs once per run (its result is the manifest) and sorts every file under the class folders:
each candidate is decoded with `load_rgb`, the same call training makes, so a file is either in the
manifest and readable, or listed in `skipped.csv` (path, reason) beside the manifest. Exact duplicates
(same sha256) and near duplicates (perceptual hash within `near_duplicate_distance` bits) form groups,
listed in `duplicates.csv`; the split keeps every group in one split (no test image has a twin in
train), or `dedupe=True` keeps one image per group.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import sys
import tempfile
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from lit_garbage.checks import Rule, positive
from lit_garbage.data.images import IMAGE_EXTENSIONS
from lit_garbage.runs import DUPLICATES_FILE, SKIPPED_FILE

SPLITS = ("train", "val", "test")
FIELDS = ("path", "label", "split", "bytes", "sha256")  # required columns (manifests of older runs have only these)
EXTRA_FIELDS = ("phash", "group")  # perceptual hash (hex) and duplicate-group id ("" when unique)
# Files the OS or a file manager leaves in folders: ignored silently (everything else is reported).
IGNORED_FILES = {"thumbs.db", "desktop.ini"}
MIN_SIDE = 8  # smaller images (e.g. 1x1 tracking pixels) carry nothing to learn and are skipped


class DatasetError(ValueError):
    """The dataset root or its manifest cannot be used; the message says what to do."""


@dataclass(frozen=True)
class Record:
    path: str  # relative to the dataset root, POSIX separators
    label: str
    split: str
    bytes: int
    sha256: str
    phash: str = ""  # 64-bit perceptual hash (imagehash.phash), hex
    group: str = ""  # duplicate group id (see duplicates.csv); "" for an image without twins


@dataclass(frozen=True)
class Skipped:
    path: str  # relative to the dataset root
    reason: str


@dataclass(frozen=True)
class Duplicate:
    group: str
    kind: str  # "exact" (same bytes) or "near" (perceptual hash)
    path: str
    label: str
    split: str  # the split the image is in, or "dropped" (dedupe)


@dataclass(frozen=True)
class Manifest:
    class_names: tuple[str, ...]
    records: tuple[Record, ...]
    # What the scan left out and the duplicate groups it found; written beside the manifest, not
    # read back from it (a reused manifest is the record; its reports are already on disk).
    skipped: tuple[Skipped, ...] = field(default=(), compare=False)
    duplicates: tuple[Duplicate, ...] = field(default=(), compare=False)

    def split(self, name: str) -> list[Record]:
        return [r for r in self.records if r.split == name]

    def counts(self, split: str) -> dict[str, int]:
        c = Counter(r.label for r in self.split(split))
        return {name: c.get(name, 0) for name in self.class_names}

    def class_weights(self) -> list[float]:
        """Keras/sklearn "balanced" weights from the train split: n_samples / (n_classes * count_c)."""
        from sklearn.utils.class_weight import compute_class_weight

        labels = [r.label for r in self.split("train")]
        classes = np.array(self.class_names)
        return compute_class_weight("balanced", classes=classes, y=np.array(labels)).tolist()

    def write(self, path: str | Path) -> None:
        """Write the manifest and, beside it, skipped.csv and duplicates.csv (always, even if empty)."""
        path = Path(path)
        _write_csv_atomic(path, FIELDS + EXTRA_FIELDS,
                          [[r.path, r.label, r.split, r.bytes, r.sha256, r.phash, r.group] for r in self.records])
        _write_csv_atomic(path.parent / SKIPPED_FILE, ("path", "reason"),
                          [[s.path, s.reason] for s in self.skipped])
        _write_csv_atomic(path.parent / DUPLICATES_FILE, ("group", "kind", "path", "label", "split"),
                          [[d.group, d.kind, d.path, d.label, d.split] for d in self.duplicates])

    @classmethod
    def read(cls, path: str | Path, class_names: list[str] | None = None) -> Manifest:
        path = Path(path)
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ())[:len(FIELDS)] != FIELDS:
                raise DatasetError(f"{path} is not a split manifest (expected columns {', '.join(FIELDS)})")
            records = tuple(Record(r["path"], r["label"], r["split"], int(r["bytes"]), r["sha256"],
                                   r.get("phash") or "", r.get("group") or "") for r in reader)
        names = tuple(class_names or sorted({r.label for r in records}))
        return cls(names, records)


def _write_csv_atomic(path: Path, header, rows) -> None:
    # Atomic: other processes (DDP ranks, a later resume) never see a half-written file.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# ----------------------------------------------------------------------------------------- layout

def _visible(entry: Path) -> bool:
    return not entry.name.startswith(".") and entry.name.lower() not in IGNORED_FILES


def find_class_folders(root: str | Path) -> list[str]:
    """Sorted class folder names of an ImageFolder root, or a DatasetError saying how to fix the layout."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"dataset root {root} does not exist or is not a folder. Point --data.root at a folder "
            "with one sub-folder per class (e.g. the Kaggle 'Garbage Classification v2' folder), or "
            "generate the small demo set with `python -m lit_garbage.data.synthetic data/synthetic`."
        )
    entries = sorted(e for e in root.iterdir() if _visible(e))
    classes = [e.name for e in entries if e.is_dir()]
    loose = [e.name for e in entries if e.is_file()]
    if not classes:
        hint = (f" It holds {len(loose)} file(s) directly ({', '.join(loose[:3])}...): put each class's "
                "images into a sub-folder named after the class.") if loose else " It is empty."
        raise DatasetError(f"dataset root {root} has no class sub-folders.{hint}")
    if len(classes) == 1:
        inner = root / classes[0]
        sub = sorted(e.name for e in inner.iterdir() if e.is_dir() and _visible(e))
        if len(sub) >= 2:
            raise DatasetError(
                f"{root} holds 1 class folder ({classes[0]}), which itself holds folders {sub[:5]}: the class "
                f"folders seem to be one level deeper. Use --data.root {inner}")
        raise DatasetError(f"{root} holds 1 class folder ({classes[0]}); a classifier needs at least 2 "
                           "(one sub-folder per class)")
    return classes


def _list_candidates(root: Path, class_names: list[str]) -> tuple[list[tuple[Path, str]], list[Skipped]]:
    """Every file under the class folders (recursively, as ImageFolder does), in ImageFolder's order."""
    candidates, skipped = [], []
    for e in sorted(root.iterdir()):
        if e.is_file() and _visible(e):
            skipped.append(Skipped(e.name, "not inside a class folder (ignored)"))
    for name in class_names:
        for folder, _, files in sorted(os.walk(root / name, followlinks=True)):
            for fname in sorted(files):
                path = Path(folder, fname)
                if not _visible(path):
                    continue
                rel = path.relative_to(root).as_posix()
                if path.suffix.lower() not in IMAGE_EXTENSIONS:
                    skipped.append(Skipped(rel, f"not an image file type ({path.suffix or 'no extension'}); "
                                                f"read: {' '.join(IMAGE_EXTENSIONS)}"))
                else:
                    candidates.append((path, name))
    return candidates, skipped


# ------------------------------------------------------------------------------------------ probe

@dataclass(frozen=True)
class _Probe:
    bytes: int
    sha256: str = ""
    phash: str = ""
    pixels: int = 0
    reason: str = ""  # why the file is skipped; "" when readable


def probe_image(path: Path) -> _Probe:
    """Decode one file exactly as training will (`load_rgb`); hashes if readable, else the reason."""
    import imagehash  # the perceptual hash; imported here so that reading a manifest does not need it

    from lit_garbage.data.images import load_rgb

    try:
        size = path.stat().st_size
    except OSError as err:
        return _Probe(0, reason=f"cannot read file: {err.strerror or err}")
    if size == 0:
        return _Probe(0, reason="empty file (0 bytes)")
    try:
        with Image.open(path) as im:
            w, h = im.size
        if min(w, h) < MIN_SIDE:
            return _Probe(size, reason=f"too small ({w}x{h} px; need at least {MIN_SIDE} px per side)")
        rgb = load_rgb(path)
        digest = sha256_file(path)
        phash = str(imagehash.phash(rgb))
    except UnidentifiedImageError:
        return _Probe(size, reason="not an image (unknown or unsupported format)")
    except Image.DecompressionBombError as err:
        return _Probe(size, reason=f"image too large to decode safely: {err}")
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, IndexError, TypeError) as err:
        msg = str(err) or type(err).__name__
        kind = "truncated" if "truncated" in msg.lower() else "corrupt"
        return _Probe(size, reason=f"{kind} image: {msg}")
    return _Probe(size, digest, phash, w * h)


def _probe_all(paths: list[Path], workers: int | None = None) -> list[_Probe]:
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(paths) < 32:
        return [probe_image(p) for p in paths]
    with ThreadPoolExecutor(workers) as pool:  # decoding and hashing release the GIL for the most part
        return list(pool.map(probe_image, paths, chunksize=16))


# ------------------------------------------------------------------------------------- duplicates

def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def duplicate_groups(sha256: list[str], phash: list[str], near_distance: int | None
                     ) -> list[tuple[list[int], str]]:
    """Groups (indices, "exact" | "near") of images with equal bytes or, when `near_distance` is not
    None, perceptual hashes at most `near_distance` bits apart (union-find, so chains join a group).

    Hashes of flat images (all bits 0 or 1, e.g. a blank frame) say nothing about content and only
    take part in exact matching. Pairwise distances run in numpy blocks: ~20k images take seconds.
    """
    n = len(sha256)
    parent = list(range(n))
    near_edge = [False] * n

    def union(a: int, b: int) -> None:
        ra, rb = _find(parent, a), _find(parent, b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    first: dict[str, int] = {}
    for i, h in enumerate(sha256):
        if h in first:
            union(first[h], i)
        else:
            first[h] = i
    if near_distance is not None and near_distance >= 0 and n > 1:
        hashes = np.array([int(h, 16) if h else 0 for h in phash], dtype=np.uint64)
        bits = np.bitwise_count(hashes)
        usable = np.flatnonzero((bits >= 8) & (bits <= 56))
        hu = hashes[usable]
        for start in range(0, len(usable), 256):
            block = np.bitwise_count(hu[start:start + 256, None] ^ hu[None, :])
            rows, cols = np.nonzero(block <= near_distance)
            for r, c in zip(rows + start, cols):
                if r < c:
                    a, b = int(usable[r]), int(usable[c])
                    if sha256[a] != sha256[b]:
                        near_edge[a] = near_edge[b] = True
                    union(a, b)
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        members[_find(parent, i)].append(i)
    groups = []
    for root in sorted(members):
        idx = members[root]
        if len(idx) > 1:
            groups.append((idx, "near" if any(near_edge[i] for i in idx) else "exact"))
    return groups


# ------------------------------------------------------------------------------------------ split

def stratified_split(labels: list[str], fractions: tuple[float, float, float], seed: int) -> list[str]:
    """Assign each index to train/val/test, stratified by label, deterministic for a seed."""
    from sklearn.model_selection import train_test_split

    check_fractions(fractions)
    train_f, val_f, test_f = fractions
    idx = np.arange(len(labels))
    y = np.array(labels)
    try:
        rest, test = train_test_split(idx, test_size=test_f, stratify=y, random_state=seed)
        train, val = train_test_split(rest, test_size=val_f / (train_f + val_f), stratify=y[rest],
                                      random_state=seed)
    except ValueError as err:
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(Counter(labels).items()))
        raise DatasetError(
            f"cannot make a stratified {train_f:g}/{val_f:g}/{test_f:g} split of this dataset ({err}). "
            f"Images per class (duplicate groups count once): {counts}. Each class needs enough images "
            "for every split (in practice at least 7, and validation/test need at least one image per "
            "class): add images to the small classes or remove those class folders."
        ) from None
    missing = [f"{name} has no {label!r}" for name, part in zip(SPLITS, (train, val, test))
               for label in sorted(set(labels) - set(y[part].tolist()))]
    if missing:
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(Counter(labels).items()))
        raise DatasetError(
            f"cannot make a stratified {train_f:g}/{val_f:g}/{test_f:g} split in which every split holds every "
            f"class ({'; '.join(missing[:5])}). Images per class (duplicate groups count once): {counts}. "
            f"Add images to the small classes (about {math.ceil(1 / min(fractions))} or more each) or remove "
            "those class folders.")
    out = [""] * len(labels)
    for name, part in zip(SPLITS, (train, val, test)):
        for i in part:
            out[i] = name
    return out


SPLIT_RULE = Rule("data.split", lambda v: len(v) == 3 and all(positive(x) for x in v) and abs(sum(v) - 1) < 1e-6,
                  "must be 3 positive train/val/test fractions summing to 1")


def check_fractions(fractions) -> None:
    problem = SPLIT_RULE.problem(tuple(fractions))
    if problem:
        raise DatasetError(problem)


# ------------------------------------------------------------------------------------------ build

def scan_image_folder(root: str | Path, workers: int | None = None
                      ) -> tuple[list[str], list[tuple[Path, str, _Probe]], list[Skipped]]:
    """Class names, readable (file, class, probe) triples and the skipped files of an ImageFolder root."""
    root = Path(root)
    class_names = find_class_folders(root)
    candidates, skipped = _list_candidates(root, class_names)
    probes = _probe_all([p for p, _ in candidates], workers)
    readable = []
    for (path, label), pr in zip(candidates, probes):
        if pr.reason:
            skipped.append(Skipped(path.relative_to(root).as_posix(), pr.reason))
        else:
            readable.append((path, label, pr))
    found = Counter(label for _, label in candidates)
    usable = Counter(label for _, label, _ in readable)
    empty = [name for name in class_names if found[name] == 0]
    if empty:
        raise DatasetError(
            f"class folder(s) without images under {root}: {', '.join(empty)} "
            f"(image extensions: {', '.join(IMAGE_EXTENSIONS)}). Add images or remove the folder(s)."
        )
    unreadable = [name for name in class_names if usable[name] == 0]
    if unreadable:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:5])
        raise DatasetError(f"class folder(s) with no readable image under {root}: {', '.join(unreadable)} "
                           f"(e.g. {reasons}). Replace the files or remove the folder(s).")
    return class_names, readable, skipped


def build_manifest(root: str | Path, fractions=(0.7, 0.15, 0.15), seed: int = 42, *, dedupe: bool = False,
                   near_duplicate_distance: int | None = 4, workers: int | None = None,
                   verbose: bool = False) -> Manifest:
    """Scan, group duplicates, split (one split per duplicate group) and return the manifest."""
    root = Path(root)
    check_fractions(fractions)
    class_names, items, skipped = scan_image_folder(root, workers)
    groups = duplicate_groups([pr.sha256 for _, _, pr in items], [pr.phash for _, _, pr in items],
                              near_duplicate_distance)
    group_of = {i: (f"g{n:05d}", kind) for n, (idx, kind) in enumerate(groups) for i in idx}
    # Units of the split: each duplicate group once, with the group's most common label (ties: first).
    unit_members: list[list[int]] = []
    seen: set[int] = set()
    members = {i: idx for idx, _ in groups for i in idx}
    for i in range(len(items)):
        if i in seen:
            continue
        idx = members.get(i, [i])
        seen.update(idx)
        unit_members.append(idx)
    dropped: set[int] = set()
    if dedupe:
        for idx in unit_members:
            if len(idx) > 1:
                label = Counter(items[i][1] for i in idx).most_common(1)[0][0]
                keep = max((i for i in idx if items[i][1] == label), key=lambda i: (items[i][2].pixels, -i))
                dropped.update(i for i in idx if i != keep)
        unit_members = [[i for i in idx if i not in dropped] for idx in unit_members]
    unit_labels = [Counter(items[i][1] for i in idx).most_common(1)[0][0] for idx in unit_members]
    unit_splits = stratified_split(unit_labels, fractions, seed)
    split_of = {i: s for idx, s in zip(unit_members, unit_splits) for i in idx}
    records, duplicates = [], []
    for i, (path, label, pr) in enumerate(items):
        rel = path.relative_to(root).as_posix()
        group, kind = group_of.get(i, ("", ""))
        if group:
            duplicates.append(Duplicate(group, kind, rel, label, "dropped" if i in dropped else split_of[i]))
        if i not in dropped:
            records.append(Record(rel, label, split_of[i], pr.bytes, pr.sha256, pr.phash, group))
    duplicates.sort(key=lambda d: (d.group, d.path))
    manifest = Manifest(tuple(class_names), tuple(records), tuple(skipped), tuple(duplicates))
    if verbose:
        print(scan_summary(manifest, root, len(items), dedupe), file=sys.stderr, flush=True)
    return manifest


def scan_summary(manifest: Manifest, root: Path, readable: int, dedupe: bool) -> str:
    groups = Counter(d.group for d in manifest.duplicates)
    by_kind = Counter(d.kind for d in {d.group: d for d in manifest.duplicates}.values())
    mixed = sum(1 for g in groups if len({d.label for d in manifest.duplicates if d.group == g}) > 1)
    dropped = sum(1 for d in manifest.duplicates if d.split == "dropped")
    line = (f"dataset scan of {root}: {readable + len(manifest.skipped)} files, {len(manifest.records)} images "
            f"in {len(manifest.class_names)} classes, {len(manifest.skipped)} skipped (see {SKIPPED_FILE}); "
            f"{len(groups)} duplicate groups ({by_kind['exact']} exact, {by_kind['near']} near) covering "
            f"{sum(groups.values())} images")
    if mixed:
        line += f", {mixed} of them across classes (conflicting labels)"
    line += (f"; dedupe dropped {dropped} copies" if dedupe
             else "; each group kept in one split" if groups else "")
    return line + (f" (see {DUPLICATES_FILE})" if groups else "")


def load_or_build_manifest(root: str | Path, path: str | Path | None, fractions=(0.7, 0.15, 0.15),
                           seed: int = 42, *, dedupe: bool = False, near_duplicate_distance: int | None = 4,
                           verbose: bool = False) -> Manifest:
    """Reuse the manifest at `path` when it exists (and matches the root's classes); else build and write it."""
    if path is not None and Path(path).is_file():
        manifest = Manifest.read(path)
        root_classes = find_class_folders(root)
        if list(manifest.class_names) != root_classes:
            raise DatasetError(
                f"the split manifest {path} lists classes {list(manifest.class_names)} but {root} has "
                f"{root_classes}; use the dataset the run was made with, or start a new run directory."
            )
        return manifest
    manifest = build_manifest(root, fractions, seed, dedupe=dedupe,
                              near_duplicate_distance=near_duplicate_distance, verbose=verbose)
    if path is not None:
        manifest.write(path)
    return manifest


def file_hash(path: str | Path) -> str:
    """Content hash of a whole file (manifests, checkpoints) for export metadata."""
    return sha256_file(Path(path))
