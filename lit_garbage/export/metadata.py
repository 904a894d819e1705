"""Self-describing model files: the export's facts written into every file, in each format's standard place.

    embed_facts(export_dir, embedded_facts(meta), files)   # after every conversion, before verification

The facts are `lit_garbage.artifacts.embedded_facts` of metadata.json (one schema for every format;
`lit_garbage.artifacts.read_facts` reads them back from one file alone):

- TFLite (fp32, fp16, int8): standard TFLite Metadata, written with tflite-support's metadata writers:
  name / version / description / author / license; the input as an RGB image with NormalizationOptions
  mean 0 / std 255 on every channel (= pixel / 255, the [0, 1] contract; the backbone's mean/std is inside
  the graph and must not be applied again) and value range [0, 1]; the output as class probabilities with
  labels.txt as its TENSOR_AXIS_LABELS file; the whole facts JSON as the model-level file lit_garbage.json.
  MediaPipe Tasks and the LiteRT Task Library need exactly this to load a float-input image classifier.
  The writer re-packs the whole flatbuffer, so every file's LiteRT outputs are compared before and after
  (bitwise; `MetadataError` if anything moved). The associated files carry a fixed zip date, so the same
  model and facts always give the same bytes.
- ONNX: metadata_props `lit_garbage` (the facts as JSON), ONNX's standard `model_author` / `model_license`
  and image keys (`Image.BitmapPixelFormat` Rgb8, `Image.ColorSpaceGamma` SRGB, `Image.NominalPixelRange`
  Normalized_0_1, with the input denoted IMAGE), `class_names` / `image_size` for simple readers, and the
  description as doc_string. Nodes and weights are checked unchanged.
- SavedModel: `assets.extra/labels.txt` and `assets.extra/lit_garbage.json` (the SavedModel folder for
  files tools add beside the graph; saved_model.pb is not touched, nothing is re-traced).
- TFJS: `model.json` `userDefinedMetadata.lit_garbage` (tfjs returns it as `GraphModel.metadata`; its own
  key, because tfjs reads `userDefinedMetadata.signature` as the model's signature).

Writing TFLite metadata needs tflite-support, installed WITHOUT its dependencies (`TFLITE_SUPPORT_PIP`):
its declared protobuf<4 pin would downgrade protobuf and break onnx, and its metadata modules never use
protobuf. Only its submodules are imported (`import tflite_support` itself fails under protobuf 5).
"""

from __future__ import annotations

import importlib.util
import io
import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lit_garbage.artifacts import FACTS_FILE, FACTS_KEY, LABELS_FILE, labels_text
from lit_garbage.files import replaced_atomically
from lit_garbage.formats import FORMATS, implementation

TFLITE_SUPPORT_PIP = "pip install --no-deps tflite-support==0.4.4"
_WRITERS = "tensorflow_lite_support.metadata.python.metadata_writers"
LIBUSB_APT = "apt-get install libusb-1.0-0"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date zip can store: reproducible files
PROBE_INPUTS = 4  # random images run through each TFLite file before and after writing its metadata


class MetadataError(RuntimeError):
    """Metadata cannot be written (writer missing) or writing it would change the model."""


def tflite_writer_problem() -> str | None:
    """Why TFLite metadata cannot be written here (the writer is missing, or installed but does not load), or
    None when it loads."""
    try:
        if importlib.util.find_spec(_WRITERS) is None:
            return missing_writer_message()
    except ModuleNotFoundError:  # the parent package is not installed
        return missing_writer_message()
    try:
        importlib.import_module(f"{_WRITERS}.metadata_writer")
    except ImportError as err:  # its compiled modules link libusb-1.0, which a minimal system lacks
        return (f"tflite-support's TFLite metadata writer is installed but does not load: {err}. Its compiled "
                f"modules need the system library libusb-1.0 (Debian / Ubuntu: `{LIBUSB_APT}`; `make setup` "
                "installs it), or export with --no-tflite-metadata (MediaPipe and the LiteRT Task Library cannot "
                "load .tflite files without metadata)")
    return None


def missing_writer_message() -> str:
    return (f"writing TFLite metadata needs tflite-support: run `{TFLITE_SUPPORT_PIP}` (--no-deps: its "
            "protobuf<4 pin would break onnx), or export with --no-tflite-metadata (MediaPipe and the LiteRT "
            "Task Library cannot load .tflite files without metadata)")


def _tflite_libs():
    problem = tflite_writer_problem()
    if problem:
        raise MetadataError(problem)
    from tensorflow_lite_support.metadata import metadata_schema_py_generated as fb
    from tensorflow_lite_support.metadata.python.metadata_writers import (
        metadata_info,
        metadata_writer,
        writer_utils,
    )

    return fb, metadata_info, metadata_writer, writer_utils


def pixel_normalisation(facts: Mapping[str, Any]) -> tuple[float, float]:
    """(mean, std) with model input = (pixel - mean) / std for pixels 0..255: mean 0, std 255 for [0, 1]."""
    lo, hi = (float(v) for v in facts["input"]["range"])
    std = 255.0 / (hi - lo)
    return -lo * std + 0.0, std  # + 0.0: never "-0.0"


# ---------------------------------------------------------------- TFLite


def tflite_with_metadata(model: bytes, facts: Mapping[str, Any]) -> bytes:
    """`model` with TFLite Metadata and its associated files (labels.txt, lit_garbage.json); metadata
    already in `model` is replaced."""
    fb, info, writer_mod, utils = _tflite_libs()
    model = strip_tflite_associated_files(model)
    mean, std = pixel_normalisation(facts)
    size = int(facts["image_size"])
    with tempfile.TemporaryDirectory(prefix="lit-garbage-tflite-md-") as tmp:
        labels, facts_json = Path(tmp, LABELS_FILE), Path(tmp, FACTS_FILE)
        labels.write_text(labels_text(facts["class_names"]))
        facts_json.write_text(json.dumps(facts, indent=2) + "\n")
        general = info.GeneralMd(name=facts["name"], version=facts["version"], description=facts["description"],
                                 author=facts["author"], licenses=facts["license"])
        # float32 input: stats (0 - mean) / std .. (255 - mean) / std = 0 .. 1, the [0, 1] contract.
        image = info.InputImageTensorMd(
            name="image", description=f"RGB image, {size}x{size}: {facts['input']['resize']}; "
                                      f"values (pixel - {mean:g}) / {std:g}",
            norm_mean=[mean] * 3, norm_std=[std] * 3, color_space_type=fb.ColorSpaceType.RGB,
            tensor_type=utils.get_input_tensor_types(model)[0])
        probs = info.ClassificationTensorMd(
            name="probability", description="Softmax probabilities, one per class in labels.txt order.",
            label_files=[info.LabelFileMd(file_path=str(labels))],  # TENSOR_AXIS_LABELS
            tensor_type=utils.get_output_tensor_types(model)[0])
        model_md = general.create_metadata()
        model_md.associatedFiles = [info.AssociatedFileMd(
            str(facts_json), description="Every fact of this model (class names, input contract, hashes, "
                                         "versions) as JSON", file_type=fb.AssociatedFileType.DESCRIPTIONS,
        ).create_metadata()]
        writer = writer_mod.MetadataWriter.create_from_metadata(
            model, model_metadata=model_md, input_metadata=[image.create_metadata()],
            output_metadata=[probs.create_metadata()], associated_files=[str(labels), str(facts_json)])
        return _fixed_zip_dates(bytes(writer.populate()))


def strip_tflite_associated_files(model: bytes) -> bytes:
    """The flatbuffer without the zip of associated files that the metadata writer appends after it."""
    if not zipfile.is_zipfile(io.BytesIO(model)):
        return model
    with zipfile.ZipFile(io.BytesIO(model)) as zf:
        members = zf.infolist()
        # Appended in zipfile's "a" mode: offsets count from the file start, the first header ends the model.
        return model[:min(m.header_offset for m in members)] if members else model


def _fixed_zip_dates(model: bytes) -> bytes:
    """The writer stamps associated files with the current time; re-append them with a fixed date (stored
    uncompressed, as the writer stores them: MediaPipe reads them in place)."""
    with zipfile.ZipFile(io.BytesIO(model)) as zf:
        members = [(m.filename, zf.read(m)) for m in zf.infolist()]
    out = io.BytesIO(strip_tflite_associated_files(model))
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a") as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name, date_time=_ZIP_DATE), data, compress_type=zipfile.ZIP_STORED)
    return out.getvalue()


def litert_outputs(model: bytes, images_nhwc: np.ndarray) -> np.ndarray:
    """LiteRT's outputs for float32 NHWC [0, 1] images, one at a time (single-threaded: reproducible)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model, num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = []
    for image in images_nhwc:
        x = image[None]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out["index"]).copy())
    return np.concatenate(rows)


def probe_images(image_size: int, count: int = PROBE_INPUTS) -> np.ndarray:
    """Fixed random pixel images, float32 NHWC pixel / 255."""
    pixels = np.random.default_rng(0).integers(0, 256, (count, image_size, image_size, 3), dtype=np.uint8)
    return pixels.astype(np.float32) / 255.0


def write_tflite_metadata(path: str | Path, facts: Mapping[str, Any]) -> dict[str, Any]:
    """Write the metadata into the .tflite file at `path` after checking that LiteRT's outputs stay bitwise
    equal; returns {"bytes_added", "max_abs_diff"}."""
    path = Path(path)
    before = path.read_bytes()
    after = tflite_with_metadata(before, facts)
    probe = probe_images(int(facts["image_size"]))
    old, new = litert_outputs(before, probe), litert_outputs(after, probe)
    if old.shape != new.shape or not np.array_equal(old, new):
        diff = float(np.abs(old - new).max()) if old.shape == new.shape else float("nan")
        raise MetadataError(f"writing TFLite metadata changed the outputs of {path.name} (max abs diff {diff:.3g}); "
                            "the file was left without metadata")
    _replace(path, after)
    return {"bytes_added": len(after) - len(before), "max_abs_diff": 0.0}


# ---------------------------------------------------------------- ONNX


_PIXEL_RANGE = {(0.0, 1.0): "Normalized_0_1", (-1.0, 1.0): "Normalized_1_1", (0.0, 255.0): "NominalRange_0_255"}


def write_onnx_metadata(path: str | Path, facts: Mapping[str, Any]) -> dict[str, Any]:
    """The facts into the ONNX file's metadata_props (ours replaced, others kept) and doc_string."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    graph_before = [n.SerializeToString() for n in model.graph.node] + \
                   [t.SerializeToString() for t in model.graph.initializer]
    lo, hi = (float(v) for v in facts["input"]["range"])
    props = {
        FACTS_KEY: json.dumps(facts),
        "class_names": json.dumps(facts["class_names"]), "image_size": str(int(facts["image_size"])),
        "model_author": facts["author"], "model_license": facts["license"],  # ONNX IR.md "optional metadata"
        "Image.BitmapPixelFormat": "Rgb8", "Image.ColorSpaceGamma": "SRGB",  # ONNX MetadataProps.md, images
    }
    if (lo, hi) in _PIXEL_RANGE:
        props["Image.NominalPixelRange"] = _PIXEL_RANGE[(lo, hi)]
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    model.doc_string = f"{facts['name']} {facts['version']}: {facts['description']}"
    model.graph.input[0].type.denotation = "IMAGE"  # what the Image.* keys describe
    for dim, name in zip(model.graph.input[0].type.tensor_type.shape.dim,
                         ("DATA_BATCH", "DATA_CHANNEL", "DATA_FEATURE", "DATA_FEATURE")):
        dim.denotation = name
    graph_after = [n.SerializeToString() for n in model.graph.node] + \
                  [t.SerializeToString() for t in model.graph.initializer]
    if graph_after != graph_before:  # cannot happen through the code above; the check keeps it so
        raise MetadataError(f"writing ONNX metadata changed the graph of {path.name}")
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    size = path.stat().st_size
    _replace(path, data)
    return {"bytes_added": len(data) - size}


# ---------------------------------------------------------------- SavedModel, TFJS


def write_saved_model_metadata(folder: str | Path, facts: Mapping[str, Any]) -> dict[str, Any]:
    extra = Path(folder) / "assets.extra"
    extra.mkdir(exist_ok=True)
    (extra / LABELS_FILE).write_text(labels_text(facts["class_names"]))
    (extra / FACTS_FILE).write_text(json.dumps(facts, indent=2) + "\n")
    return {"bytes_added": sum(f.stat().st_size for f in (extra / LABELS_FILE, extra / FACTS_FILE))}


def write_tfjs_metadata(model_json: str | Path, facts: Mapping[str, Any]) -> dict[str, Any]:
    model_json = Path(model_json)
    text = model_json.read_text()
    spec = json.loads(text)
    spec.setdefault("userDefinedMetadata", {})[FACTS_KEY] = dict(facts)
    data = json.dumps(spec).encode()
    _replace(model_json, data)
    return {"bytes_added": len(data) - len(text.encode())}


def _replace(path: Path, data: bytes) -> None:
    with replaced_atomically(path) as tmp:
        tmp.write_bytes(data)


# ---------------------------------------------------------------- every file of an export


@dataclass
class Embedded:
    """What one model file received."""

    name: str            # lit_garbage.formats.FORMATS key
    file: str            # relative to the export folder
    where: str           # the place in that format ("" when not written)
    bytes_added: int = 0
    note: str = ""       # how the output check went, or why nothing was written


def embed_facts(export_dir: str | Path, facts: Mapping[str, Any], formats: Sequence[str],
                tflite: bool = True) -> list[Embedded]:
    """Write `facts` into each format's file in `export_dir`; `tflite=False` leaves the .tflite files as
    converted (`--no-tflite-metadata`)."""
    export_dir = Path(export_dir)
    done = []
    for name in formats:
        row = FORMATS[name]
        rel, where, kind = row.file, row.runtime.facts_place, row.runtime.kind
        if kind == "tflite" and not tflite:
            done.append(Embedded(name, rel, "", note="NO metadata (--no-tflite-metadata): MediaPipe / LiteRT Task "
                                                     "Library cannot load it; alone it predicts class_0..class_N"))
            continue
        result = implementation(row.runtime.writer)(export_dir / rel, facts)
        note = "LiteRT outputs bitwise unchanged on {} random images".format(PROBE_INPUTS) \
            if kind == "tflite" else ("nodes and weights unchanged" if kind == "onnx" else "")
        done.append(Embedded(name, rel, where, result["bytes_added"], note))
    return done
