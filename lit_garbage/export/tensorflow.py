"""ONNX -> TensorFlow SavedModel + TFLite (float32, float16) with onnx2tf; int8 TFLite from that SavedModel.

onnx2tf (1.28.8) is driven through its Python API the way mature exporters drive it: `-osd`
(`output_signaturedefs=True`) for a `serving_default` signature (needed by TF Serving and the TFJS
converter), the SavedModel comes out NHWC without extra flags, and the float32/float16 TFLite files
come out of the same conversion. Two facts measured on this stack are handled here:

- onnx2tf downloads `calibration_image_sample_data_20x128x128x3_float32.npy` (its check data) unless that
  file is in the working directory; the conversion therefore runs inside a work folder where that file
  is written from the run's own images, and any attempt to download is turned into an error.
- onnx2tf shells out to the `onnxsim` executable and silently skips simplification without it; the
  virtualenv's `bin` folder is put on PATH and a missing `onnxsim` is an error.

int8: onnx2tf's `-oiqt` runs `tf.lite.TFLiteConverter.from_saved_model` on its own SavedModel with a
representative dataset, then writes four more variants (dynamic range, full-integer I/O, two int16-activation
ones) that this project does not ship: about 4x the conversion time. `quantize_int8` makes the same converter
call for the one variant shipped: int8 weights and activations with float32 input/output, so the int8 file
keeps the same input contract as every other format. Calibration images are NHWC float32 in [0, 1]
(normalisation is inside the model, so no mean/std is applied to them).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

SIGNATURE = "serving_default"
ONNX2TF_SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"


class ConversionError(RuntimeError):
    """A conversion step failed; the message says which and why."""


@contextlib.contextmanager
def _onnx2tf_environment(workdir: Path, sample_images_nhwc: np.ndarray) -> Iterator[None]:
    """cwd = workdir holding onnx2tf's sample file, `onnxsim` on PATH, network downloads refused."""
    import onnx2tf.utils.common_functions as common

    np.save(workdir / ONNX2TF_SAMPLE_FILE, np.ascontiguousarray(sample_images_nhwc, dtype=np.float32))
    bin_dir = str(Path(sys.executable).parent)
    old_path, old_cwd = os.environ.get("PATH", ""), os.getcwd()
    new_path = os.pathsep.join([bin_dir, old_path]) if old_path else bin_dir
    if shutil.which("onnxsim", path=new_path) is None:
        raise ConversionError("the `onnxsim` executable is not on PATH (pip package onnxsim); onnx2tf needs it "
                              "to simplify the graph and would silently skip that step")

    class _NoNetwork:
        class exceptions:  # onnx2tf catches requests.exceptions.Timeout
            Timeout = TimeoutError

        @staticmethod
        def get(url, *args, **kwargs):
            raise ConversionError(f"onnx2tf tried to download {url}; the exporter never uses the network")

    old_requests = common.requests
    os.environ["PATH"] = new_path
    os.chdir(workdir)
    common.requests = _NoNetwork
    try:
        yield
    finally:
        common.requests = old_requests
        os.chdir(old_cwd)
        os.environ["PATH"] = old_path


def onnx_to_saved_model(onnx_path: str | Path, out_dir: str | Path, sample_images_nhwc: np.ndarray,
                        verbose: bool = False) -> dict[str, Path]:
    """Convert with onnx2tf. Returns {'saved_model': dir, 'float32': tflite, 'float16': tflite}.

    `out_dir` receives the SavedModel (it is the SavedModel folder) and the two TFLite files; the
    caller moves them where they belong. `sample_images_nhwc`: real images, float32 [N, 128, 128, 3] in [0, 1].
    """
    import onnx2tf

    onnx_path, out_dir = Path(onnx_path).resolve(), Path(out_dir).resolve()
    workdir = out_dir.parent / f".{out_dir.name}.onnx2tf-work"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        with _onnx2tf_environment(workdir, sample_images_nhwc):
            quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
            try:
                with quiet:  # onnx2tf / Keras print the whole SavedModel signature even when non-verbose
                    onnx2tf.convert(
                        input_onnx_file_path=str(onnx_path),
                        output_folder_path=str(out_dir),
                        output_signaturedefs=True,                     # -osd: serving_default signature
                        copy_onnx_input_output_names_to_tflite=True,   # TFLite tensors named images/probabilities
                        non_verbose=not verbose,
                        verbosity="info" if verbose else "error",
                    )
            except SystemExit as err:  # onnx2tf calls sys.exit(1) on conversion errors
                raise ConversionError(f"onnx2tf failed to convert {onnx_path} (exit {err.code}); "
                                      "run with --verbose for its log") from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    files = {"saved_model": out_dir, "float32": out_dir / "model_float32.tflite",
             "float16": out_dir / "model_float16.tflite"}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing or not (out_dir / "saved_model.pb").is_file():
        raise ConversionError(f"onnx2tf finished without writing {', '.join(missing) or 'saved_model.pb'}")
    return files


def quantize_int8(saved_model_dir: str | Path, tflite_path: str | Path, calibration_nhwc: np.ndarray) -> Path:
    """Full-integer (int8 weights and activations, float32 I/O) TFLite calibrated on `calibration_nhwc`
    (float32 [N, H, W, 3] in [0, 1], real training images). Same converter settings as onnx2tf's `-oiqt`."""
    import tensorflow as tf

    if len(calibration_nhwc) == 0:
        raise ConversionError("int8 quantisation needs at least one calibration image")

    def representative_dataset():
        for image in calibration_nhwc:
            yield [tf.constant(image[None], dtype=tf.float32)]

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[SIGNATURE])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.SELECT_TF_OPS]
    converter.representative_dataset = representative_dataset
    converter.inference_input_type = tf.float32
    converter.inference_output_type = tf.float32
    try:
        model = converter.convert()
    except Exception as err:  # TF raises ConverterError / RuntimeError with a long log
        raise ConversionError(f"int8 quantisation of {saved_model_dir} failed: {str(err)[:500]}") from err
    tflite_path = Path(tflite_path)
    tflite_path.write_bytes(model)
    return tflite_path
