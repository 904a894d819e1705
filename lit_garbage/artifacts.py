"""`metadata.json` and `labels.txt`: what every exported format needs to be used correctly.

One source for each fact: class names, image size and normalisation come from the checkpoint's
hyper-parameters; hashes from the checkpoint and split-manifest files; metrics from the run's results.json.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

METADATA_FILE = "metadata.json"
LABELS_FILE = "labels.txt"
SCHEMA_VERSION = 1

# Per-format file name, input tensor name and layout (N = any batch size).
FORMATS: dict[str, dict[str, str]] = {
    "torch": {"file": "", "layout": "NCHW"},
    "onnx": {"file": "model.onnx", "layout": "NCHW"},
    "saved_model": {"file": "saved_model", "layout": "NHWC"},
    "tflite_float32": {"file": "model_float32.tflite", "layout": "NHWC"},
    "tflite_float16": {"file": "model_float16.tflite", "layout": "NHWC"},
    "tflite_int8": {"file": "model_int8.tflite", "layout": "NHWC"},
    "tfjs": {"file": "tfjs/model.json", "layout": "NHWC"},
}

_VERSIONED = ("lit-garbage", "torch", "onnx", "onnxruntime", "onnxscript", "onnx2tf", "onnxsim", "tensorflow",
              "tensorflowjs", "ai-edge-litert")


def package_versions(names: Sequence[str] = _VERSIONED) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def input_spec(fmt: str, image_size: int) -> dict[str, Any]:
    layout = FORMATS[fmt]["layout"]
    shape = [None, 3, image_size, image_size] if layout == "NCHW" else [None, image_size, image_size, 3]
    return {"name": "images", "shape": shape, "layout": layout, "dtype": "float32",
            "channels": "RGB", "range": [0.0, 1.0]}


def build_metadata(*, class_names: Sequence[str], image_size: int, normalisation: Mapping[str, Any],
                   formats: Sequence[str], checkpoint: Path, checkpoint_sha256: str,
                   manifest: Path | None, manifest_sha256: str | None, training: Mapping[str, Any] | None,
                   calibration: Mapping[str, Any] | None, backbone: str | None,
                   onnx2tf_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    meta = {
        "schema_version": SCHEMA_VERSION,
        "task": "image-classification",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "class_names": list(class_names),
        "num_classes": len(class_names),
        "image_size": int(image_size),
        "backbone": backbone,
        "input": {
            "channels": "RGB",
            "dtype": "float32",
            "scaling": "[0, 1] (pixel / 255)",
            "range": [0.0, 1.0],
            "resize": f"{image_size}x{image_size}, bilinear with antialiasing (PIL), whole image, no crop (lit_garbage.data.images.resize_rgb)",
            "normalisation_inside_model": dict(normalisation),
        },
        "output": {"name": "probabilities", "shape": [None, len(class_names)], "dtype": "float32",
                   "meaning": "softmax class probabilities in class_names order"},
        "formats": {fmt: {"path": FORMATS[fmt]["file"], "input": input_spec(fmt, image_size)}
                    for fmt in formats if fmt in FORMATS},
        # Absolute paths too, so an export moved away from its run still finds the run's split.
        "checkpoint": {"file": checkpoint.name, "path": str(Path(checkpoint).resolve()), "sha256": checkpoint_sha256},
        "split_manifest": {"file": manifest.name if manifest else None,
                           "path": str(Path(manifest).resolve()) if manifest else None, "sha256": manifest_sha256},
        "training_metrics": dict(training) if training is not None else None,
        "int8_calibration": dict(calibration) if calibration is not None else None,
        "versions": package_versions(),
    }
    if onnx2tf_options:  # only graphs that need extra onnx2tf options (not the default MobileNetV2) record them
        meta["onnx2tf_options"] = dict(onnx2tf_options)
    return meta


def write_metadata(folder: str | Path, metadata: Mapping[str, Any]) -> None:
    folder = Path(folder)
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    (folder / LABELS_FILE).write_text("".join(f"{name}\n" for name in metadata["class_names"]))


def find_metadata(model_path: str | Path) -> dict[str, Any] | None:
    """The export's metadata.json for a model file or folder inside an export (None if there is none)."""
    found = locate_metadata(model_path)
    return found[0] if found else None


def locate_metadata(model_path: str | Path) -> tuple[dict[str, Any], Path] | None:
    """(metadata, export folder) for a model file or folder inside an export (None if there is none)."""
    path = Path(model_path).resolve()
    start = path if path.is_dir() else path.parent
    for folder in (start, start.parent):  # model files sit in the export folder, tfjs/ and saved_model/ one below
        candidate = folder / METADATA_FILE
        if candidate.is_file():
            try:
                meta = json.loads(candidate.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(meta, dict) and "class_names" in meta:
                return meta, folder
    return None


def read_onnx_metadata(path: str | Path) -> dict[str, object]:
    """metadata_props of an ONNX file, JSON values decoded where they parse."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    out: dict[str, object] = {}
    for prop in model.metadata_props:
        try:
            out[prop.key] = json.loads(prop.value)
        except json.JSONDecodeError:
            out[prop.key] = prop.value
    return out
