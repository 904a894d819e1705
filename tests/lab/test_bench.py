"""`scripts/bench.py --quick` runs end to end and writes a well-formed bench.json; speed is never asserted.

The bench's own arithmetic (throughput clock, targets) and the Keras recipe's mapping of the augmentation
amounts are checked directly, without running the frameworks.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from lit_garbage.data.transforms import Augment
from references.bench import (
    OURS,
    TARGETS,
    _targets,
    build_parser,
    cpu_per_image,
    throughput,
)

REPO = Path(__file__).resolve().parents[2]


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=1500, cwd=REPO, check=False)
    assert proc.returncode == 0, f"bench --quick failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "ours / Keras" in proc.stdout  # the table was printed
    return json.loads(out.read_text())


@pytest.mark.slow
def test_quick_bench_writes_every_side_by_side_measure(quick_bench):
    r = quick_bench
    assert r["schema_version"] == 1 and r["quick"] is True
    assert r["data"]["generated"] is True and r["data"]["train_images"] > 0
    assert r["settings"]["batch_size"] == 32 and r["settings"]["threads"] >= 1 and r["settings"]["workers"] >= 1
    for section in ("pipeline", "training"):
        for side in ("ours", "keras"):
            m = r[section][side]
            assert _positive(m["images_per_s"]) and _positive(m["seconds"]) and _positive(m["images"]), (section, side)
        assert _positive(r[section]["ratio"])
    # The pipeline is measured with the decoded-image cache (the default) and without it.
    assert r["pipeline"]["ours"]["cache"] is True and r["pipeline"]["ours_uncached"]["cache"] is False
    assert _positive(r["pipeline"]["ours_uncached"]["images_per_s"]) and _positive(r["pipeline"]["ratio_uncached"])
    assert r["training"]["ours"]["cache"] is True and r["settings"]["cache"] == "auto"
    assert r["training"]["ours"]["channels_last"] is True  # the model's speed switch reaches the bench
    assert _positive(r["training"]["cpu_ratio"])
    for side in ("ours", "keras"):
        assert _positive(r["training"][side]["cpu_ms_per_image"])
    for side in ("ours", "keras"):
        assert _positive(r["training"][side]["peak_rss_mb"]) and _positive(r["training"][side]["peak_tree_pss_mb"])
        assert r["training"][side]["steps"] == r["settings"]["train_steps"]
    # Same architecture and freezing on both sides: the seed's 30 Keras layers = 21 weighted timm layers.
    assert r["training"]["ours"]["trainable_params"] == r["training"]["keras"]["trainable_params"]
    assert r["settings"]["model"]["keras_compat"] is True  # Keras's padding and BatchNorm: the same graph
    assert _positive(r["training"]["memory_ratio"])


@pytest.mark.slow
def test_quick_bench_times_every_inference_backend_and_the_export(quick_bench):
    inf = quick_bench["inference"]
    keras = inf["keras_tflite_float32"]
    assert _positive(keras["median_ms"]) and keras["runs"] >= 50
    for name in OURS:
        if name == "tfjs":
            continue  # see the next test
        b = inf["ours"][name]
        assert _positive(b["median_ms"]) and _positive(b["p10_ms"]) and b["runs"] >= 50, name
        assert _positive(inf["ratio_vs_keras"][name]), name
    assert _positive(inf["int8_vs_our_fp32"])
    pair = inf["tflite_pair"]  # the target's ratio: our float32 TFLite and Keras's, alone in their process
    for side in ("ours", "keras"):
        assert _positive(pair[side]["median_ms"]) and _positive(pair[side]["p10_ms"]) and pair[side]["runs"] >= 50
    assert pair["ratio"] == pytest.approx(pair["ours"]["median_ms"] / pair["keras"]["median_ms"])
    assert 0 <= inf["agreement"]["int8_vs_fp32_top1"] <= 1
    e = quick_bench["export"]
    assert _positive(e["seconds"]) and _positive(e["wall_s"]) and _positive(e["keras_tflite_convert_s"])
    assert set(e["formats"]) == {"onnx", "saved_model", "tflite", "int8", "tfjs"}
    assert [t["name"] for t in quick_bench["targets"]] == list(TARGETS)
    assert all(isinstance(t["met"], bool) for t in quick_bench["targets"])


def test_throughput_clock_starts_after_warmup():
    stamps = [10.0, 11.0, 13.0, 14.0]  # step end times
    r = throughput(stamps, [32, 32, 32, 12], warmup=1)
    assert r["images"] == 76 and r["steps"] == 3
    assert r["seconds"] == pytest.approx(4.0) and r["images_per_s"] == pytest.approx(76 / 4)
    assert r["step_ms_median"] == pytest.approx(1000.0)


def test_cpu_time_per_image_after_warmup():
    cpu = [(1.0, 0.5), (3.0, 1.0), (4.0, 1.5), (5.0, 2.5)]  # (main, workers) CPU seconds at each step end
    r = cpu_per_image(cpu, [32, 32, 32, 16], warmup=1)
    assert r["cpu_ms_per_image_main"] == pytest.approx(1000 * 4.0 / 80)
    assert r["cpu_ms_per_image_workers"] == pytest.approx(1000 * 2.0 / 80)
    assert r["cpu_ms_per_image"] == pytest.approx(1000 * 6.0 / 80)


def test_targets_compare_in_the_right_direction():
    result = {"pipeline": {"ratio": 3.2}, "training": {"ratio": 1.2},
              "inference": {"tflite_pair": {"ratio": 1.0}, "int8_vs_our_fp32": 0.7,
                            "agreement": {"int8_vs_fp32_top1": 0.99}}}
    met = {t["name"]: t["met"] for t in _targets(result)}
    assert met == {"pipeline": True, "training": False, "tflite_float32": True, "int8_vs_our_fp32": False,
                   "int8_top1_agreement": True}


def test_keras_generator_uses_the_projects_augmentation_amounts():
    pytest.importorskip("tf_keras")
    from references.keras_recipe import image_data_generator

    aug = Augment(rotation=12.0, shift=0.1, shear=7.0, zoom=0.3, channel_shift=10 / 255, brightness=(0.7, 1.1))
    gen = image_data_generator(aug)
    assert gen.rotation_range == 12.0
    assert gen.width_shift_range == gen.height_shift_range == 0.1
    assert gen.shear_range == 7.0
    assert list(gen.zoom_range) == pytest.approx([0.7, 1.3])
    assert gen.channel_shift_range == pytest.approx(10.0)  # Keras counts 0-255 pixel units
    assert list(gen.brightness_range) == [0.7, 1.1]
    assert gen.horizontal_flip is True and gen.rescale == pytest.approx(1 / 255)
    plain = image_data_generator(Augment(enabled=False))
    assert plain.rotation_range == 0 and not plain.horizontal_flip


def test_bench_cli_defaults():
    args = build_parser().parse_args([])
    assert args.quick is False and args.out == Path("bench.json") and args.repeats == 1


def test_gpu_bench_script_runs_on_the_cpu_and_writes_its_table(tmp_path):
    """`scripts/bench_gpu.py` is measured on a GPU; here its code path runs on the CPU (`--device cpu`)."""
    out = tmp_path / "bench_gpu.json"
    cmd = [sys.executable, str(REPO / "scripts" / "bench_gpu.py"), "--device", "cpu", "--per-class", "12",
           "--image-size", "32", "--warmup", "1", "--steps", "2", "--rows", "1,3", "--workers", "1",
           "--loader-batches", "2", "--workdir", str(tmp_path / "work"), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    names = [r["name"] for r in result["rows"]]
    assert names == ["loader only, cpu augmentation", "loader only, device augmentation",
                     "seed as written (fp32, batch 32, CPU augmentation)", "bf16, batch 32, GPU augmentation"]
    assert all(_positive(r["images_per_s"]) for r in result["rows"])
    assert [r.get("augmented_on") for r in result["rows"][2:]] == ["cpu", "device"]
    assert "images/s" in proc.stdout


def test_gpu_bench_without_a_gpu_says_so(tmp_path, monkeypatch):
    import torch

    from references import bench_gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_gpu.main(["--out", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()
