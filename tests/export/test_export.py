"""The export bridge, end to end: a checkpoint trained here -> every format -> verified against torch.

One small pretrained=False model is trained to a clear decision on synthetic shapes (4 classes, 64 px) and exported
ONCE (the session's `tiny_export` fixture); the tests then read that export. No mocks: onnxruntime,
onnx2tf, TensorFlow, LiteRT and TFJS in Node all run for real. TFJS needs `npm ci` in the project root
(CI runs it); without node_modules the TFJS test fails with that instruction instead of skipping.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from lit_garbage.commands.export import build_parser as export_parser
from lit_garbage.commands.export import main as export_main
from lit_garbage.export.config import ExportConfig, Int8Options
from lit_garbage.export.exporter import (
    DEFAULT_FORMATS,
    MARKER,
    Exporter,
    ExportError,
    resolve_formats,
)
from lit_garbage.export.onnx import OPSET
from lit_garbage.export.references import (
    FP16_MAX_ABS_DIFF,
    FP32_MAX_ABS_DIFF,
    INT8_AGREEMENT,
    INT16X8_MAX_ABS_DIFF,
)
from lit_garbage.export.samples import run_data
from lit_garbage.export.verify import verify_export
from lit_garbage.files import sha256_file
from lit_garbage.formats import FORMATS
from lit_garbage.inference.backends import (
    BackendUnavailableError,
    ModelFileError,
    TFJSBackend,
    TorchBackend,
    detect_kind,
    load_backend,
)
from lit_garbage.inference.node_runtime import install_hint, node_modules
from tests.fixtures_export import op_input_types

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["battery", "biological", "cardboard", "clothes"]
IMAGE_SIZE = 64
ALL_FILES = ["onnx", "saved_model", "tflite_float32", "tflite_float16", "tflite_int8", "tflite_int16x8", "tfjs"]


@pytest.fixture(scope="module")
def exported(tiny_export) -> dict:
    """The session's one trained + exported model (shared with the evaluate/predict/browser tests)."""
    return tiny_export


def _backend_row(verify: dict, name: str) -> dict:
    (row,) = [b for b in verify["backends"] if b["name"] == name]
    return row


# ------------------------------------------------------------------ the export itself


def test_export_writes_every_format_with_metadata_and_labels(exported):
    out, ckpt = exported["out"], exported["ckpt"]
    for name in ALL_FILES:
        assert (out / FORMATS[name].file).exists(), name
    assert (out / "saved_model" / "saved_model.pb").is_file()
    assert list((out / "tfjs").glob("*.bin")), "TFJS weight shards"
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["class_names"] == CLASSES
    assert (out / "labels.txt").read_text().split() == CLASSES
    assert meta["image_size"] == IMAGE_SIZE
    assert meta["input"]["range"] == [0.0, 1.0]
    assert meta["checkpoint"]["sha256"] == sha256_file(ckpt)
    assert meta["split_manifest"]["sha256"] == sha256_file(exported["run"] / "split.csv")
    assert meta["training_metrics"]["test_acc"] == pytest.approx(exported["results"]["test_acc"])
    assert meta["int8_calibration"]["split"] == "train" and meta["int8_calibration"]["images"] > 0
    for pkg in ("torch", "onnx", "onnx2tf", "tensorflow", "tensorflowjs"):
        assert meta["versions"][pkg], pkg
    assert meta["formats"]["onnx"]["input"]["shape"] == [None, 3, IMAGE_SIZE, IMAGE_SIZE]
    assert meta["formats"]["tflite_int8"]["input"]["layout"] == "NHWC"
    # nothing half-written or temporary left beside the export
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name or ".old-" in p.name or "onnx2tf" in p.name]
    assert set(exported["result"].timings) >= {"onnx", "saved_model", "int8", "int16x8", "tfjs", "verify", "total"}


def test_the_int8_file_is_float_up_to_its_default_convolution_integer_after_and_float_at_the_classifier(exported):
    from lit_garbage.int8.ranges import CONVOLUTIONS

    ops = op_input_types(exported["out"] / FORMATS["tflite_int8"].file)
    convs = [dtype for op, dtype in ops if op in CONVOLUTIONS]
    n = Int8Options().float_convs
    assert 0 < n < len(convs) and convs[:n] == ["FLOAT32"] * n and set(convs[n:]) == {"INT8"}, convs
    # float in; once int8 the graph stays int8 up to one DEQUANTIZE before the classifier's last dense layer, which
    # and the softmax are float (the default)
    assert ops[0][1] == "FLOAT32" and [op for op, _ in ops].count("DEQUANTIZE") == 1
    kinds = [op for op, _ in ops]
    assert kinds[-3:] == ["DEQUANTIZE", "FULLY_CONNECTED", "SOFTMAX"] and ops[-2][1] == ops[-1][1] == "FLOAT32", ops
    assert [dtype for op, dtype in ops[:-3] if op == "FULLY_CONNECTED"] == ["INT8"]
    meta = json.loads((exported["out"] / "metadata.json").read_text())
    assert meta["int8_calibration"]["float_convs"] == n  # the option's own name, as --int8.float_convs
    assert meta["int8_calibration"]["float_classifier"] is True


def test_int16x8_is_built_only_when_asked_for():
    assert "int16x8" not in resolve_formats(None) and "int16x8" not in DEFAULT_FORMATS
    assert resolve_formats(["int16x8"]) == ["onnx", "saved_model", "int16x8"]
    assert export_parser().parse_args(["--model", "m.ckpt"]).formats == list(DEFAULT_FORMATS)


def test_onnx_file_is_checked_single_file_with_dynamic_batch_and_metadata(exported):
    path = exported["out"] / "model.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    assert not list(path.parent.glob("*.data")), "weights must be inside the one .onnx file"
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, IMAGE_SIZE, IMAGE_SIZE]
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["class_names"]) == CLASSES


def test_every_format_meets_its_verification_threshold_including_tfjs_in_node(exported):
    assert (node_modules() / "@tensorflow" / "tfjs-backend-wasm").is_dir(), \
        f"node_modules is missing: {install_hint()} (CI does)"
    assert shutil.which("node"), "Node.js is required for the TFJS check"
    verify = exported["verify"]
    assert verify["images"] >= 20 and verify["image_source"].startswith("test split")
    for name in ALL_FILES:
        row = _backend_row(verify, name)
        assert row["status"] == "pass", f"{name}: {row['message']}"
        limits = verify["thresholds"][name]
        if "max_abs_diff" in limits:
            assert row["max_abs_diff"] <= limits["max_abs_diff"], name
        if "top1_agreement" in limits:
            assert row["top1_agreement"] >= limits["top1_agreement"], name
        assert row["latency_ms"] > 0
    # the bounds themselves (lit_garbage.export.references: what each is compared with, and why)
    assert verify["thresholds"]["tfjs"] == verify["thresholds"]["onnx"] == \
        {"max_abs_diff": FP32_MAX_ABS_DIFF, "near_tie_margin": 2 * FP32_MAX_ABS_DIFF}
    assert FP32_MAX_ABS_DIFF == 1e-4
    assert _backend_row(verify, "tflite_float16")["reference"] == "onnx_fp16"
    assert verify["thresholds"]["tflite_float16"]["max_abs_diff"] == FP16_MAX_ABS_DIFF
    assert verify["thresholds"]["tflite_int8"]["top1_agreement"] == INT8_AGREEMENT == 0.98
    assert verify["thresholds"]["tflite_int16x8"]["max_abs_diff"] == INT16X8_MAX_ABS_DIFF
    assert verify["passed"] and exported["result"].passed
    assert "PASS" in (exported["out"] / "verify.md").read_text()


def test_load_backend_gives_every_format_the_same_nchw_contract(exported):
    out = exported["out"]
    data = run_data(torch.load(exported["ckpt"], map_location="cpu", weights_only=False), exported["ckpt"])
    images = data.load(data.pick("test", 3), IMAGE_SIZE)  # batch of 3: the batch axis is dynamic
    reference = load_backend(exported["ckpt"])
    assert isinstance(reference, TorchBackend)
    expected = reference.predict(images)
    for name, tol in [("onnx", 1e-4), ("saved_model", 1e-4), ("tflite_float32", 1e-4),
                      ("tflite_float16", 1e-2), ("tflite_int8", 0.25), ("tflite_int16x8", INT16X8_MAX_ABS_DIFF),
                      ("tfjs", 1e-4)]:
        backend = load_backend(out / FORMATS[name].file)
        assert backend.class_names == CLASSES and backend.image_size == IMAGE_SIZE, name
        probs = backend.predict(images)
        assert probs.shape == (3, len(CLASSES)) and probs.dtype == np.float32, name
        assert np.abs(probs - expected).max() <= tol, name
    assert detect_kind(out / "tfjs") == "tfjs" and detect_kind(out / "saved_model") == "saved_model"
    with pytest.raises(ValueError, match="expects images of shape"):
        reference.predict(images.transpose(0, 2, 3, 1))


# ------------------------------------------------------------------ atomic, repeatable


def test_rerun_replaces_previous_export_and_interruption_keeps_it(exported, tmp_path):
    out = tmp_path / "export"
    shutil.copytree(exported["out"], out)

    class Interrupted(Exporter):
        def export_onnx(self):
            (self.work / "model.onnx").write_bytes(b"half-written")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Interrupted(ExportConfig(model=exported["ckpt"], out=out), log=lambda s: None).run()
    assert (out / "model_int8.tflite").read_bytes() == (exported["out"] / "model_int8.tflite").read_bytes()
    assert (out / "model.onnx").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"], "no partial folder left behind"

    result = Exporter(ExportConfig(model=exported["ckpt"], out=out, formats=["onnx"], verify=False),
                      log=lambda s: None).run()
    assert result.formats == ["onnx"]
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "labels.txt", "metadata.json", "model.onnx",
                                                            "model.safetensors"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_export_refuses_to_replace_a_folder_it_did_not_write(exported, tmp_path):
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(ExportError, match="not a lit_garbage export"):
        Exporter(ExportConfig(model=exported["ckpt"], out=tmp_path, formats=["onnx"], verify=False),
                 log=lambda s: None).run()
    assert (tmp_path / "notes.txt").read_text() == "precious"


# ------------------------------------------------------------------ clear errors


def test_corrupted_or_wrong_checkpoint_gives_a_clear_message(exported, tmp_path, capsys):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(exported["ckpt"].read_bytes()[:4096])
    assert export_main(["--model", str(truncated), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "not a readable PyTorch checkpoint" in err and "Traceback" not in err

    wrong = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 1}, wrong)
    assert export_main(["--model", str(wrong)]) == 2
    assert "not a lit_garbage GarbageClassifier checkpoint" in capsys.readouterr().err

    assert export_main(["--model", str(tmp_path / "missing.ckpt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["model.onnx", "model_float32.tflite"])
def test_corrupted_model_file_gives_model_file_error(tmp_path, name):
    bad = tmp_path / name
    bad.write_bytes(b"\x00not a model" * 64)
    with pytest.raises(ModelFileError, match="not a loadable"):
        load_backend(bad)
    other = tmp_path / "weights.bin"
    other.write_bytes(b"\x00")
    with pytest.raises(ModelFileError, match="unknown model file type"):
        load_backend(other)


def test_unwritable_output_folder_gives_a_clear_message(exported, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = export_main(["--model", str(exported["ckpt"]), "--out", str(blocker / "export"), "--formats", "onnx"])
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot write the export" in err and "Traceback" not in err


def test_missing_node_reports_tfjs_skipped_never_passed(exported, tmp_path, monkeypatch):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    monkeypatch.delenv("LIT_GARBAGE_NODE", raising=False)
    with pytest.raises(BackendUnavailableError, match="node"):
        TFJSBackend(exported["out"] / "tfjs")
    data = run_data(torch.load(exported["ckpt"], map_location="cpu", weights_only=False), exported["ckpt"])
    images = data.load(data.pick("test", 2), IMAGE_SIZE)
    report = verify_export(exported["out"], load_backend(exported["ckpt"]), images, ["onnx", "tfjs"],
                           image_source="test", log=lambda s: None)
    tfjs = next(r for r in report.results if r.name == "tfjs")
    assert tfjs.status == "skipped" and "node" in tfjs.message and "NOT VERIFIED" in tfjs.message
    assert tfjs.max_abs_diff is None and tfjs.top1_agreement is None
    assert "skipped: tfjs" in report.verdict()
    report.write(tmp_path)
    assert "| TFJS (Node, wasm) | SKIPPED |" in (tmp_path / "verify.md").read_text()
    assert json.loads((tmp_path / "verify.json").read_text())["backends"][-1]["status"] == "skipped"
