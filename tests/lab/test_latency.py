"""`python -m references.latency`: real runtimes timed side by side on the suite's exported model."""

from __future__ import annotations

import json

import pytest

from references import latency


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """A checkpoint timed with `--threads N` sets torch's process-wide thread count: the tests after these keep
    the count they would have had (a gradient check in the lab tests moves past its bound with another one)."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_files_are_timed_side_by_side_with_ratios_to_the_first(tiny_export, tmp_path, capsys):
    out = tiny_export["out"]
    files = [out / "model_float32.tflite", out / "model_int8.tflite", out / "model.onnx", tiny_export["ckpt"]]
    code = latency.main([*map(str, files), "--rounds", "3", "--per-round", "2", "--json", str(tmp_path / "l.json")])
    assert code == 0
    rows = json.loads((tmp_path / "l.json").read_text())
    assert [r["file"] for r in rows] == [str(f) for f in files]
    assert rows[0]["ratio"] == 1.0 and rows[0]["statistic"] == "cpu"  # one thread: CPU time per image
    for row in rows:
        assert row["wall_ms"] > 0 and row["cpu_ms"] > 0 and row["rounds"] == 3 and row["per_round"] == 2
        assert row["ratio"] == pytest.approx(row["cpu_ms"] / rows[0]["cpu_ms"])
    assert rows[1]["mb"] < rows[0]["mb"]  # the int8 file is the smaller one
    shown = capsys.readouterr().out
    assert "model_int8.tflite" in shown and "1 thread(s)" in shown and "x first (cpu)" in shown


def test_more_threads_compare_by_wall_time(tiny_export):
    out = tiny_export["out"]
    rows = latency.measure([out / "model_float32.tflite", out / "model_float16.tflite"], threads=2, rounds=2,
                           per_round=2)
    assert all(r["statistic"] == "wall" and r["threads"] == 2 for r in rows)
    assert rows[1]["ratio"] == pytest.approx(rows[1]["wall_ms"] / rows[0]["wall_ms"])


def test_what_cannot_be_timed_here_is_refused_clearly(tiny_export, tmp_path, capsys):
    out = tiny_export["out"]
    assert latency.main([str(out / "model_float32.tflite"), str(out / "tfjs")]) == 2
    assert "runs outside this process" in capsys.readouterr().err
    assert latency.main([str(tmp_path / "missing.tflite")]) == 2
    assert "not found" in capsys.readouterr().err
    assert latency.main([str(out / "model_float32.tflite"), "--rounds", "0"]) == 2
    assert "must be >= 1" in capsys.readouterr().err
