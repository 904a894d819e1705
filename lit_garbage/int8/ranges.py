"""int8 choices between calibration and quantisation: each activation's range (the calibrator's min / max, or
the clipping range of least squared error), the float prefix of the graph and its float classifier output.

TensorFlow's converter quantises in two steps: calibration records every tensor's min / max over the
representative images (`converter._experimental_calibrate_only`), then `mlir_quantize` turns each recorded
range into an int8 scale and zero point. `mse_ranges` sits between the two: for each op output it builds a
histogram of the tensor's values over the calibration images (the calibrated float model run in LiteRT with every
tensor kept) and picks, among ranges [a * min, b * max], the one that minimises the expected squared error of
int8 rounding (step^2 / 12 inside the range) plus clipping (distance to the edge outside it). One outlier then
no longer sets the step of a whole tensor.

    calibrated = ...                             # converter with _experimental_calibrate_only = True
    model = quantize_calibrated(calibrated, mse_ranges(calibrated, images))
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

BINS = 4096
# Candidate fractions of the recorded min / max: coarse below half the range, fine above it.
FRACTIONS = np.concatenate([np.linspace(0.05, 0.5, 10, endpoint=False), np.linspace(0.5, 1.0, 51)])
LEVELS = 255  # int8 steps across a range

RANGE_CHOICES = ("minmax", "mse", "mse-signed")  # mse-signed: only tensors that take negative values
# The export's defaults (minmax, 8 float convolutions, a float classifier) and why: `lit_garbage.export.config`.


def _name(tensor) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name


def recorded_ranges(calibrated: bytes) -> dict[str, tuple[float, float]]:
    """The calibration (min, max) of every op output of a calibrated model, by tensor name."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(calibrated))
    graph = model.subgraphs[0]
    out = {}
    for op in graph.operators:
        t = graph.tensors[op.outputs[0]]
        q = t.quantization
        if q is not None and q.min is not None and len(q.min) == 1 and float(q.max[0]) > float(q.min[0]):
            out[_name(t)] = (float(q.min[0]), float(q.max[0]))
    return out


def with_ranges(calibrated: bytes, ranges: Mapping[str, tuple[float, float]]) -> bytes:
    """`calibrated` with the recorded min / max of the named tensors replaced."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(calibrated))
    for t in model.subgraphs[0].tensors:
        name = _name(t)
        if name in ranges:
            lo, hi = ranges[name]
            t.quantization.min = np.asarray([lo], dtype=np.float32)
            t.quantization.max = np.asarray([hi], dtype=np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def histograms(calibrated: bytes, images_nhwc: np.ndarray,
               ranges: Mapping[str, tuple[float, float]]) -> dict[str, np.ndarray]:
    """Per tensor, a `BINS`-bin histogram over its recorded [min, max] of its values on `images_nhwc`."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    index = {d["name"]: d["index"] for d in it.get_tensor_details()}
    names = [n for n in ranges if n in index]
    inp = it.get_input_details()[0]
    hist = {n: np.zeros(BINS, dtype=np.float64) for n in names}
    for image in images_nhwc:
        it.set_tensor(inp["index"], np.ascontiguousarray(image[None], dtype=np.float32))
        it.invoke()
        for n in names:
            hist[n] += np.histogram(it.get_tensor(index[n]).ravel(), bins=BINS, range=ranges[n])[0]
    return hist


def best_range(hist: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """The [a, b] (a = f * lo, b = g * hi, f, g in `FRACTIONS`) of least expected int8 squared error."""
    centres = lo + (np.arange(BINS) + 0.5) * (hi - lo) / BINS
    weights = hist / max(hist.sum(), 1.0)
    his = np.maximum(hi * FRACTIONS, 0.0)[:, None]  # (candidates, 1)
    best, best_err = (lo, hi), np.inf
    for a in (lo * FRACTIONS if lo < 0 else [lo]):
        a = min(a, 0.0)
        step = (his - a) / LEVELS
        inside = (centres >= a) & (centres <= his)
        clipped = np.minimum((centres - a) ** 2, (centres - his) ** 2)
        err = (np.where(inside, step ** 2 / 12.0, clipped) * weights).sum(1)
        k = int(err.argmin())
        if err[k] < best_err:
            best, best_err = (float(a), float(his[k, 0])), float(err[k])
    return best


def mse_ranges(calibrated: bytes, images_nhwc: np.ndarray, signed_only: bool = False) -> dict[str, tuple[float, float]]:
    """MSE-optimal (min, max) per op output of `calibrated` (`signed_only`: only tensors with min < 0)."""
    recorded = recorded_ranges(calibrated)
    if signed_only:
        recorded = {n: r for n, r in recorded.items() if r[0] < 0}
    hist = histograms(calibrated, images_nhwc, recorded)
    return {n: best_range(h, *recorded[n]) for n, h in hist.items()}


CONVOLUTIONS = ("CONV_2D", "DEPTHWISE_CONV_2D")


def op_outputs(calibrated: bytes) -> list[tuple[str, str]]:
    """(op kind, output tensor name) of every op of `calibrated`, in execution order."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(calibrated))
    graph = model.subgraphs[0]
    return [(flatbuffer_utils.opcode_to_name(model, op.opcodeIndex), _name(graph.tensors[op.outputs[0]]))
            for op in graph.operators]


def float_prefix(ops: Sequence[tuple[str, str]], float_convs: int) -> list[str]:
    """Output tensor names of the `op_outputs` up to and including the `float_convs`-th convolution: the input
    normalisation, the stem and the first blocks (empty for 0)."""
    if float_convs == 0:
        return []
    names, seen = [], 0
    for kind, name in ops:
        names.append(name)
        seen += kind in CONVOLUTIONS
        if seen == float_convs:
            return names
    raise ValueError(f"{float_convs} float convolutions asked (--int8-float-convs), the model has {seen}: "
                     "pass a smaller number")


def float_classifier(ops: Sequence[tuple[str, str]]) -> list[str]:
    """Output tensor names of the `op_outputs` from the last FULLY_CONNECTED on: the logits and the softmax."""
    kinds = [kind for kind, _ in ops]
    if "FULLY_CONNECTED" not in kinds:
        raise ValueError("the graph has no dense layer to keep float (--no-int8-float-classifier)")
    last = len(kinds) - 1 - kinds[::-1].index("FULLY_CONNECTED")
    return [name for _, name in ops[last:]]


def quantize_calibrated(calibrated: bytes, float_nodes: Sequence[str] = ()) -> bytes:
    """Step 2 of the converter: int8 weights (per channel) and activations from the recorded ranges, float I/O;
    the ops writing `float_nodes` stay float (the converter inserts the (de)quantisation around them)."""
    from tensorflow.lite.python import convert

    return convert.mlir_quantize(calibrated, disable_per_channel=False, fully_quantize=False,
                                 denylisted_nodes=list(float_nodes) or None)
