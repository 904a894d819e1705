"""Every model file format of this project, one row each: the one place that says what a format is.

    from lit_garbage.formats import FORMATS, runtime_of
    FORMATS["tflite_int8"].file                  # "model_int8.tflite", in the export folder
    FORMATS["tflite_int8"].made_by               # "int8": the `export --formats` name that writes it
    runtime_of(Path("model_int8.tflite")).kind   # "tflite": which backend opens a path

A row (`Format`) holds its key (metadata.json's `formats`, verify.json's backend names), its file in an export,
its input layout, the format it is converted from, the `--formats` name that makes it (and whether a plain
export does), the runtime that opens it, its verification label and criterion. A runtime (`Runtime`, shared by
the rows one runtime opens: four .tflite files, one LiteRT) holds how a path is recognised, the backend class
that runs it, where the facts go in such a file, the writer that puts them there and the reader that finds them
again. Everything else reads the rows: the exporter's format choices and build order, the metadata written and
embedded, the backends' dispatch, verification, the format-parity report and the lab.

The code behind a row is named as "module:attribute" and imported only when used (`implementation`): this module
imports nothing of the package, so every floor may read it, and a format's code can live in its own module.
tests/test_layering.py checks that every name resolves, on a floor its user may import.

A new format that an existing runtime opens (another .tflite variant, say) is a row here, its converter's module
under export/ and the Exporter's `export_<name>` step that calls it. A new runtime adds a `Runtime` here and the
code it names: a backend class (inference/ or lower), a facts writer (export/ or lower: beside its converter) and
a reader (the package's top, beside `artifacts.read_facts`, which dispatches to it); a new criterion, if none
fits, goes into `export/references.py`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Runtime:
    """What opens a kind of model file, and where such a file keeps its facts."""

    kind: str                          # the backend kind (`load_backend(path, kind=...)`)
    backend: str                       # "module:Class" of the backend that runs it
    suffixes: tuple[str, ...] = ()     # file suffixes it opens
    markers: tuple[str, ...] = ()      # files that make a folder one of its models
    folder_files: tuple[str, ...] = () # a file of this name stands for its folder (a SavedModel's saved_model.pb)
    facts_place: str = ""              # where the facts go inside such a file, in words (verify.md)
    writer: str | None = None          # "module:function" (path, facts) -> {"bytes_added"}: writes them
    reader: str | None = None          # "module:function" (path) -> facts or None: reads them from the file alone

    def opens(self, path: Path) -> bool:
        if path.is_dir():
            return any((path / marker).is_file() for marker in self.markers)
        return path.suffix.lower() in self.suffixes or path.name in self.folder_files


@dataclass(frozen=True)
class Format:
    """One model file of an export."""

    key: str                           # metadata.json `formats` key, verify.json backend name
    file: str                          # relative to the export folder
    layout: str                        # input layout: "NCHW" or "NHWC" (N = any batch size)
    runtime: Runtime
    label: str                         # its name in verify.md
    made_by: str | None = None         # the `export --formats` name that writes it (None: every export does)
    built_from: str | None = None      # the key of the format it is converted from
    default: bool = True               # whether a plain `export` makes it
    criterion: str | None = None       # how verification judges it (`export.references.criteria`); None: the reference


_BACKENDS = "lit_garbage.inference.backends"
_WRITERS = "lit_garbage.export.metadata"
_READERS = "lit_garbage.artifacts"

TORCH = Runtime("torch", f"{_BACKENDS}:TorchBackend", suffixes=(".ckpt", ".pt", ".pth", ".safetensors"),
                facts_place="the safetensors header")
ONNX = Runtime("onnx", f"{_BACKENDS}:OnnxBackend", suffixes=(".onnx",), facts_place="metadata_props",
               writer=f"{_WRITERS}:write_onnx_metadata", reader=f"{_READERS}:read_onnx_facts")
SAVED_MODEL = Runtime("saved_model", f"{_BACKENDS}:SavedModelBackend",
                      markers=("saved_model.pb", "saved_model.pbtxt"), folder_files=("saved_model.pb",),
                      facts_place="assets.extra/", writer=f"{_WRITERS}:write_saved_model_metadata",
                      reader=f"{_READERS}:read_saved_model_facts")
TFLITE = Runtime("tflite", f"{_BACKENDS}:TFLiteBackend", suffixes=(".tflite",), facts_place="TFLite Metadata",
                 writer=f"{_WRITERS}:write_tflite_metadata", reader=f"{_READERS}:read_tflite_facts")
TFJS = Runtime("tfjs", f"{_BACKENDS}:TFJSBackend", suffixes=(".json",), markers=("model.json",),
               facts_place="userDefinedMetadata", writer=f"{_WRITERS}:write_tfjs_metadata",
               reader=f"{_READERS}:read_tfjs_facts")


def _tflite(precision: str, made_by: str, criterion: str, default: bool = True) -> Format:
    return Format(f"tflite_{precision}", f"model_{precision}.tflite", "NHWC", TFLITE,
                  f"TFLite {precision} (LiteRT)", made_by, "saved_model", default, criterion)


_ROWS = (
    # The weights every export writes beside the converted files, and the reference they are verified against.
    Format("torch", "model.safetensors", "NCHW", TORCH, "torch (reference)"),
    Format("onnx", "model.onnx", "NCHW", ONNX, "ONNX (onnxruntime)", "onnx", criterion="fp32"),
    Format("saved_model", "saved_model", "NHWC", SAVED_MODEL, "SavedModel (TensorFlow)", "saved_model", "onnx",
           criterion="fp32"),
    _tflite("float32", "tflite", "fp32"),
    _tflite("float16", "tflite", "fp16"),
    _tflite("int8", "int8", "int8"),
    # Only when asked for: LiteRT runs it on reference kernels on CPU, about 30x float32's latency
    # (docs/results/2026-12-03-int8.md).
    _tflite("int16x8", "int16x8", "int16x8", default=False),
    Format("tfjs", "tfjs/model.json", "NHWC", TFJS, "TFJS (Node, wasm)", "tfjs", "saved_model", criterion="fp32"),
)
FORMATS: dict[str, Format] = {row.key: row for row in _ROWS}
RUNTIMES: dict[str, Runtime] = {row.runtime.kind: row.runtime for row in _ROWS}

# The `export --formats` names, in build order -> the files each writes, and the names it builds on.
FORMAT_FILES: dict[str, tuple[str, ...]] = {}
for _row in _ROWS:
    if _row.made_by:
        FORMAT_FILES[_row.made_by] = (*FORMAT_FILES.get(_row.made_by, ()), _row.key)
REQUIRES: dict[str, tuple[str, ...]] = {
    name: tuple(dict.fromkeys(FORMATS[FORMATS[key].built_from].made_by for key in keys if FORMATS[key].built_from))
    for name, keys in FORMAT_FILES.items()}
DEFAULT_FORMATS = tuple(name for name, keys in FORMAT_FILES.items() if all(FORMATS[k].default for k in keys))


def runtime_of(path: str | Path) -> Runtime | None:
    """The runtime that opens `path` (a folder by the files in it, a file by its suffix or name), None if none."""
    path = Path(path)
    return next((runtime for runtime in RUNTIMES.values() if runtime.opens(path)), None)


def implementation(name: str) -> Any:
    """The object a row names as "module:attribute" (imported now: a row costs nothing until it is used)."""
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute)
