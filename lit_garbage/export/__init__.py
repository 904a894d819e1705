"""Export a trained checkpoint to ONNX, TensorFlow SavedModel, TFLite (float32/float16/int8) and TFJS.

`Exporter` (exporter.py) drives the chain; each format lives in its own module (onnx.py, tensorflow.py,
tfjs.py), metadata.py describes the result and verify.py proves each file predicts what torch predicts.
Heavy frameworks (TensorFlow, onnx2tf, tensorflowjs) are imported only by the steps that need them, and
the names below load lazily, so importing `lit_garbage.export` does not load the exporter.
"""

__all__ = ["ALL_FORMATS", "ExportError", "ExportResult", "Exporter"]


def __getattr__(name: str):
    if name in __all__:
        from lit_garbage.export import exporter

        return getattr(exporter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
