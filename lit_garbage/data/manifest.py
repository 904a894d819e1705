"""Scanning an ImageFolder root and the split manifest that every later step reuses.

The manifest (CSV: path, label, split, bytes, sha256, phash, group) is the single record of which
file is in which split; training, resume, evaluation and export all read it instead of re-splitting.

The scan runs once per run (its result is the manifest) and sorts every file under the class folders:
each candidate is decoded with `load_rgb`, the same call training makes, so a file is either in the
manifest and readable, or listed in `skipped.csv` (path, reason) beside the manifest. Exact duplicates
(same sha256) and near duplicates (perceptual hash within `near_duplicate_distance` bits) form groups,
listed in `duplicates.csv`; the split keeps every group in one split (no test image has a twin in
train), or `dedupe=True` keeps one image per group.

Links and names. Folders are identified by (st_dev, st_ino), so a folder is scanned once however many
links (or bind mounts) lead to it: a link to a folder above it (a loop), a link into another class folder
(its photos would get a second label) or a second way into a folder already scanned becomes a skipped.csv
row, and a class folder that is the same folder as another class folder is refused. A file link that leads
to a file the scan reaches directly counts there. File names are kept whatever their bytes: names that are
not UTF-8 travel through the CSV files as their own bytes (`surrogateescape`) and are shown as \\xNN in
messages (`images.shown`); class folder names must be text, since they become the model's labels.

A reused manifest is checked against the files (`check_files`): size and mtime first, sha256 when they
differ; a file whose content changed since the scan is reported by name and left out.
"""

from __future__ import annotations

import csv
import math
import os
import stat
import sys
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from lit_garbage.checks import Rule, positive
from lit_garbage.artifacts import name_problem
from lit_garbage.data.images import IMAGE_EXTENSIONS, shown
from lit_garbage.files import replaced_atomically, sha256_file
from lit_garbage.runs import DUPLICATES_FILE, MANIFEST_FILE, SKIPPED_FILE

SPLITS = ("train", "val", "test")
FIELDS = ("path", "label", "split", "bytes", "sha256")  # required columns (manifests of older runs have only these)
# perceptual hash (hex), duplicate-group id ("" when unique), the file's mtime (ns) when it was scanned
EXTRA_FIELDS = ("phash", "group", "mtime_ns")
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
    mtime_ns: int | None = None  # the file's modification time when scanned (None: manifests of older runs)


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

    def without(self, paths) -> Manifest:
        """The same manifest without the records of `paths` (e.g. files that changed since the scan)."""
        drop = set(paths)
        return Manifest(self.class_names, tuple(r for r in self.records if r.path not in drop), self.skipped,
                        self.duplicates)

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
                          [[r.path, r.label, r.split, r.bytes, r.sha256, r.phash, r.group,
                            "" if r.mtime_ns is None else r.mtime_ns] for r in self.records])
        _write_csv_atomic(path.parent / SKIPPED_FILE, ("path", "reason"),
                          [[s.path, s.reason] for s in self.skipped])
        _write_csv_atomic(path.parent / DUPLICATES_FILE, ("group", "kind", "path", "label", "split"),
                          [[d.group, d.kind, d.path, d.label, d.split] for d in self.duplicates])

    @classmethod
    def read(cls, path: str | Path, class_names: list[str] | None = None) -> Manifest:
        """Read a manifest; a row whose path leaves the dataset root (absolute, or with '..') is refused."""
        path = Path(path)
        with path.open(newline="", encoding="utf-8", errors="surrogateescape") as f:
            reader = csv.DictReader(f)
            try:
                return cls._read_rows(path, reader, class_names)
            except DatasetError:  # already one line naming the row and the reason
                raise
            except (csv.Error, KeyError, ValueError, TypeError, AttributeError) as err:
                # A stray quote swallows the rest of the file into one field, a short row has no path: one line.
                raise DatasetError(f"{shown(path)} line {reader.line_num}: not a valid split manifest row "
                                   f"({type(err).__name__}: {str(err)[:120]}); fix the file, or start a new run "
                                   "directory to re-scan the dataset") from None

    @classmethod
    def _read_rows(cls, path: Path, reader: csv.DictReader, class_names: list[str] | None) -> Manifest:
        if tuple(reader.fieldnames or ())[:len(FIELDS)] != FIELDS:
            raise DatasetError(f"{path} is not a split manifest (expected columns {', '.join(FIELDS)})")
        records = []
        for line, r in enumerate(reader, start=2):
            if not inside_root(r["path"]):
                raise DatasetError(
                    f"{shown(path)} line {line}: the path {shown(r['path'])!r} is not inside the dataset root "
                    "(a split manifest lists paths relative to the root, without '..'); it would read a file "
                    "outside the dataset. Fix the line, or start a new run directory to re-scan the dataset.")
            mtime = r.get("mtime_ns") or ""
            records.append(Record(r["path"], r["label"], r["split"], int(r["bytes"]), r["sha256"],
                                  r.get("phash") or "", r.get("group") or "",
                                  int(mtime) if mtime.isdigit() else None))
        records = tuple(records)
        names = tuple(class_names or sorted({r.label for r in records}))
        return cls(names, records)


def inside_root(rel: str) -> bool:
    """Whether a manifest path names a file inside the dataset root: relative, no '..', no NUL byte."""
    pure = PurePosixPath(rel)
    return bool(rel) and "\0" not in rel and not pure.is_absolute() and ".." not in pure.parts


def _write_csv_atomic(path: Path, header, rows) -> None:
    # File names are written as their own bytes (surrogateescape): a name that is not UTF-8 reads back as
    # the same file.
    with replaced_atomically(path) as tmp, tmp.open("w", newline="", encoding="utf-8",
                                                    errors="surrogateescape") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


# ----------------------------------------------------------------------------------------- layout

def _visible(entry: Path) -> bool:
    return not entry.name.startswith(".") and entry.name.lower() not in IGNORED_FILES


def _folder_key(path: Path) -> tuple[int, int]:
    """A folder's identity whatever the way to it (links, bind mounts): (device, inode)."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def find_class_folders(root: str | Path) -> list[str]:
    """Sorted class folder names of an ImageFolder root, or a DatasetError saying how to fix the layout."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"dataset root {shown(root)} does not exist or is not a folder. Point --data.root at a folder "
            "with one sub-folder per class (e.g. the Kaggle 'Garbage Classification v2' folder), or "
            "generate the small demo set with `python -m lit_garbage.data.synthetic data/synthetic`."
        )
    entries = sorted(e for e in root.iterdir() if _visible(e))
    classes = [e.name for e in entries if e.is_dir()]
    loose = [e.name for e in entries if e.is_file()]
    not_text = [shown(c) for c in classes if shown(c) != c]
    if not_text:
        raise DatasetError(
            f"class folder name(s) under {shown(root)} are not UTF-8 text: {', '.join(not_text)} (shown with \\xNN "
            "for the bytes that are not). Class names become the model's labels (labels.txt, metadata.json, the "
            "browser demo): rename the folder(s).")
    unusable = [(c, name_problem(c)) for c in classes if name_problem(c)]
    if unusable:  # a newline in a name is one more line in labels.txt than the model has outputs
        raise DatasetError(
            f"class folder name(s) under {shown(root)} cannot be labels: "
            + "; ".join(f"{c!r} {why}" for c, why in unusable[:5])
            + ". Class names become the model's labels (labels.txt, metadata.json, the browser demo): rename the "
            "folder(s).")
    if not classes:
        hint = (f" It holds {len(loose)} file(s) directly ({', '.join(map(shown, loose[:3]))}...): put each class's "
                "images into a sub-folder named after the class.") if loose else " It is empty."
        raise DatasetError(f"dataset root {shown(root)} has no class sub-folders.{hint}")
    if len(classes) == 1:
        inner = root / classes[0]
        sub = sorted(e.name for e in inner.iterdir() if e.is_dir() and _visible(e))
        if len(sub) >= 2:
            raise DatasetError(
                f"{root} holds 1 class folder ({classes[0]}), which itself holds folders {sub[:5]}: the class "
                f"folders seem to be one level deeper. Use --data.root {inner}")
        raise DatasetError(f"{root} holds 1 class folder ({classes[0]}); a classifier needs at least 2 "
                           "(one sub-folder per class)")
    _refuse_aliased_class_folders(root, classes)
    return classes


def _refuse_aliased_class_folders(root: Path, classes: list[str]) -> None:
    """Two class names for one folder (a link, a bind mount) would give every photo in it two labels."""
    root_key = _folder_key(root)
    owner: dict[tuple[int, int], str] = {}
    for name in classes:
        key = _folder_key(root / name)
        link = " (a link)" if (root / name).is_symlink() else ""
        if key == root_key:
            raise DatasetError(f"class folder '{name}'{link} under {root} is the dataset root itself: scanning it "
                               "would loop. Remove the link.")
        if key in owner:
            first = owner[key]
            alias, real = (first, name) if (root / first).is_symlink() and not (root / name).is_symlink() else (name, first)
            raise DatasetError(
                f"class folders '{alias}' and '{real}' under {root} are the same folder ('{alias}' is a link or mount "
                f"of it): its photos would get two class names. Remove '{alias}', or make it a folder of its own images.")
        owner[key] = name


@dataclass(frozen=True)
class _Entry:
    path: Path
    label: str
    key: tuple[int, int] | None  # the file's (device, inode); None if it cannot be read
    link: bool  # reached through a symbolic link


def _list_candidates(root: Path, class_names: list[str]) -> tuple[list[tuple[Path, str]], list[Skipped]]:
    """Every file under the class folders (recursively, as ImageFolder does), in ImageFolder's order.

    Folder links are followed once (see the module docstring): loops, links into another class folder and
    second ways into a folder already scanned become skipped rows, never a second copy of its images.
    """
    candidates, skipped = [], []
    for e in sorted(root.iterdir()):
        if e.is_file() and _visible(e):
            skipped.append(Skipped(e.name, "not inside a class folder (ignored)"))
    root_key = _folder_key(root)
    class_of = {_folder_key(root / name): name for name in class_names}  # all of them before any walk
    scanned: dict[tuple[int, int], str] = {}  # folder -> the path it was scanned under
    folders: list[tuple[Path, str, list[os.DirEntry]]] = []

    def rel(path: Path) -> str:
        return path.relative_to(root).as_posix()

    def walk(folder: Path, name: str, ancestors: frozenset) -> None:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            skipped.append(Skipped(rel(folder), f"cannot list folder: {err.strerror or err}"))
            return
        files = []
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()  # follows links
            except OSError:
                is_dir = False
            if not is_dir:
                files.append(entry)
                continue
            try:
                key = _folder_key(path)
            except OSError as err:
                skipped.append(Skipped(rel(path), f"cannot open folder: {err.strerror or err}"))
                continue
            if key in ancestors or key == root_key:
                skipped.append(Skipped(rel(path), "folder link loop (leads to a folder above it); not followed"))
            elif key in class_of and class_of[key] != name:
                skipped.append(Skipped(rel(path), f"link to the class folder '{class_of[key]}'; its images count "
                                                  "there, not a second time under this class"))
            elif key in scanned:
                skipped.append(Skipped(rel(path), f"the same folder as '{scanned[key]}', already scanned; not "
                                                  "scanned twice"))
            else:
                scanned[key] = rel(path)
                walk(path, name, ancestors | {key})
        folders.append((folder, name, files))

    for name in class_names:
        top = root / name
        key = _folder_key(top)
        scanned[key] = name
        walk(top, name, frozenset({key}))
    # ImageFolder's order: folders by path, files by name (as sorted(os.walk(...)) gave it).
    found: list[_Entry] = []
    for folder, name, files in sorted(folders, key=lambda f: (class_names.index(f[1]), str(f[0]))):
        for entry in files:
            path = Path(entry.path)
            if not _visible(path):
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append(Skipped(rel(path), f"not an image file type ({path.suffix or 'no extension'}); "
                                                  f"read: {' '.join(IMAGE_EXTENSIONS)}"))
                continue
            try:
                st = entry.stat()  # follows links
            except OSError:
                found.append(_Entry(path, name, None, True))  # a broken link: the probe reports it
                continue
            if not stat.S_ISREG(st.st_mode):
                kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode)
                        or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "special")
                skipped.append(Skipped(rel(path), f"not a regular file ({kind}); not read"))
                continue
            found.append(_Entry(path, name, (st.st_dev, st.st_ino), entry.is_symlink()))
    # A file link to a file the scan also reaches directly: the file counts where it is, once.
    direct = {e.key: e for e in found if not e.link and e.key is not None}
    for e in found:
        target = direct.get(e.key) if e.link else None
        if target is not None:
            skipped.append(Skipped(rel(e.path), f"link to '{rel(target.path)}', which counts there; not a second "
                                                "time"))
        else:
            candidates.append((e.path, e.label))
    return candidates, skipped


# ------------------------------------------------------------------------------------------ probe

@dataclass(frozen=True)
class _Probe:
    bytes: int
    sha256: str = ""
    phash: str = ""
    pixels: int = 0
    reason: str = ""  # why the file is skipped; "" when readable
    mtime_ns: int | None = None


def probe_image(path: Path) -> _Probe:
    """Decode one file exactly as training will (`load_rgb`); hashes if readable, else the reason."""
    import imagehash  # the perceptual hash; imported here so that reading a manifest does not need it

    from lit_garbage.data.images import load_rgb

    try:
        st = path.stat()
    except OSError as err:
        return _Probe(0, reason=f"cannot read file: {err.strerror or err}")
    size = st.st_size
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
    return _Probe(size, digest, phash, w * h, mtime_ns=st.st_mtime_ns)


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
        reasons = "; ".join(f"{shown(s.path)}: {s.reason}" for s in skipped[:5])
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
            records.append(Record(rel, label, split_of[i], pr.bytes, pr.sha256, pr.phash, group, pr.mtime_ns))
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


def read_exclude_list(path: str | Path) -> set[str]:
    """Photos to leave out, relative to the dataset root: one per line ('#' comments and blank lines ignored), or a
    CSV file with a `path` column (e.g. the label_issues.csv of `lit-garbage audit`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as err:
        raise DatasetError(f"cannot read the exclude list {shown(path)}: {err.strerror or err}") from None
    lines = text.splitlines()
    if lines and "path" in next(csv.reader([lines[0]])):
        rows = list(csv.DictReader(lines))
        return {r["path"].strip().removeprefix("./") for r in rows if (r.get("path") or "").strip()}
    return {line.strip().removeprefix("./") for line in lines if line.strip() and not line.lstrip().startswith("#")}


def load_or_build_manifest(root: str | Path, path: str | Path | None, fractions=(0.7, 0.15, 0.15),
                           seed: int = 42, *, dedupe: bool = False, near_duplicate_distance: int | None = 4,
                           verbose: bool = False, exclude: set[str] | frozenset[str] = frozenset()) -> Manifest:
    """Reuse the manifest at `path` when it exists (and matches the root's classes); else build and write it.

    `exclude`: paths left out of every split after the split is made, so the other photos keep the splits they
    have without the exclusion (runs with and without it are compared on the same photos)."""
    if path is not None and Path(path).is_file():
        manifest = Manifest.read(path)
        root_classes = find_class_folders(root)
        if list(manifest.class_names) != root_classes:
            raise DatasetError(
                f"the split manifest {path} lists classes {list(manifest.class_names)} but {root} has "
                f"{root_classes}; use the dataset the run was made with, or start a new run directory."
            )
        return manifest.without(exclude)
    manifest = build_manifest(root, fractions, seed, dedupe=dedupe,
                              near_duplicate_distance=near_duplicate_distance, verbose=verbose)
    if exclude:
        listed = len(manifest.records)
        manifest = manifest.without(exclude)
        if verbose:
            left = listed - len(manifest.records)
            print(f"left out {left} photos named in the exclude list ({len(exclude) - left} listed paths are not "
                  "photos of this dataset)", file=sys.stderr, flush=True)
    if path is not None:
        manifest.write(path)
    return manifest


# ------------------------------------------------------------------------------------------ reuse

@dataclass
class FileCheck:
    """What `check_files` found: the records checked and, per path, how a file differs from its record."""

    checked: int
    changed: dict[str, str] = field(default_factory=dict)

    @property
    def too_many(self) -> bool:
        """More changed files than a run should quietly leave out (the dataset's unreadable-file limit)."""
        return len(self.changed) > max(5, self.checked // 100)

    def warnings(self, root: Path, manifest_name: str = MANIFEST_FILE) -> list[str]:
        return [f"{shown(root / path)} changed since the dataset scan ({why}; recorded in {manifest_name}): "
                "left out" for path, why in self.changed.items()]

    def error(self, root: Path, manifest_name: str = MANIFEST_FILE) -> str:
        some = ", ".join(shown(p) for p in list(self.changed)[:3])
        return (f"{len(self.changed)} of {self.checked} images under {shown(root)} changed since the dataset scan "
                f"(e.g. {some}): the dataset is no longer the one {manifest_name} describes. Restore the files, "
                "or start a new run directory to re-scan the dataset.")


def check_files(root: str | Path, records) -> FileCheck:
    """Compare each file with its manifest record: size and mtime first, sha256 only when they differ.

    A missing or unreadable file is not listed (the readers report it when they try to open it); a file of
    another size, or of the same size with other bytes, is. Costs one `stat` per file, plus a hash of the files
    whose mtime moved (every file, once per reuse, for manifests of older runs, which have no mtime).
    """
    root = Path(root)
    records = list(records)
    found = FileCheck(len(records))
    for r in records:
        path = root / r.path
        try:
            st = path.stat()
        except OSError:
            continue
        if st.st_size != r.bytes:
            found.changed[r.path] = f"{st.st_size} bytes, {r.bytes} when scanned"
        elif r.sha256 and (r.mtime_ns is None or st.st_mtime_ns != r.mtime_ns):
            try:
                digest = sha256_file(path)
            except OSError:
                continue
            if digest != r.sha256:
                found.changed[r.path] = "same size, other content: its sha256 differs"
    return found
