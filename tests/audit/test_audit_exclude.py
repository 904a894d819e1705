"""`fit --data.exclude FILE`: the listed photos are left out of every split, the others keep their splits, no file is
touched."""

from __future__ import annotations

import csv

import pytest

from lit_garbage.data.datamodule import GarbageDataModule
from lit_garbage.data.manifest import DatasetError, build_manifest, read_exclude_list


def test_listed_photos_are_left_out_and_the_rest_keep_their_splits(data_copy, tmp_path):
    full = {r.path: r.split for r in build_manifest(data_copy).records}
    listed = sorted(full)[::9]
    # the audit's label_issues.csv as it is written: a `path` column among others
    issues = tmp_path / "label_issues.csv"
    with issues.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "path", "given_label", "suggested_label"])
        w.writerows([[n, p, "x", "y"] for n, p in enumerate(listed, 1)])
    before = sorted(p.name for p in data_copy.rglob("*"))
    dm = GarbageDataModule(str(data_copy), manifest=str(tmp_path / "split.csv"), exclude=str(issues), cache="none")
    kept = {r.path: r.split for r in dm.manifest.records}
    assert set(kept) == set(full) - set(listed)
    assert all(kept[p] == full[p] for p in kept)  # the same split as without the list
    assert sorted(p.name for p in data_copy.rglob("*")) == before  # nothing moved or deleted
    # the written split manifest holds the same photos, so evaluate and a resumed run see them as fit did
    reread = GarbageDataModule(str(data_copy), manifest=str(tmp_path / "split.csv"), cache="none")
    assert {r.path for r in reread.manifest.records} == set(kept)


def test_plain_lists_comments_and_missing_files(tmp_path):
    plain = tmp_path / "exclude.txt"
    plain.write_text("# checked by hand\nglass/a.jpg\n\n./metal/b.jpg\n")
    assert read_exclude_list(plain) == {"glass/a.jpg", "metal/b.jpg"}
    with pytest.raises(DatasetError, match="cannot read the exclude list"):
        read_exclude_list(tmp_path / "missing.txt")
