"""The one metadata schema every exported format gets, and the light readers that find it again.

`build_metadata` builds the facts once: class names in output order, image size, the input contract (RGB,
pixel / 255 in [0, 1], layout per format, the resize, normalisation inside the model), the output, name /
version / description / author / license, checkpoint and split-manifest hashes, the dataset root (metadata.json
only), the shareable weights file `model.safetensors` (see `lit_garbage.training.checkpoints`), metrics and tool
versions.
They are written as `metadata.json` + `labels.txt` beside the model files (`write_metadata`), and
`embedded_facts` (the same dict without this machine's paths and the export time) goes into every model
file in that format's own place (`lit_garbage.export.metadata`):

| file | where the facts are |
|---|---|
| `*.tflite` | TFLite Metadata (read by MediaPipe / LiteRT Task Library); labels.txt and `lit_garbage.json` as associated files |
| `model.onnx` | metadata_props (`lit_garbage` = the facts as JSON, plus ONNX's standard author / license / Image.* keys) |
| `saved_model/` | `assets.extra/labels.txt` and `assets.extra/lit_garbage.json` |
| `tfjs/model.json` | `userDefinedMetadata.lit_garbage` (tfjs: `GraphModel.metadata`) |

`read_facts(path)` reads them back from one model file alone with the standard library (plus `onnx` for
ONNX files): a .tflite file with metadata is also a zip archive holding its associated files, so neither
TensorFlow nor tflite-support is needed to learn the class names.

One source for each fact: class names, image size and normalisation come from the checkpoint's
hyper-parameters; hashes from the checkpoint and split-manifest files; metrics from the run's results.json.
"""

from __future__ import annotations

import copy
import datetime as _dt
import importlib.metadata
import json
import unicodedata
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from lit_garbage import __version__
from lit_garbage.formats import FORMATS, implementation, runtime_of

METADATA_FILE = "metadata.json"
LABELS_FILE = "labels.txt"
FACTS_FILE = "lit_garbage.json"  # the embedded facts: TFLite associated file, SavedModel assets.extra file
FACTS_KEY = "lit_garbage"        # ONNX metadata_props key and TFJS userDefinedMetadata key
# 2: name / version / description / author / license and input.resize in words; facts embedded in every file.
SCHEMA_VERSION = 2

MODEL_NAME = "lit-garbage"
AUTHOR = "lit-garbage"
LICENSE = "MIT"  # the project's own license
# What a client must do to an image before the model (the same for every format).
RESIZE = ("resize the whole image to {s} x {s} with an antialiased bilinear resize (e.g. PIL Image.resize "
          "with BILINEAR), aspect ratio not kept, no crop")

_VERSIONED = ("lit-garbage", "torch", "onnx", "onnxruntime", "onnxscript", "onnx2tf", "onnxsim", "tensorflow",
              "tensorflowjs", "ai-edge-litert", "tflite-support")


def package_versions(names: Sequence[str] = _VERSIONED) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def input_spec(fmt: str, image_size: int) -> dict[str, Any]:
    layout = FORMATS[fmt].layout
    shape = [None, 3, image_size, image_size] if layout == "NCHW" else [None, image_size, image_size, 3]
    return {"name": "images", "shape": shape, "layout": layout, "dtype": "float32",
            "channels": "RGB", "range": [0.0, 1.0]}


def describe(class_names: Sequence[str], image_size: int) -> str:
    """One paragraph for people: what the model is and what it takes (TFLite / ONNX description fields)."""
    return (f"Household-garbage image classifier ({len(class_names)} classes: {', '.join(class_names)}). "
            f"Input: an RGB image, {RESIZE.format(s=image_size)}, values pixel / 255 in [0, 1] "
            "(the mean/std normalisation is inside the model). Output: softmax probabilities, one per class "
            "in labels.txt order.")


def build_metadata(*, class_names: Sequence[str], image_size: int, normalisation: Mapping[str, Any],
                   formats: Sequence[str], checkpoint: Path, checkpoint_sha256: str,
                   manifest: Path | None, manifest_sha256: str | None, training: Mapping[str, Any] | None,
                   calibration: Mapping[str, Any] | None, backbone: str | None,
                   onnx2tf_options: Mapping[str, Any] | None = None, name: str | None = None,
                   version: str | None = None, dataset_root: Path | None = None,
                   weights: Mapping[str, Any] | None = None, export_dir: Path | None = None) -> dict[str, Any]:
    """The facts of one export (metadata.json); `embedded_facts` of it go into every model file."""
    meta = {
        "schema_version": SCHEMA_VERSION,
        "name": name or MODEL_NAME,
        "version": version or __version__,
        "description": describe(class_names, image_size),
        "author": AUTHOR,
        "license": LICENSE,
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
            "resize": RESIZE.format(s=image_size),
            "normalisation_inside_model": dict(normalisation),
        },
        "output": {"name": "probabilities", "shape": [None, len(class_names)], "dtype": "float32",
                   "meaning": "softmax class probabilities in class_names order"},
        "formats": {fmt: {"path": FORMATS[fmt].file, "input": input_spec(fmt, image_size)}
                    for fmt in formats if fmt in FORMATS},
        # Paths relative to the export folder (`export_dir`), so an export beside its run finds the run's split
        # and dataset without opening the checkpoint; never absolute: a shipped file must not tell where this
        # machine keeps its files or whose they are (`portable_path`: None where only an absolute path would do).
        "checkpoint": {"file": checkpoint.name, "path": portable_path(checkpoint, export_dir),
                       "sha256": checkpoint_sha256},
        "split_manifest": {"file": manifest.name if manifest else None,
                           "path": portable_path(manifest, export_dir) if manifest else None,
                           "sha256": manifest_sha256,
                           "dataset_root": portable_path(dataset_root, export_dir) if dataset_root else None},
        "training_metrics": dict(training) if training is not None else None,
        "int8_calibration": dict(calibration) if calibration is not None else None,
        "versions": package_versions(),
    }
    if weights is not None:  # model.safetensors: the weights, shareable without a pickle
        meta["weights"] = dict(weights)
    if onnx2tf_options:  # only graphs that need extra onnx2tf options (not the default MobileNetV2) record them
        meta["onnx2tf_options"] = dict(onnx2tf_options)
    return meta


def portable_path(path: str | Path, export_dir: Path | None) -> str | None:
    """`path` relative to the export folder, or None when that would still name this machine's folders: a path
    from the file-system root, or one through the user's name (e.g. ../../home/alice/data)."""
    if export_dir is None:
        return None
    import getpass
    import os

    target, start = Path(path).resolve(), Path(export_dir).resolve()
    common = Path(os.path.commonpath([target, start]))
    if common == Path(common.anchor):  # nothing shared but the root: the whole absolute path would show
        return None
    rel = Path(os.path.relpath(target, start))
    try:
        private = {getpass.getuser(), Path.home().name}
    except (KeyError, OSError):
        private = {Path.home().name}
    if any(part in private for part in rel.parts):
        return None
    return rel.as_posix()


def local_folders() -> dict[str, str]:
    """This machine's folders that shipped text must not name -> what it says instead, longest first."""
    import os
    import sys
    import tempfile

    here = Path(__file__).resolve().parent
    found = {str(here.parent): "<lit-garbage>", str(Path(sys.prefix).resolve()): "<python>",
             sys.prefix: "<python>", str(Path(tempfile.gettempdir()).resolve()): "<tmp>",
             str(Path.cwd()): "<cwd>", str(Path.home()): "~", os.path.realpath(Path.home()): "~"}
    return dict(sorted(((k, v) for k, v in found.items() if len(k) > 1), key=lambda kv: -len(kv[0])))


def without_local_paths(text: str) -> str:
    """`text` with this machine's folders (the project's, Python's, the temporary one, the working one, home)
    replaced by short placeholders: for messages written into an export."""
    for folder, placeholder in local_folders().items():
        text = text.replace(folder, placeholder)
    return text


def embedded_facts(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """What goes inside the model files: metadata.json without this machine's absolute paths (a shipped file
    must not carry them) and without the export time (the same facts give the same model bytes)."""
    facts = copy.deepcopy(dict(metadata))
    facts.pop("created", None)
    for key in ("checkpoint", "split_manifest"):
        if isinstance(facts.get(key), dict):
            facts[key].pop("path", None)
            facts[key].pop("dataset_root", None)
    return facts


# ---------------------------------------------------------------- the facts a model file carries, checked once

# image_size bounds: MobileNetV2 needs 32 px at least (images.MIN_IMAGE_SIZE); beyond 2048 px a single decoded
# input is 50 MB and a batch a memory error, and no export of this project is near it.
IMAGE_SIZE_RANGE = (32, 2048)
MAX_CLASSES = 10_000
MAX_NAME_LENGTH = 200
MAX_FACTS_BYTES = 4 * 2**20  # a facts / labels file inside a model file: a few KB in every export of this project


class FactsError(ValueError):
    """What a model file (or the metadata beside it) says about itself does not hold; one line."""


def name_problem(name: Any) -> str | None:
    """Why `name` cannot be a class name (a line of labels.txt, a label on the page), or None."""
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not text"
    if not name.strip():
        return "is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long (at most {MAX_NAME_LENGTH})"
    bad = sorted({c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs")})
    if bad:
        return f"holds control characters ({', '.join(repr(c) for c in bad)})"
    return None


def check_facts(class_names: Any, image_size: Any, *, outputs: int | None = None, input_size: int | None = None,
                source: str = "metadata") -> tuple[list[str] | None, int | None]:
    """(class names, image size) once checked: the one validation of what a model file claims about itself,
    whichever backend reads it (and `serve`). `class_names` / `image_size` may be None (not given);
    `outputs` / `input_size` are the model's own shapes where known. Raises FactsError naming `source`."""
    if image_size is not None:
        low, high = IMAGE_SIZE_RANGE
        if not (isinstance(image_size, int) and not isinstance(image_size, bool) and low <= image_size <= high):
            raise FactsError(f"{source}: image_size must be an integer from {low} to {high}, got "
                             f"{str(image_size)[:40]!s}")
        if input_size is not None and image_size != input_size:
            raise FactsError(f"{source} says image_size {image_size} but the model's input is {input_size}")
    if class_names is not None:
        if not isinstance(class_names, list) or not 2 <= len(class_names) <= MAX_CLASSES:
            what = f"{len(class_names)} names" if isinstance(class_names, list) else type(class_names).__name__
            raise FactsError(f"{source}: class_names must be a list of 2 to {MAX_CLASSES:,} names, got {what}")
        for i, name in enumerate(class_names):
            problem = name_problem(name)
            if problem:
                raise FactsError(f"{source}: class name {i} ({str(name)[:40]!r}) {problem}")
        if len(set(class_names)) != len(class_names):
            raise FactsError(f"{source}: class_names repeat a name")
        if outputs is not None and len(class_names) != outputs:
            raise FactsError(f"{source} lists {len(class_names)} class names for a model with {outputs} outputs")
    return (list(class_names) if class_names is not None else None), image_size


def labels_text(class_names: Sequence[str]) -> str:
    return "".join(f"{name}\n" for name in class_names)


def write_metadata(folder: str | Path, metadata: Mapping[str, Any]) -> None:
    folder = Path(folder)
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    (folder / LABELS_FILE).write_text(labels_text(metadata["class_names"]))


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
                if candidate.stat().st_size > MAX_FACTS_BYTES:  # a few KB in every export: not one of ours
                    continue
                meta = json.loads(candidate.read_text())
            except (OSError, ValueError):
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


# ---------------------------------------------------------------- the facts inside one model file


def read_facts(path: str | Path) -> dict[str, Any] | None:
    """The facts a model file carries itself (None: it carries none), whatever lies beside it.

    .tflite: the `lit_garbage.json` associated file (or just labels.txt), read with `zipfile`; .onnx: the
    `lit_garbage` metadata prop (older exports: the `class_names` / `image_size` props); a SavedModel
    folder: `assets.extra/`; a TFJS model.json (or its folder): `userDefinedMetadata.lit_garbage`.
    The result has at least `class_names`; `image_size` too unless only a labels file was found.
    """
    path = Path(path)
    runtime = runtime_of(path)
    if runtime is None or runtime.reader is None:
        return None
    read = implementation(runtime.reader)
    return read(path.parent if path.name in runtime.folder_files else path)


def read_onnx_facts(path: str | Path) -> dict[str, Any] | None:
    """Facts of an ONNX file: its `lit_garbage` metadata prop (older exports: `class_names` / `image_size`)."""
    try:
        props = read_onnx_metadata(path)
    except Exception:  # not a readable ONNX file (protobuf DecodeError, OSError): it carries no facts
        return None
    facts = props.get(FACTS_KEY)
    if isinstance(facts, dict) and "class_names" in facts:
        return facts
    if isinstance(props.get("class_names"), list):  # exports made before the facts were embedded
        return {"class_names": props["class_names"], "image_size": props.get("image_size")}
    return None


def read_tflite_facts(path: str | Path) -> dict[str, Any] | None:
    """Facts of a .tflite file from its TFLite Metadata's associated files, with the standard library only.

    The metadata writer appends the associated files to the flatbuffer as a zip archive, so `zipfile` opens
    the .tflite file itself."""
    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())

            def read(name: str) -> bytes:  # capped: the sizes in a zip are the writer's word, not the bytes'
                with zf.open(name) as f:
                    data = f.read(MAX_FACTS_BYTES + 1)
                if len(data) > MAX_FACTS_BYTES:
                    raise FactsError(f"{path}: the embedded {name} is over {MAX_FACTS_BYTES // 2**20} MiB "
                                     "(a few KB in a real export); refusing to read it")
                return data

            if FACTS_FILE in names:
                facts = json.loads(read(FACTS_FILE))
                return facts if isinstance(facts, dict) and "class_names" in facts else None
            if LABELS_FILE in names:  # metadata written by another tool: labels only
                return {"class_names": read(LABELS_FILE).decode().splitlines()}
    except FactsError:
        raise
    except (OSError, zipfile.BadZipFile, ValueError, UnicodeDecodeError, RuntimeError, EOFError):
        return None
    return None


def read_saved_model_facts(folder: str | Path) -> dict[str, Any] | None:
    extra = Path(folder) / "assets.extra"
    try:
        for name in (FACTS_FILE, LABELS_FILE):
            if (extra / name).is_file() and (extra / name).stat().st_size > MAX_FACTS_BYTES:
                raise FactsError(f"{extra / name} is over {MAX_FACTS_BYTES // 2**20} MiB (a few KB in a real "
                                 "export); refusing to read it")
        if (extra / FACTS_FILE).is_file():
            facts = json.loads((extra / FACTS_FILE).read_text())
            return facts if isinstance(facts, dict) and "class_names" in facts else None
        if (extra / LABELS_FILE).is_file():
            return {"class_names": (extra / LABELS_FILE).read_text().splitlines()}
    except (OSError, ValueError):
        return None
    return None


def read_tfjs_facts(model_json: str | Path) -> dict[str, Any] | None:
    """Facts of a TFJS graph model (`model.json`, or the folder holding it)."""
    model_json = Path(model_json)
    if model_json.is_dir():
        model_json = model_json / "model.json"
    try:
        spec = json.loads(model_json.read_text())
    except (OSError, ValueError):
        return None
    facts = (spec.get("userDefinedMetadata") or {}).get(FACTS_KEY) if isinstance(spec, dict) else None
    return facts if isinstance(facts, dict) and "class_names" in facts else None
