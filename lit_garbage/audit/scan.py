"""What the dataset scan knows about a folder, and twins between two folders, from `lit_garbage.data.manifest`.

The scan (`scan_image_folder`: every file decoded, sha256 and perceptual hash) and its duplicate groups
(`duplicate_groups`: equal bytes, or hashes a few bits apart) are the ones `fit` uses; no split is made here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lit_garbage.data.manifest import Skipped, duplicate_groups, scan_image_folder

NEAR_DISTANCE = 4  # the scan's default: bits of 64 at or below which two perceptual hashes are near duplicates


@dataclass
class Scanned:
    root: Path
    class_names: list[str]
    paths: list[str]  # readable photos, relative to root
    labels: np.ndarray  # class index per photo
    sha256: list[str]
    phash: list[str]
    skipped: list[Skipped]


def scan(root: str | Path) -> Scanned:
    root = Path(root)
    class_names, items, skipped = scan_image_folder(root)
    index = {name: i for i, name in enumerate(class_names)}
    return Scanned(root, class_names, [p.relative_to(root).as_posix() for p, _, _ in items],
                   np.array([index[label] for _, label, _ in items], dtype=np.int64),
                   [pr.sha256 for _, _, pr in items], [pr.phash for _, _, pr in items], list(skipped))


def duplicates(s: Scanned, near_distance: int | None = NEAR_DISTANCE) -> list[dict]:
    """Duplicate groups: kind (exact / near), member photos with their labels, whether the labels disagree."""
    groups = duplicate_groups(s.sha256, s.phash, near_distance)
    out = []
    for n, (idx, kind) in enumerate(groups):
        labels = [s.class_names[s.labels[i]] for i in idx]
        out.append({"group": f"g{n:05d}", "kind": kind, "paths": [s.paths[i] for i in idx], "labels": labels,
                    "across_classes": len(set(labels)) > 1})
    return out


def group_ids(s: Scanned, groups: list[dict]) -> np.ndarray:
    """A group number per photo (its duplicate group, else a number of its own): folds keep twins together."""
    ids = np.arange(len(s.paths))
    where = {p: i for i, p in enumerate(s.paths)}
    for n, g in enumerate(groups):
        ids[[where[p] for p in g["paths"]]] = len(s.paths) + n
    return ids


def twins_between(data: Scanned, other: Scanned, near_distance: int | None = NEAR_DISTANCE) -> list[dict]:
    """Photos of `other` with an exact or near twin in `data`: one row per (other photo, data photo) pair."""
    n = len(data.paths)
    groups = duplicate_groups(data.sha256 + other.sha256, data.phash + other.phash, near_distance)
    pairs = []
    for idx, _ in groups:
        mine = [i for i in idx if i < n]
        theirs = [i - n for i in idx if i >= n]
        for j in theirs:
            for i in mine:
                exact = data.sha256[i] == other.sha256[j]
                pairs.append({"other": other.paths[j], "other_label": other.class_names[other.labels[j]],
                              "data": data.paths[i], "data_label": data.class_names[data.labels[i]],
                              "kind": "exact" if exact else "near", "distance": _distance(data.phash[i], other.phash[j])})
    return pairs


def _distance(a: str, b: str) -> int | None:
    return (int(a, 16) ^ int(b, 16)).bit_count() if a and b else None


def class_balance(s: Scanned) -> dict:
    counts = Counter(int(c) for c in s.labels)
    per = {name: counts.get(i, 0) for i, name in enumerate(s.class_names)}
    return {"per_class": per, "largest_to_smallest": round(max(per.values()) / max(1, min(per.values())), 2)}


def size_facts(sizes: np.ndarray) -> dict:
    if not len(sizes):
        return {}
    short = sizes.min(1)
    common = Counter(f"{w}x{h}" for w, h in sizes.tolist()).most_common(5)
    return {"width": _spread(sizes[:, 0]), "height": _spread(sizes[:, 1]), "distinct_sizes": len(set(map(tuple, sizes.tolist()))),
            "most_common": dict(common), "short_side_below_224": int((short < 224).sum())}


def _spread(v: np.ndarray) -> dict:
    return {"min": int(v.min()), "median": int(np.median(v)), "max": int(v.max())}


def border_facts(paths: list[str], borders: np.ndarray, at_least: float) -> dict:
    """Letterbox (flat bands top and bottom), pillarbox (left and right), frames (all four), other flat edges."""
    if not len(borders):
        return {"letterbox": 0, "pillarbox": 0, "frame": 0, "one_edge": 0, "examples": {}}
    b = borders >= at_least
    uniform = (borders >= 0.999).any(1)  # a flat image (blank frame): every edge "flat"
    tb, lr = b[:, 0] & b[:, 1], b[:, 2] & b[:, 3]
    kinds = {"frame": tb & lr & ~uniform, "letterbox": tb & ~lr & ~uniform, "pillarbox": lr & ~tb & ~uniform,
             "one_edge": b.any(1) & ~tb & ~lr & ~uniform, "blank": uniform}
    return {**{k: int(v.sum()) for k, v in kinds.items()},
            "examples": {k: [paths[i] for i in np.flatnonzero(v)[:5]] for k, v in kinds.items() if v.any()}}
