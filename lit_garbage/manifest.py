"""Scanning an ImageFolder root and the split manifest that every later step reuses.

The manifest (CSV: path, label, split, bytes, sha256) is the single record of which file is in
which split; training, resume, evaluation and export all read it instead of re-splitting.
"""

from __future__ import annotations

import csv
import hashlib
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.utils.class_weight import compute_class_weight
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

SPLITS = ("train", "val", "test")
FIELDS = ("path", "label", "split", "bytes", "sha256")


class DatasetError(ValueError):
    """The dataset root or its manifest cannot be used; the message says what to do."""


@dataclass(frozen=True)
class Record:
    path: str  # relative to the dataset root, POSIX separators
    label: str
    split: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    class_names: tuple[str, ...]
    records: tuple[Record, ...]

    def split(self, name: str) -> list[Record]:
        return [r for r in self.records if r.split == name]

    def counts(self, split: str) -> dict[str, int]:
        c = Counter(r.label for r in self.split(split))
        return {name: c.get(name, 0) for name in self.class_names}

    def class_weights(self) -> list[float]:
        """Keras/sklearn "balanced" weights from the train split: n_samples / (n_classes * count_c)."""
        labels = [r.label for r in self.split("train")]
        classes = np.array(self.class_names)
        return compute_class_weight("balanced", classes=classes, y=np.array(labels)).tolist()

    def write(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Atomic: other processes (DDP ranks, a later resume) never see a half-written file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(FIELDS)
            for r in self.records:
                writer.writerow([r.path, r.label, r.split, r.bytes, r.sha256])
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: str | Path, class_names: list[str] | None = None) -> "Manifest":
        path = Path(path)
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != FIELDS:
                raise DatasetError(f"{path} is not a split manifest (expected columns {', '.join(FIELDS)})")
            records = tuple(Record(r["path"], r["label"], r["split"], int(r["bytes"]), r["sha256"]) for r in reader)
        names = tuple(class_names or sorted({r.label for r in records}))
        return cls(names, records)


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def scan_image_folder(root: str | Path) -> tuple[list[str], list[tuple[Path, str]]]:
    """Class names (sorted folder names) and (file, class) pairs of an ImageFolder-style root."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"dataset root {root} does not exist or is not a folder. Point --data.root at a folder "
            "with one sub-folder per class (e.g. the Kaggle 'Garbage Classification v2' folder), or "
            "generate the small demo set with `python -m lit_garbage.synthetic data/synthetic`."
        )
    try:
        class_names, class_to_idx = find_classes(root)
    except FileNotFoundError as err:
        raise DatasetError(f"dataset root {root} has no class sub-folders: {err}") from None
    samples = make_dataset(root, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    found = Counter(idx for _, idx in samples)
    empty = [name for name, idx in class_to_idx.items() if found[idx] == 0]
    if empty:
        raise DatasetError(
            f"class folder(s) without images under {root}: {', '.join(empty)} "
            f"(image extensions: {', '.join(IMG_EXTENSIONS)}). Add images or remove the folder(s)."
        )
    if len(class_names) < 2:
        raise DatasetError(f"{root} holds {len(class_names)} class folder(s); a classifier needs at least 2")
    return class_names, [(Path(p), class_names[idx]) for p, idx in samples]


def stratified_split(labels: list[str], fractions: tuple[float, float, float], seed: int) -> list[str]:
    """Assign each index to train/val/test, stratified by label, deterministic for a seed."""
    train_f, val_f, test_f = fractions
    if min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise DatasetError(f"split fractions must be positive and sum to 1, got {fractions}")
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
            f"Images per class: {counts}. Each class needs enough images for every split "
            "(in practice at least 7, and validation/test need at least one image per class)."
        ) from None
    out = [""] * len(labels)
    for name, part in zip(SPLITS, (train, val, test)):
        for i in part:
            out[i] = name
    return out


def build_manifest(root: str | Path, fractions=(0.7, 0.15, 0.15), seed: int = 42) -> Manifest:
    root = Path(root)
    class_names, samples = scan_image_folder(root)
    splits = stratified_split([label for _, label in samples], fractions, seed)
    records = tuple(
        Record(path.relative_to(root).as_posix(), label, split, path.stat().st_size, sha256_file(path))
        for (path, label), split in zip(samples, splits)
    )
    return Manifest(tuple(class_names), records)


def load_or_build_manifest(root: str | Path, path: str | Path | None, fractions=(0.7, 0.15, 0.15),
                           seed: int = 42) -> Manifest:
    """Reuse the manifest at `path` when it exists (and matches the root's classes); else build and write it."""
    if path is not None and Path(path).is_file():
        manifest = Manifest.read(path)
        root_classes, _ = scan_image_folder(root)
        if list(manifest.class_names) != root_classes:
            raise DatasetError(
                f"the split manifest {path} lists classes {list(manifest.class_names)} but {root} has "
                f"{root_classes}; use the dataset the run was made with, or start a new run directory."
            )
        return manifest
    manifest = build_manifest(root, fractions, seed)
    if path is not None:
        manifest.write(path)
    return manifest


def file_hash(path: str | Path) -> str:
    """Content hash of a whole file (manifests, checkpoints) for export metadata."""
    return sha256_file(Path(path))
