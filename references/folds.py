"""Cross-validation folds: sklearn's `StratifiedGroupKFold` over a scanned manifest, one split manifest per fold.

Stratified by class; the scan's duplicate groups (exact and near duplicates) are the groups, so no group
straddles two folds. Run `i` tests on fold `i`, validates on fold `i + 1 (mod k)` and trains on the others:
every image is tested once and validates once over the k runs.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from lit_garbage.runs import DUPLICATES_FILE, MANIFEST_FILE


def fold_of_records(records: Sequence, k: int, seed: int = 0) -> list[int]:
    """The fold (0 .. k-1) of every record: stratified by label, duplicate groups kept in one fold."""
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    labels = [r.label for r in records]
    groups = [r.group or f"single-{i}" for i, r in enumerate(records)]
    folds = [-1] * len(records)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, test) in enumerate(splitter.split(np.zeros(len(records)), labels, groups)):
        for i in test:
            folds[i] = fold
    return folds


def fold_split(fold: int, test_fold: int, k: int) -> str:
    """Run `test_fold` tests on its fold, validates on the next one (mod k) and trains on the others."""
    return "test" if fold == test_fold else "val" if fold == (test_fold + 1) % k else "train"


def write_folds(manifest, base_dir: Path, out: Path, k: int, seed: int = 0) -> list[Path]:
    """One split manifest per fold in `out` (`fold<i>.csv`, with its `duplicates.csv` beside it in
    `fold<i>/`); existing files are reused. Returns the k manifest paths."""
    from lit_garbage.data.manifest import Duplicate, Manifest

    paths = [out / f"fold{i}" / MANIFEST_FILE for i in range(k)]
    if all(p.is_file() for p in paths):
        return paths
    folds = fold_of_records(manifest.records, k, seed)
    fold_by_path = {r.path: f for r, f in zip(manifest.records, folds)}
    dups = []
    if (base_dir / DUPLICATES_FILE).is_file():
        with (base_dir / DUPLICATES_FILE).open(newline="") as fh:
            dups = list(csv.DictReader(fh))
    for i, path in enumerate(paths):
        records = tuple(replace(r, split=fold_split(f, i, k)) for r, f in zip(manifest.records, folds))
        duplicates = tuple(Duplicate(d["group"], d["kind"], d["path"], d["label"],
                                     fold_split(fold_by_path[d["path"]], i, k) if d["path"] in fold_by_path
                                     else d["split"]) for d in dups)
        Manifest(manifest.class_names, records, duplicates=duplicates).write(path)
    return paths
