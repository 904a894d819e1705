"""The format registry: every row's code resolves, and every table derived from the rows says what it said before."""

from __future__ import annotations

from pathlib import Path

from lit_garbage.export import references
from lit_garbage.export.exporter import (
    ALL_FORMATS,
    DEFAULT_FORMATS,
    EXPORT_NAMES,
    Exporter,
)
from lit_garbage.formats import (
    FORMAT_FILES,
    FORMATS,
    REQUIRES,
    RUNTIMES,
    implementation,
    runtime_of,
)
from lit_garbage.inference.backends import KINDS, Backend


def test_every_named_implementation_resolves_and_fits_its_row():
    for runtime in RUNTIMES.values():
        backend = implementation(runtime.backend)
        assert issubclass(backend, Backend) and backend.kind == runtime.kind, runtime
        for name in (runtime.writer, runtime.reader):
            assert name is None or callable(implementation(name)), name


def test_every_exported_format_has_a_step_a_criterion_and_a_runtime_that_opens_its_file():
    criteria = references.criteria()
    for key, row in FORMATS.items():
        if row.made_by:
            assert callable(getattr(Exporter, f"export_{row.made_by}")), key
            assert key in criteria and row.runtime.writer, key
        assert runtime_of(Path(row.file)) is row.runtime or row.runtime.markers, key  # folders: by their files
    assert set(criteria) == {k for k, row in FORMATS.items() if row.made_by}


def test_the_derived_tables_are_the_former_ones():
    assert FORMAT_FILES == {"onnx": ("onnx",), "saved_model": ("saved_model",),
                            "tflite": ("tflite_float32", "tflite_float16"), "int8": ("tflite_int8",),
                            "int16x8": ("tflite_int16x8",), "tfjs": ("tfjs",)}
    assert ALL_FORMATS == ("onnx", "saved_model", "tflite", "int8", "int16x8", "tfjs")
    assert DEFAULT_FORMATS == ("onnx", "saved_model", "tflite", "int8", "tfjs")
    assert REQUIRES == {"onnx": (), "saved_model": ("onnx",), "tflite": ("saved_model",), "int8": ("saved_model",),
                        "int16x8": ("saved_model",), "tfjs": ("saved_model",)}
    assert KINDS == ("torch", "onnx", "saved_model", "tflite", "tfjs")
    assert references.FLOAT32 == ("onnx", "saved_model", "tflite_float32", "tfjs")
    assert (references.FLOAT16, references.INT8, references.INT16X8) == \
        (("tflite_float16",), ("tflite_int8",), ("tflite_int16x8",))
    assert EXPORT_NAMES >= {"model.safetensors", "model.onnx", "saved_model", "tfjs", "model_float32.tflite",
                            "model_float16.tflite", "model_int8.tflite", "model_int16x8.tflite"}


def test_paths_find_their_runtime(tmp_path):
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "model.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    names = ("sm", "js", "empty", "a.ckpt", "a.PT", "m.safetensors", "m.onnx", "m.tflite", "model.json",
             "saved_model.pb", "saved_model.pbtxt", "m.bin")
    kinds = {name: getattr(runtime_of(tmp_path / name), "kind", None) for name in names}
    assert kinds == {"sm": "saved_model", "js": "tfjs", "empty": None, "a.ckpt": "torch", "a.PT": "torch",
                     "m.safetensors": "torch", "m.onnx": "onnx", "m.tflite": "tflite", "model.json": "tfjs",
                     "saved_model.pb": "saved_model", "saved_model.pbtxt": None, "m.bin": None}
