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
(normalisation is inside the model, so no mean/std is applied to them). `quantize_int16x8` is the same call
with int16 activations (TFLite's 16x8 mode, `EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8`):
an opt-in file with int8's weights and float's answers, for runtimes with int16 kernels (LiteRT runs it on
its reference kernels on CPU; docs/results/2026-12-03-int8.md).

Other timm backbones: what a graph needs is chosen from the ops the ONNX file holds, never by the user:
onnx2tf reads a rewritten copy where a padded MaxPool or a HardSwish would break int8 / TFJS
(`onnx2tf_input`), and per-op onnx2tf options would come from `ONNX2TF_OP_OPTIONS` (none needed so far).
A graph without those ops (the default MobileNetV2) is converted exactly as above. See docs/backbones.md.
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


# ONNX op type -> the onnx2tf keyword arguments a graph holding it needs (list values are merged).
# Empty for every backbone tried so far (docs/backbones.md): the ops that broke a format are rewritten in
# the copy onnx2tf reads instead (`onnx2tf_input`). Tried and not enough: `-rtpo HardSwish` (the TFJS
# converter's grappler still fuses the hard-swish into its conv); `-dgc` would split ConvNeXt's depthwise
# convs into one conv per channel (thousands of ops).
ONNX2TF_OP_OPTIONS: dict[str, dict[str, object]] = {}


def onnx2tf_options(onnx_path: str | Path) -> dict[str, object]:
    """The extra onnx2tf keyword arguments for this graph (`ONNX2TF_OP_OPTIONS`); {} for MobileNetV2."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    for fn in model.functions:  # ops inside local functions (none with optimize=True, but cheap to include)
        ops |= {n.op_type for n in fn.node}
    options: dict[str, object] = {}
    for op in sorted(ops & set(ONNX2TF_OP_OPTIONS)):
        for key, value in ONNX2TF_OP_OPTIONS[op].items():
            if isinstance(value, list):
                merged = options.setdefault(key, [])
                merged.extend(v for v in value if v not in merged)
            else:
                options[key] = value
    return options


# Producers whose output is never negative: a MaxPool reading them may pad with 0 instead of -inf.
_NON_NEGATIVE_OPS = {"Relu"}


def onnx2tf_input(onnx_path: str | Path, out_path: str | Path) -> Path:
    """The ONNX graph onnx2tf converts: `onnx_path` itself, or a rewritten copy at `out_path`.

    Three rewrites, all exact in float up to rounding (the shipped `model.onnx` is never changed; graphs without these
    ops, such as MobileNetV2, are passed on untouched, and `onnx_to_saved_model` then hands onnx2tf a copy):

    - a padded MaxPool (ResNet's stem: Conv -> Relu -> MaxPool 3x3/2, pad 1) has no TensorFlow padding mode,
      so onnx2tf pads explicitly with float32's minimum (-3.4e38). Calibrated int8 then gives that tensor (and
      the ReLU output sharing its scale) a scale of ~1e36: every activation rounds to 0 and LiteRT's XNNPACK
      delegate refuses the model ("failed to prepare"). When the MaxPool reads a Relu (never negative),
      padding with 0 gives the same maximum: an explicit `Pad(0)` before an unpadded MaxPool (what onnx2tf
      itself does under `-oiqt`, which this exporter does not use).
    - timm's LayerNorm2d (ConvNeXt: Transpose to NHWC -> LayerNormalization -> Transpose back) becomes a
      LayerNorm over the channel axis written with ReduceMean / Sqrt / Div. onnx2tf keeps such explicit
      Transposes in ONNX layout, and the depthwise Conv that follows then fails its depthwise test (it reads
      the channel count before transposing its input) and becomes a grouped Conv2D, which TFJS cannot run
      ("depth of input (40) must match input depth for filter 1"); without the transposes it stays NHWC.
    - HardSwish (MobileNetV3) becomes `x * HardSigmoid(x; 1/6, 1/2)`. onnx2tf writes HardSwish as
      `x * relu6(x + 3) / 6`, which TensorFlow's grappler remapper (run by the TFJS converter on oneDNN CPU
      builds) fuses into `_FusedConv2D(..., _FusedHardSwish)`: no TFJS backend implements that activation.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(onnx_path))
    producers = {out: n for n in model.graph.node for out in n.output}
    channel_norms = _channel_layer_norms(model)
    skip = {id(n) for first, (norm, last) in channel_norms.items() for n in (norm, last)}
    nodes, changed = [], False
    for node in model.graph.node:
        if id(node) in skip:
            continue
        if id(node) in channel_norms:
            nodes.extend(_channel_layer_norm_nodes(model, node, *channel_norms[id(node)]))
            changed = True
            continue
        attrs = {a.name: a for a in node.attribute}
        pads = list(attrs["pads"].ints) if "pads" in attrs else []
        source = producers.get(node.input[0]) if node.input else None
        auto_pad = helper.get_attribute_value(attrs["auto_pad"]) if "auto_pad" in attrs else b"NOTSET"
        ceil_mode = helper.get_attribute_value(attrs["ceil_mode"]) if "ceil_mode" in attrs else 0
        if (node.op_type == "MaxPool" and any(pads) and auto_pad in (b"NOTSET", "NOTSET") and not ceil_mode
                and source is not None and source.op_type in _NON_NEGATIVE_OPS):
            half = len(pads) // 2  # ONNX pads: [x1_begin, x2_begin, ..., x1_end, x2_end, ...] over spatial axes
            full = [0, 0] + pads[:half] + [0, 0] + pads[half:]  # Pad: all axes, N and C unpadded
            pads_name, padded = f"{node.name}_zero_pads", f"{node.input[0]}_zero_padded"
            model.graph.initializer.append(numpy_helper.from_array(np.asarray(full, dtype=np.int64), pads_name))
            nodes.append(helper.make_node("Pad", [node.input[0], pads_name], [padded], mode="constant",
                                          name=f"{node.name}_zero_pad"))
            node.input[0] = padded
            attrs["pads"].ints[:] = [0] * len(pads)
            changed = True
        elif node.op_type == "HardSwish":
            gate = f"{node.output[0]}_hard_sigmoid"
            nodes.append(helper.make_node("HardSigmoid", [node.input[0]], [gate], alpha=1.0 / 6.0, beta=0.5,
                                          name=f"{node.name}_hard_sigmoid"))
            node = helper.make_node("Mul", [node.input[0], gate], list(node.output), name=f"{node.name}_mul")
            changed = True
        nodes.append(node)
    if not changed:
        return Path(onnx_path)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {name for n in nodes for name in n.input}
    kept = [i for i in model.graph.initializer if i.name in used]  # the replaced LayerNorms' own weights go
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    onnx.checker.check_model(model)
    onnx.save_model(model, str(out_path))
    return Path(out_path)


def _channel_layer_norms(model) -> dict[int, tuple]:
    """{id(Transpose to NHWC): (LayerNormalization over C, Transpose back to NCHW)}: timm's LayerNorm2d."""
    from onnx import helper

    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    outputs = {o.name for o in model.graph.output}

    def only_consumer(node):
        users = consumers.get(node.output[0], [])
        return users[0] if len(users) == 1 and node.output[0] not in outputs else None

    def perm(node):
        return [list(helper.get_attribute_value(a)) for a in node.attribute if a.name == "perm"]

    found = {}
    for first in model.graph.node:
        if first.op_type != "Transpose" or perm(first) != [[0, 2, 3, 1]]:
            continue
        norm = only_consumer(first)
        if norm is None or norm.op_type != "LayerNormalization" or len(norm.input) != 3 or len(norm.output) != 1:
            continue
        axis = [helper.get_attribute_value(a) for a in norm.attribute if a.name == "axis"]
        last = only_consumer(norm)
        if axis in ([-1], [3]) and last is not None and last.op_type == "Transpose" and perm(last) == [[0, 3, 1, 2]]:
            found[id(first)] = (norm, last)
    return found


def _channel_layer_norm_nodes(model, first, norm, last) -> list:
    """LayerNorm over axis 1 of an NCHW tensor, without transposes: (x - mean) / sqrt(var + eps) * w + b."""
    from onnx import helper, numpy_helper

    eps = next((helper.get_attribute_value(a) for a in norm.attribute if a.name == "epsilon"), 1e-5)
    inits = {i.name: i for i in model.graph.initializer}
    x, out, tag = first.input[0], last.output[0], norm.name or norm.output[0]
    consts = {"axes": np.asarray([1], dtype=np.int64), "eps": np.asarray(eps, dtype=np.float32)}
    for key, source in (("scale", norm.input[1]), ("shift", norm.input[2])):
        if source not in inits:
            raise ConversionError(f"LayerNormalization {tag}: {key} is not a constant")
        consts[key] = numpy_helper.to_array(inits[source]).astype(np.float32).reshape(1, -1, 1, 1)
    names = {key: f"{tag}_nchw_{key}" for key in consts}
    model.graph.initializer.extend(numpy_helper.from_array(v, names[k]) for k, v in consts.items())
    t = {k: f"{tag}_nchw_{k}" for k in ("mean", "centred", "square", "var", "var_eps", "std", "normed", "scaled")}
    make = helper.make_node
    return [
        make("ReduceMean", [x, names["axes"]], [t["mean"]], keepdims=1, name=t["mean"]),
        make("Sub", [x, t["mean"]], [t["centred"]], name=t["centred"]),
        make("Mul", [t["centred"], t["centred"]], [t["square"]], name=t["square"]),
        make("ReduceMean", [t["square"], names["axes"]], [t["var"]], keepdims=1, name=t["var"]),
        make("Add", [t["var"], names["eps"]], [t["var_eps"]], name=t["var_eps"]),
        make("Sqrt", [t["var_eps"]], [t["std"]], name=t["std"]),
        make("Div", [t["centred"], t["std"]], [t["normed"]], name=t["normed"]),
        make("Mul", [t["normed"], names["scale"]], [t["scaled"]], name=t["scaled"]),
        make("Add", [t["scaled"], names["shift"]], [out], name=f"{tag}_nchw_out"),
    ]


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
                        verbose: bool = False, options: dict[str, object] | None = None) -> dict[str, Path]:
    """Convert with onnx2tf. Returns {'saved_model': dir, 'float32': tflite, 'float16': tflite}.

    `out_dir` receives the SavedModel (it is the SavedModel folder) and the two TFLite files; the
    caller moves them where they belong. `sample_images_nhwc`: real images, float32 [N, 128, 128, 3] in [0, 1].
    `options`: extra onnx2tf keyword arguments; None: chosen from the graph (`onnx2tf_options`).
    """
    import onnx2tf

    onnx_path, out_dir = Path(onnx_path).resolve(), Path(out_dir).resolve()
    if options is None:
        options = onnx2tf_options(onnx_path)
    workdir = out_dir.parent / f".{out_dir.name}.onnx2tf-work"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        # onnx2tf runs `onnxsim FILE FILE` in place on the file it converts: it always gets a copy (or the
        # rewritten graph), so the shipped .onnx file stays as torch exported it.
        source = onnx2tf_input(onnx_path, workdir / onnx_path.name)
        if source == onnx_path:
            source = Path(shutil.copyfile(onnx_path, workdir / onnx_path.name))
        with _onnx2tf_environment(workdir, sample_images_nhwc):
            quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
            try:
                with quiet:  # onnx2tf / Keras print the whole SavedModel signature even when non-verbose
                    onnx2tf.convert(
                        input_onnx_file_path=str(source),
                        output_folder_path=str(out_dir),
                        output_signaturedefs=True,                     # -osd: serving_default signature
                        copy_onnx_input_output_names_to_tflite=True,   # TFLite tensors named images/probabilities
                        non_verbose=not verbose,
                        verbosity="info" if verbose else "error",
                        **options,
                    )
            except SystemExit as err:  # onnx2tf calls sys.exit(1) on conversion errors
                raise ConversionError(f"onnx2tf failed to convert {onnx_path} (exit {err.code}); "
                                      "run with --verbose for its log") from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    # onnx2tf names its TFLite files after the ONNX file it converts (model.onnx -> model_float32.tflite).
    files = {"saved_model": out_dir, "float32": out_dir / f"{onnx_path.stem}_float32.tflite",
             "float16": out_dir / f"{onnx_path.stem}_float16.tflite"}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing or not (out_dir / "saved_model.pb").is_file():
        raise ConversionError(f"onnx2tf finished without writing {', '.join(missing) or 'saved_model.pb'}")
    return files


def _calibrated_converter(saved_model_dir: str | Path, calibration_nhwc: np.ndarray, ops: list):
    """TFLite's full-integer converter on the SavedModel: float32 input / output, `ops` the op set, the
    representative dataset `calibration_nhwc` (float32 [N, H, W, 3] in [0, 1], real training images)."""
    import tensorflow as tf

    if len(calibration_nhwc) == 0:
        raise ConversionError("integer quantisation needs at least one calibration image")

    def representative_dataset():
        for image in calibration_nhwc:
            yield [tf.constant(image[None], dtype=tf.float32)]

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[SIGNATURE])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = ops
    converter.representative_dataset = representative_dataset
    converter.inference_input_type = tf.float32
    converter.inference_output_type = tf.float32
    return converter


def quantize_int8(saved_model_dir: str | Path, tflite_path: str | Path, calibration_nhwc: np.ndarray,
                  ranges: str = "minmax", float_convs: int = 0,
                  float_classifier: bool = False) -> Path:
    """Full-integer (int8 weights and activations, float32 I/O) TFLite calibrated on `calibration_nhwc`
    (float32 [N, H, W, 3] in [0, 1], real training images). Same converter settings as onnx2tf's `-oiqt`.

    `ranges`: how each activation's int8 range is chosen (`lit_garbage.int8.ranges`): `minmax`, the
    calibrator's min / max (the converter in one step); `mse` / `mse-signed`, the range of least squared error of
    every op output / of those taking negative values, written between the converter's calibration and its
    quantisation step. `float_convs`: the graph stays float32 up to its N-th convolution (the input
    normalisation, the stem and the first blocks, whose few channels at full resolution lose the most to int8
    and gain the least speed from it); the converter quantises from there on. `float_classifier`: the last dense
    layer and the softmax stay float32 too (int8 probabilities sit on 256 levels, where near ties collapse)."""
    import tensorflow as tf

    from lit_garbage.int8 import ranges as int8_ranges

    if ranges not in int8_ranges.RANGE_CHOICES:
        raise ConversionError(f"unknown int8 ranges '{ranges}'; choose from {', '.join(int8_ranges.RANGE_CHOICES)}")
    converter = _calibrated_converter(saved_model_dir, calibration_nhwc,
                                      [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.SELECT_TF_OPS])
    try:
        if ranges == "minmax" and not float_convs and not float_classifier:
            model = converter.convert()
        else:  # the converter's two steps (identical output for minmax), with the choices between them
            converter._experimental_calibrate_only = True
            calibrated = converter.convert()
            if ranges != "minmax":
                chosen = int8_ranges.mse_ranges(calibrated, calibration_nhwc, signed_only=ranges == "mse-signed")
                calibrated = int8_ranges.with_ranges(calibrated, chosen)
            ops = int8_ranges.op_outputs(calibrated)  # the graph read once for both choices
            floats = int8_ranges.float_prefix(ops, float_convs)
            if float_classifier:
                floats += int8_ranges.float_classifier(ops)
            model = int8_ranges.quantize_calibrated(calibrated, floats)
    except Exception as err:  # TF raises ConverterError / RuntimeError with a long log
        raise ConversionError(f"int8 quantisation of {saved_model_dir} failed: {str(err)[:500]}") from err
    tflite_path = Path(tflite_path)
    tflite_path.write_bytes(model)
    return tflite_path


def quantize_int16x8(saved_model_dir: str | Path, tflite_path: str | Path, calibration_nhwc: np.ndarray) -> Path:
    """int16 activations, int8 weights, float32 I/O (TFLite's 16x8 mode), calibrated like `quantize_int8`.
    Only the 16x8 op set: a graph op without a 16x8 kernel fails the conversion instead of staying float."""
    import tensorflow as tf

    converter = _calibrated_converter(
        saved_model_dir, calibration_nhwc,
        [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8])
    try:
        model = converter.convert()
    except Exception as err:  # noqa: BLE001  TF raises ConverterError / RuntimeError with a long log
        raise ConversionError(f"int16x8 quantisation of {saved_model_dir} failed: {str(err)[:500]}") from err
    tflite_path = Path(tflite_path)
    tflite_path.write_bytes(model)
    return tflite_path
