"""`lit-garbage parity`: every format of a real (tiny) export scored on the same photos, one table."""

from __future__ import annotations

import json

from lit_garbage.commands import parity
from lit_garbage.formats import FORMATS


def test_every_format_is_scored_on_the_same_photos_against_torch(tiny_export, tmp_path, capsys):
    assert parity.main(["--export", str(tiny_export["out"]), "--out", str(tmp_path)]) == 0
    table = json.loads((tmp_path / "parity.json").read_text())
    rows = {r["format"]: r for r in table["rows"]}
    present = {fmt for fmt, row in FORMATS.items() if (tiny_export["out"] / row.file).exists()}
    assert set(rows) == {"torch", "mediapipe (int8 file alone)"} | present
    assert {"onnx", "saved_model", "tflite_float32", "tflite_float16", "tflite_int8", "tfjs"} <= present
    torch_row = rows["torch"]
    # The torch row is the run's own test accuracy; every row saw the same photos.
    assert abs(torch_row["accuracy"] - tiny_export["results"]["test_acc"]) < 1e-6
    assert torch_row["agreement_with_torch"] == 1.0
    assert len({r["images"] for r in rows.values()}) == 1
    for fmt in ("onnx", "saved_model", "tflite_float32", "tfjs"):  # float32 arithmetic: the same answers
        assert rows[fmt]["agreement_with_torch"] == 1.0, fmt
        assert rows[fmt]["accuracy"] == torch_row["accuracy"], fmt
    assert rows["tflite_int8"]["agreement_with_torch"] >= 0.9
    assert rows["mediapipe (int8 file alone)"]["agreement_with_torch"] >= 0.8
    assert all(r["size_bytes"] > 0 and r["latency_ms"] > 0 for r in rows.values())
    assert rows["tflite_int8"]["size_bytes"] < rows["tflite_float32"]["size_bytes"] / 3
    # TFJS: model.json and its weight shards, about the float32 weights' size.
    assert rows["tfjs"]["size_bytes"] > rows["tflite_float32"]["size_bytes"] / 2
    # One Markdown table, printed and written.
    assert (tmp_path / "parity.md").read_text() in capsys.readouterr().out
    assert (tmp_path / "tflite_int8" / "report.md").is_file()


def test_a_folder_without_model_files_is_refused_in_one_line(tmp_path, capsys):
    assert parity.main(["--export", str(tmp_path)]) == 2
    assert "holds no model file" in capsys.readouterr().err


def test_threads_are_bounded_like_every_runtime_option(tmp_path, capsys):
    assert parity.main(["--export", str(tmp_path), "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err
