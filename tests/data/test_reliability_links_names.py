"""Reliability: the dataset scan follows each folder once (links, loops, bind mounts), counts every photo once, and
keeps file names whatever their bytes, through fit, resume, evaluate, export and predict."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from collections import Counter

import pytest

from tests.reliability_support import (
    add_non_utf8_photo,
    call_main,
    can_mount,
    in_mount_namespace,
    run_bounded,
)

BAD_NAME = b"caf\xe9 photo.jpg"  # Latin-1 bytes, as zip archives made on Windows often leave them


def _manifest(root, **kw):
    from lit_garbage.data.manifest import build_manifest

    return build_manifest(root, near_duplicate_distance=None, **kw)


# ------------------------------------------------------------------ links


def test_a_symlink_loop_is_reported_once_and_images_are_counted_once(data_copy):
    os.symlink(".", data_copy / "battery" / "again")
    m = _manifest(data_copy)
    battery = [r for r in m.records if r.label == "battery"]
    assert len(battery) == 14, f"14 battery photos counted as {len(battery)} (the link was followed repeatedly)"
    loops = [s for s in m.skipped if s.path.startswith("battery/again")]
    assert len(loops) == 1 and "loop" in loops[0].reason.lower(), [(s.path, s.reason) for s in m.skipped]


def test_the_test_split_is_not_filled_with_copies_through_a_loop(data_copy):
    os.symlink(".", data_copy / "battery" / "again")
    m = _manifest(data_copy)
    files = Counter((r.label, r.sha256) for r in m.split("test"))
    assert max(files.values()) == 1, f"one photo appears {max(files.values())} times in the test split"


def test_two_symlink_loops_do_not_explode(data_copy):
    """Two loops make an unguarded walk exponential: minutes of scanning and gigabytes of paths."""
    os.symlink(".", data_copy / "battery" / "again")
    os.symlink("..", data_copy / "battery" / "up")
    code = ("from lit_garbage.data.manifest import build_manifest; "
            f"m = build_manifest({str(data_copy)!r}, near_duplicate_distance=None); print(len(m.records))")
    rc, why, out = run_bounded([sys.executable, "-c", code], seconds=60, max_rss_mb=2000)
    assert not why, f"the scan of a root with two link loops was killed: {why}"
    assert rc == 0 and out.strip().splitlines()[-1] == "140", out[-1500:]


def test_a_link_to_another_class_folder_does_not_give_its_images_a_second_label(data_copy):
    os.symlink("../clothes", data_copy / "battery" / "more")
    m = _manifest(data_copy)
    real = Counter(os.path.realpath(data_copy / r.path) for r in m.records)
    twice = [p for p, n in real.items() if n > 1]
    assert not twice, f"{len(twice)} files are in the manifest twice (under battery/more and clothes)"
    rows = [s for s in m.skipped if s.path == "battery/more"]
    assert rows and "clothes" in rows[0].reason, [(s.path, s.reason) for s in m.skipped]


def test_a_file_link_into_another_class_counts_once_where_the_file_is(data_copy):
    target = sorted((data_copy / "clothes").iterdir())[0]
    os.symlink(f"../clothes/{target.name}", data_copy / "battery" / "borrowed.jpg")
    m = _manifest(data_copy)
    labels = [r.label for r in m.records if os.path.realpath(data_copy / r.path) == str(target)]
    assert labels == ["clothes"], labels
    assert any(s.path == "battery/borrowed.jpg" for s in m.skipped)


def test_the_same_outside_folder_linked_twice_is_scanned_once(data_copy, tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    for i, src in enumerate(sorted((data_copy / "battery").iterdir())[:3]):
        shutil.copy(src, pool / f"extra_{i}.jpg")
    os.symlink(pool, data_copy / "battery" / "pool_a")
    os.symlink(pool, data_copy / "battery" / "pool_b")
    m = _manifest(data_copy)
    assert len([r for r in m.records if r.label == "battery"]) == 14 + 3
    assert [s.path for s in m.skipped if "already scanned" in s.reason] == ["battery/pool_b"]


def test_a_class_folder_that_is_a_link_to_another_class_folder_is_refused(data_copy):
    """ROOT/clothes_alias -> clothes: the same photos under two class names."""
    from lit_garbage.data.manifest import DatasetError

    os.symlink("clothes", data_copy / "clothes_alias")
    with pytest.raises(DatasetError, match="clothes_alias.*same folder"):
        _manifest(data_copy)


def test_fifos_and_devices_named_like_images_are_skipped_as_what_they_are(data_copy):
    os.mkfifo(data_copy / "battery" / "pipe.jpg")
    os.symlink("/dev/zero", data_copy / "battery" / "zero.jpg")
    m = _manifest(data_copy)
    reasons = {s.path: s.reason for s in m.skipped}
    assert "FIFO" in reasons["battery/pipe.jpg"] and "device" in reasons["battery/zero.jpg"], reasons


@pytest.mark.skipif(not can_mount(), reason="needs a private mount namespace (unshare -m)")
def test_a_bind_mount_loop_is_caught_like_a_link_loop(data_copy):
    """mount --bind DATA DATA/battery/loop: no link anywhere, the same folder by (device, inode)."""
    (data_copy / "battery" / "loop").mkdir()
    script = (f"mount --bind {data_copy} {data_copy}/battery/loop && {sys.executable} -c "
              f"\"from lit_garbage.data.manifest import build_manifest; "
              f"m = build_manifest('{data_copy}', near_duplicate_distance=None); "
              "print(len(m.records)); print([s.reason for s in m.skipped])\"")
    done = in_mount_namespace(script, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    count, reasons = done.stdout.strip().splitlines()[-2:]
    assert count == "140" and "loop" in reasons, done.stdout[-1500:]


@pytest.mark.slow
def test_evaluate_split_all_survives_symlink_loops(data_copy, tiny_run, tmp_path):
    """`evaluate --split all --data.root ROOT` scans the folder with the same walk."""
    os.symlink(".", data_copy / "battery" / "again")
    os.symlink("..", data_copy / "battery" / "up")
    code = ("import sys; from lit_garbage.commands.evaluate import main; "
            f"sys.exit(main(['--model', {str(tiny_run / 'model.ckpt')!r}, '--data.root', {str(data_copy)!r}, "
            f"'--split', 'all', '--out', {str(tmp_path / 'eval')!r}]))")
    rc, why, out = run_bounded([sys.executable, "-c", code], seconds=120, max_rss_mb=2500)
    assert not why, f"evaluate --split all on a root with two link loops was killed: {why}"
    assert rc == 0, out[-1500:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["splits"][0]["images"] == 140, metrics["splits"][0]["images"]


# ------------------------------------------------------------------ names that are not UTF-8


def test_a_non_utf8_file_name_survives_the_manifest(data_copy, tmp_path):
    from lit_garbage.data.manifest import Manifest

    add_non_utf8_photo(data_copy, BAD_NAME)
    m = _manifest(data_copy)
    m.write(tmp_path / "split.csv")
    back = Manifest.read(tmp_path / "split.csv")
    kept = [r for r in back.records if r.path.startswith("battery/caf")]
    assert len(kept) == 1, [r.path for r in back.records if "caf" in r.path]
    assert (data_copy / kept[0].path).is_file(), kept[0].path  # the kept path opens the very file
    assert os.fsencode(kept[0].path) == b"battery/" + BAD_NAME
    assert back == Manifest(m.class_names, m.records)


def test_a_class_folder_name_that_is_not_utf8_is_refused_by_name(data_copy, tmp_path):
    """Class names travel into the checkpoint, labels.txt, metadata.json and the browser demo: a folder name that
    is not text cannot be a class name; the refusal shows it escaped."""
    from lit_garbage.data.manifest import DatasetError, load_or_build_manifest

    os.rename(data_copy / "glass", os.path.join(os.fsencode(data_copy), b"caf\xe9"))
    with pytest.raises(DatasetError, match=r"caf\\xe9"):
        load_or_build_manifest(data_copy, tmp_path / "split.csv")


def test_predict_csv_and_json_with_a_non_utf8_file_name(tiny_run, synthetic_root, tmp_path, capsys):
    from lit_garbage.commands.predict import main

    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(next((synthetic_root / "battery").iterdir()), os.path.join(os.fsencode(folder), b"\xff\xfe.jpg"))
    out, js = tmp_path / "p.csv", tmp_path / "p.json"
    outcome = call_main(main, ["--model", str(tiny_run / "model.ckpt"), str(folder), "--csv", str(out),
                               "--json", str(js)])
    assert outcome == ("returned", 0), f"{outcome}"
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    assert len(rows) == 1 and rows[0]["label_1"] and rows[0]["path"].endswith("\\xff\\xfe.jpg"), rows
    entry = json.loads(js.read_text())["models"][str(tiny_run / "model.ckpt")]["predictions"][0]
    assert os.path.isfile(entry["path"])  # JSON keeps the exact name: it opens the file
    assert "\\xff\\xfe.jpg" in capsys.readouterr().out  # the table shows it escaped


def test_a_failed_predict_csv_leaves_no_half_written_file(tiny_run, synthetic_root, tmp_path, monkeypatch,
                                                          capsys):
    from lit_garbage.commands.predict import main
    from lit_garbage.serve import predict

    out = tmp_path / "p.csv"
    out.write_text("the previous predictions\n")
    real = predict.csv.writer

    def breaks_midway(f):
        w = real(f)
        calls = {"n": 0}

        class Writer:
            def writerow(self, row):
                calls["n"] += 1
                if calls["n"] == 2:
                    raise OSError(28, "No space left on device")
                w.writerow(row)
        return Writer()

    monkeypatch.setattr(predict.csv, "writer", breaks_midway)
    code = main(["--model", str(tiny_run / "model.ckpt"), str(synthetic_root / "battery"), "--csv", str(out), "--quiet"])
    assert code == 2 and "No space left on device" in capsys.readouterr().err
    assert out.read_text() == "the previous predictions\n"
    assert [p.name for p in tmp_path.iterdir()] == ["p.csv"]
