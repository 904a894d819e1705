"""Verification that means something: each file against its own reference, and broken exports caught by name.

One small trained model (pretrained=False, 64 px) is exported once to ONNX + TFLite fp32/fp16 (`sound`); the
tests then verify corrupted copies of that export with the real runtimes (onnxruntime, LiteRT) and check
that each fails with a message naming its fault. The fp16 reference, the Conv -> BatchNorm pairing and the
margin-aware top-1 are checked on their own as well.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from lit_garbage.export import references
from lit_garbage.export.config import ExportConfig
from lit_garbage.export.exporter import Exporter
from lit_garbage.export.onnx import export_onnx
from lit_garbage.export.references import (
    FP16_MAX_ABS_DIFF,
    FP32_MAX_ABS_DIFF,
    fp16_reference,
    rounded_to_fp16,
)
from lit_garbage.export.samples import run_data
from lit_garbage.export.verify import compare, verify_export
from lit_garbage.inference.backends import TorchBackend, load_backend, load_classifier
from tests.conftest import fit_args

IMAGE_SIZE = 64


@pytest.fixture(scope="module")
def sound(tmp_path_factory, synthetic_root) -> dict:
    """A trained tiny model exported to ONNX and TFLite fp32 / fp16, verified; its torch reference and images."""
    from lit_garbage.training import cli

    base = tmp_path_factory.mktemp("verify-criteria")
    run = base / "run"
    # A few epochs at a high rate: a decisive model, so that a fault moves its probabilities clearly.
    cli.main(fit_args(synthetic_root, run, "--trainer.max_epochs", "3", "--model.lr", "0.005",
                      "--model.dropout", "0.0", "--data.augment.enabled", "false", "--seed_everything", "1"))
    ckpt = run / "model.ckpt"
    out = base / "export"
    result = Exporter(ExportConfig(model=ckpt, out=out, formats=["onnx", "tflite"], verify_images=24,
                                   tflite_metadata=False), log=lambda s: None).run()
    module, info = load_classifier(ckpt)
    data = run_data(info, ckpt)
    images = data.load(data.pick("test", 24), IMAGE_SIZE)
    return {"ckpt": ckpt, "out": out, "result": result, "module": module, "images": images,
            "reference": TorchBackend(ckpt, module=module), "verify": json.loads((out / "verify.json").read_text())}


def _copy(sound: dict, tmp_path: Path) -> Path:
    dst = tmp_path / "export"
    shutil.copytree(sound["out"], dst, ignore=shutil.ignore_patterns("saved_model"))
    return dst


def _verify(sound: dict, folder: Path, formats=("onnx",)):
    report = verify_export(folder, sound["reference"], sound["images"], list(formats), image_source="test",
                           log=lambda s: None)
    return report, {r.name: r for r in report.results}


def _edit_onnx(path: Path, edit) -> None:
    """Apply `edit(name, array) -> array or None` to every initializer of the ONNX file at `path`."""
    model = onnx.load(str(path))
    changed = 0
    for init in model.graph.initializer:
        new = edit(init.name, numpy_helper.to_array(init))
        if new is not None:
            init.CopyFrom(numpy_helper.from_array(np.asarray(new, dtype=np.float32), init.name))
            changed += 1
    assert changed, "the edit found nothing to change"
    onnx.save(model, str(path))


# ------------------------------------------------------------------ the sound export


def test_sound_export_passes_and_fp16_is_judged_against_the_rounded_onnx_reference(sound):
    verify = sound["verify"]
    assert verify["passed"], verify["verdict"]
    rows = {b["name"]: b for b in verify["backends"]}
    fp16 = rows["tflite_float16"]
    assert fp16["reference"] == "onnx_fp16" and fp16["status"] == "pass"
    assert fp16["max_abs_diff"] <= FP16_MAX_ABS_DIFF
    # the reference explains the file's rounding: it is closer to the fp16 file than plain torch is
    assert fp16["max_abs_diff"] < fp16["vs_torch"]
    for name in ("onnx", "tflite_float32"):
        assert rows[name]["reference"] == "torch" and rows[name]["max_abs_diff"] <= FP32_MAX_ABS_DIFF
    assert verify["thresholds"]["tflite_float16"]["max_abs_diff"] == FP16_MAX_ABS_DIFF
    md = (sound["out"] / "verify.md").read_text()
    assert "## What each file is compared with, and why" in md
    assert "weight tensors rounded to float16" in md and "model.onnx, weights rounded to fp16" in md


def test_fp16_reference_equals_the_fp16_tflite_file_within_the_float32_bound(sound):
    images = sound["images"]
    torch_probs = sound["reference"].predict(images)
    ref = fp16_reference(sound["out"], images, torch_probs)
    assert ref.run is not None, ref.reason
    assert ref.onnx_vs_torch <= FP32_MAX_ABS_DIFF and ref.rounded > 50
    tflite = load_backend(sound["out"] / "model_float16.tflite").predict(images)
    ours = ref.run(images)
    assert np.abs(tflite - ours).max() <= FP16_MAX_ABS_DIFF
    # the rounding is what the reference adds: far closer to the file than the unrounded ONNX file or torch
    assert np.abs(tflite - ours).max() < np.abs(tflite - torch_probs).max() / 10


def test_rounded_onnx_holds_float16_values_and_leaves_the_original_alone(sound):
    model = onnx.load(str(sound["out"] / "model.onnx"))
    before = {i.name: numpy_helper.to_array(i).copy() for i in model.graph.initializer}
    rounded, n = rounded_to_fp16(model)
    floats = [i for i in rounded.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    assert n == len(floats) > 0
    moved = 0
    for init in floats:
        a = numpy_helper.to_array(init)
        assert a.dtype == np.float32 and np.array_equal(a, a.astype(np.float16).astype(np.float32))
        moved += int(init.name in before and not np.array_equal(a, before[init.name]))
    assert moved > n // 2  # real rounding happened
    # the input normalisation's division by std is a multiplication by its (rounded) reciprocal
    ops = {node.op_type for node in rounded.graph.node}
    assert "Div" not in ops and "Div" in {node.op_type for node in model.graph.node}
    std = numpy_helper.to_array(next(i for i in rounded.graph.initializer if i.name == "net.std_reciprocal"))
    assert np.allclose(std * before["net.std"], 1.0, atol=1e-3)
    for init in model.graph.initializer:  # the loaded model is not modified
        assert np.array_equal(numpy_helper.to_array(init), before[init.name])


def test_no_fp16_reference_without_a_sound_onnx_file(sound, tmp_path):
    images = sound["images"]
    torch_probs = sound["reference"].predict(images)
    missing = fp16_reference(tmp_path, images, torch_probs)
    assert missing.run is None and "no model.onnx" in missing.reason
    folder = _copy(sound, tmp_path)
    convs = [i for i in onnx.load(str(folder / "model.onnx")).graph.initializer if len(i.dims) == 4 and i.dims[0] > 16]
    target = convs[len(convs) // 2].name  # a convolution in the middle of the backbone
    _edit_onnx(folder / "model.onnx", lambda name, a: -a if name == target else None)
    broken = fp16_reference(folder, images, torch_probs)
    assert broken.run is None and "differs from torch" in broken.reason
    # the fp16 file is then not passed: its row is an error that says why
    _, rows = _verify(sound, folder, ("tflite_float16",))
    assert rows["tflite_float16"].status == "error" and "differs from torch" in rows["tflite_float16"].message


# ------------------------------------------------------------------ margin-aware top-1


def test_near_tie_is_reported_and_a_real_flip_fails():
    crit = references.criteria()["onnx"]
    reference = np.array([[0.50004, 0.49996, 0.0], [0.9, 0.05, 0.05], [0.2, 0.7, 0.1]])
    near_tie = reference.copy()
    near_tie[0] = [0.49996, 0.50004, 0.0]  # within 1e-4 and top-1 flipped: margin 8e-5 < 2e-4
    diff, top, broken = compare(crit, reference, near_tie)
    assert diff <= FP32_MAX_ABS_DIFF and top.disagreements == 1 and top.near_ties == 1 and broken == []
    flip = reference.copy()
    flip[1] = [0.05, 0.9, 0.05]  # a clear decision turned
    diff, top, broken = compare(crit, reference, flip)
    assert top.hard == 1 and len(broken) == 2
    assert "top-1 differs on 1 of 3 images" in broken[1] and "not near ties" in broken[1]


def test_int8_fails_only_on_more_disagreements_than_chance_allows_a_sound_file():
    from scipy.stats import binom

    # the allowed count is the binomial's quantile: a file agreeing on 98 % exceeds it with probability <= 1e-3
    for n in (10, 64, 256, 1000):
        k = references.int8_allowed_disagreements(n, 0.98)
        assert binom.sf(k, n, 0.02) <= references.INT8_FALSE_FAILURE < binom.sf(k - 1, n, 0.02), n
    assert references.int8_allowed_disagreements(64, 0.98) == 6 and references.int8_allowed_disagreements(256, 0.98) == 13
    assert references.int8_allowed_disagreements(256, 0.999) < references.int8_allowed_disagreements(256, 0.98)

    crit = references.criteria(0.98)["tflite_int8"]
    reference = np.eye(10)[np.arange(256) % 10] * 0.8 + 0.02
    probs = reference.copy()
    probs[:13] = np.roll(probs[:13], 1, axis=1)  # 13 of 256 differ (94.9 %): within chance of a 98 % file
    assert compare(crit, reference, probs)[2] == []
    probs[:14] = np.roll(reference[:14], 1, axis=1)  # one more fails, naming the counts
    (msg,) = compare(crit, reference, probs)[2]
    assert msg.startswith("top-1 agreement 94.5 %: 14 of 256 images differ") and "at most 13" in msg
    assert "0 of the 14 near ties" in msg  # the rolled images had clear margins
    assert "consistent with 98 %" in crit.describe()


def test_int16x8_is_bounded_like_a_float_file():
    crit = references.criteria()["tflite_int16x8"]
    assert crit.reference == "torch" and crit.max_abs_diff == references.INT16X8_MAX_ABS_DIFF
    reference = np.eye(3)[[0, 1, 2, 0]] * 0.8 + 0.2 / 3
    close = reference.copy()
    close[0, :2] += np.array([-0.5, 0.5]) * crit.max_abs_diff
    assert compare(crit, reference, close)[2] == []
    off = reference.copy()
    off[0, :2] += np.array([-2.0, 2.0]) * crit.max_abs_diff  # top-1 kept, probabilities too far
    (msg,) = compare(crit, reference, off)[2]
    assert "max abs diff" in msg


# ------------------------------------------------------------------ broken exports fail, naming the fault


def test_wrong_normalisation_fails_naming_it(sound, tmp_path):
    folder = _copy(sound, tmp_path)
    mean = sound["module"].net.mean.numpy()
    std = sound["module"].net.std.numpy()

    def edit(name, a):
        if a.shape == mean.shape and np.allclose(a, mean):
            return np.full_like(a, 0.5)
        if a.shape == std.shape and np.allclose(a, std):
            return np.full_like(a, 0.5)
        return None

    _edit_onnx(folder / "model.onnx", edit)
    report, rows = _verify(sound, folder)
    assert not report.passed and rows["onnx"].status == "fail"
    assert "wrong input normalisation" in rows["onnx"].message
    assert "mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5), not with the checkpoint's" in rows["onnx"].message and "max abs diff" in rows["onnx"].message


def test_swapped_class_order_fails_naming_the_classes(sound, tmp_path):
    folder = _copy(sound, tmp_path)
    fc2 = sound["module"].net.head.fc2
    weight, bias = fc2.weight.detach().numpy(), fc2.bias.detach().numpy()
    swap = [1, 0, *range(2, fc2.out_features)]  # the first two classes exchanged

    def edit(name, a):
        for ours, axis in ((bias, 0), (weight, 0), (weight.T, 1)):
            if a.shape == ours.shape and np.allclose(a, ours):
                return np.take(a, swap, axis=axis)
        return None

    _edit_onnx(folder / "model.onnx", edit)
    _, rows = _verify(sound, folder)
    names = sound["reference"].class_names
    assert rows["onnx"].status == "fail"
    msg = rows["onnx"].message
    assert "another class order" in msg
    assert f"output 0 ('{names[0]}') is '{names[1]}'" in msg and f"output 1 ('{names[1]}') is '{names[0]}'" in msg


def test_corrupted_weight_tensor_fails_as_a_different_function(sound, tmp_path):
    folder = _copy(sound, tmp_path)
    model = onnx.load(str(folder / "model.onnx"))
    convs = [i for i in model.graph.initializer if len(i.dims) == 4 and i.dims[0] > 16]
    target = convs[len(convs) // 2].name  # a convolution in the middle of the backbone

    _edit_onnx(folder / "model.onnx", lambda name, a: -a if name == target else None)
    _, rows = _verify(sound, folder)
    assert rows["onnx"].status == "fail"
    msg = rows["onnx"].message
    assert "max abs diff" in msg and "a weight tensor or an operation differs" in msg


def test_corrupted_weight_in_the_fp16_file_fails_against_the_fp16_reference(sound, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    folder = _copy(sound, tmp_path)
    path = folder / "model_float16.tflite"
    interpreter = Interpreter(model_path=str(path))
    constants = [d for d in interpreter.get_tensor_details()
                 if d["dtype"] == np.float16 and len(d["shape"]) == 4 and d["shape"][0] > 16]
    target = constants[len(constants) // 2]  # a float16 convolution kernel in the middle
    weights = interpreter.get_tensor(target["index"])
    blob = path.read_bytes()
    assert blob.count(weights.tobytes()) == 1
    path.write_bytes(blob.replace(weights.tobytes(), (-weights).tobytes()))
    _, rows = _verify(sound, folder, ("tflite_float16",))
    fp16 = rows["tflite_float16"]
    assert fp16.status == "fail" and fp16.reference == "onnx_fp16"
    assert f"> {FP16_MAX_ABS_DIFF:g}" in fp16.message and "a weight tensor or an operation differs" in fp16.message


def test_wrong_image_size_fails_naming_both_sizes(sound, tmp_path):
    folder = _copy(sound, tmp_path)
    export_onnx(sound["module"].net, 48, folder / "model.onnx")  # the whole export made at another size
    meta = json.loads((folder / "metadata.json").read_text())
    meta["image_size"] = 48
    (folder / "metadata.json").write_text(json.dumps(meta))
    report, rows = _verify(sound, folder)
    assert rows["onnx"].status == "error"
    assert "wrong image size: the file takes 48 x 48 px images, the checkpoint 64 x 64" in rows["onnx"].message
    assert "wrong image size" in report.verdict()


def test_swapped_class_order_in_the_int8_file_fails(tiny_export, tmp_path):
    """The int8 file's float classifier with two classes' rows exchanged: top-1 changes on those classes'
    images, far more than chance allows a sound int8 file."""
    from tensorflow.lite.tools import flatbuffer_utils

    source = tiny_export["out"] / "model_int8.tflite"
    model = flatbuffer_utils.read_model(str(source))
    graph = model.subgraphs[0]
    fc = [op for op in graph.operators if flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) == "FULLY_CONNECTED"][-1]
    blob = source.read_bytes()  # edited in place: the file keeps its metadata (class names)
    for index in fc.inputs[1:3]:  # weights [classes, features] and bias [classes], float32 (the float classifier)
        tensor = graph.tensors[index]
        values = np.frombuffer(bytes(model.buffers[tensor.buffer].data), dtype=np.float32).reshape(tuple(tensor.shape))
        assert blob.count(values.tobytes()) == 1
        blob = blob.replace(values.tobytes(), values[[1, 0, *range(2, len(values))]].tobytes())
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "model_int8.tflite").write_bytes(blob)
    ckpt = tiny_export["ckpt"]
    module, info = load_classifier(ckpt)
    data = run_data(info, ckpt)
    images = data.load(data.pick("test", 64), module.hparams.image_size)
    report = verify_export(folder, TorchBackend(ckpt, module=module), images, ["tflite_int8"], image_source="test",
                           log=lambda s: None)
    row = {r.name: r for r in report.results}["tflite_int8"]
    assert not report.passed and row.status == "fail", row
    assert "images differ, a file agreeing on 98 % differs on at most" in row.message
    names = module.hparams.class_names
    assert "another class order" in row.message and f"output 0 ('{names[0]}') is '{names[1]}'" in row.message, row.message
