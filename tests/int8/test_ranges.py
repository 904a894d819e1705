"""int8 activation ranges: the least-squared-error range search, and `quantize_int8(ranges=...)` end to end on a
small SavedModel (calibrate, edit the recorded ranges, quantise)."""

from __future__ import annotations

import numpy as np
import pytest

from lit_garbage.int8.ranges import BINS, LEVELS, best_range


def _mse(hist: np.ndarray, lo: float, hi: float, a: float, b: float) -> float:
    centres = lo + (np.arange(BINS) + 0.5) * (hi - lo) / BINS
    q = np.clip(np.round((centres - a) / ((b - a) / LEVELS)) * ((b - a) / LEVELS) + a, a, b)
    return float((hist * (centres - q) ** 2).sum() / hist.sum())


def test_a_rare_outlier_is_clipped_and_the_squared_error_drops():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.0, 1.0, 1_000_000), [30.0, -20.0]])  # two outliers set min / max
    lo, hi = float(values.min()), float(values.max())
    hist = np.histogram(values, bins=BINS, range=(lo, hi))[0].astype(np.float64)
    a, b = best_range(hist, lo, hi)
    assert lo < a < 0 < b < hi and b - a < 0.5 * (hi - lo)
    assert _mse(hist, lo, hi, a, b) < 0.5 * _mse(hist, lo, hi, lo, hi)


def test_a_uniform_tensor_keeps_its_full_range():
    values = np.linspace(0.0, 6.0, 100_000)  # a ReLU6 output filling its range: nothing to clip
    hist = np.histogram(values, bins=BINS, range=(0.0, 6.0))[0].astype(np.float64)
    a, b = best_range(hist, 0.0, 6.0)
    assert a == 0.0 and b >= 0.95 * 6.0


@pytest.fixture(scope="module")
def small_saved_model(tmp_path_factory):
    import tensorflow as tf

    rng = np.random.default_rng(0)

    class Small(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = tf.Variable(rng.normal(0, 0.5, (3, 3, 3, 8)).astype(np.float32))
            self.dense = tf.Variable(rng.normal(0, 0.5, (8, 4)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32, name="images")])
        def serve(self, images):
            x = tf.nn.conv2d(images * 2.0 - 1.0, self.conv, 1, "SAME")  # normalisation, as the exports have
            x = tf.reduce_mean(tf.nn.relu(x), axis=[1, 2])
            return {"probabilities": tf.nn.softmax(tf.matmul(x, self.dense))}

    path = tmp_path_factory.mktemp("small") / "saved_model"
    model = Small()
    tf.saved_model.save(model, str(path), signatures={"serving_default": model.serve})
    images = rng.uniform(0.0, 0.2, (40, 16, 16, 3)).astype(np.float32)
    images[::10, 3, 3, :] = 1.0  # a few bright pixels: the conv output's max comes from them alone
    return path, images


def _activation_scales(path) -> dict[str, float]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    return {d["name"]: float(d["quantization"][0]) for d in it.get_tensor_details()
            if d["dtype"] == np.int8 and d["quantization"][0] > 0 and len(d["shape"]) == 4}


def test_mse_ranges_narrow_the_outlier_set_activation_scales(small_saved_model, tmp_path):
    from lit_garbage.export.tensorflow import ConversionError, quantize_int8

    saved_model, images = small_saved_model
    files = {r: quantize_int8(saved_model, tmp_path / f"{r}.tflite", images, ranges=r) for r in ("minmax", "mse")}
    minmax, mse = _activation_scales(files["minmax"]), _activation_scales(files["mse"])
    assert minmax and set(mse) == set(minmax)
    narrowed = [n for n in mse if mse[n] < 0.9 * minmax[n]]
    assert narrowed, (minmax, mse)
    from ai_edge_litert.interpreter import Interpreter

    for f in files.values():  # both files run, float in / float out
        it = Interpreter(model_path=str(f))
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], images[:1])
        it.invoke()
        out = it.get_tensor(it.get_output_details()[0]["index"])
        assert out.dtype == np.float32 and abs(float(out.sum()) - 1.0) < 0.05
    with pytest.raises(ConversionError, match="ranges"):
        quantize_int8(saved_model, tmp_path / "x.tflite", images, ranges="percentile")


def _op_input_types(path) -> dict[str, list[str]]:
    """Per op type of the file, the dtype names of its first input, in execution order."""
    from tests.fixtures_export import op_input_types

    types: dict[str, list[str]] = {}
    for op, dtype in op_input_types(path):
        types.setdefault(op, []).append(dtype)
    return types


def test_the_graph_stays_float_up_to_the_nth_convolution_and_from_the_classifier_on(small_saved_model, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from lit_garbage.export.config import Int8Options
    from lit_garbage.export.tensorflow import ConversionError, quantize_int8

    saved_model, images = small_saved_model
    int8 = _op_input_types(quantize_int8(saved_model, tmp_path / "int8.tflite", images))
    kept = quantize_int8(saved_model, tmp_path / "kept.tflite", images, float_convs=1)
    mixed = _op_input_types(kept)
    assert int8["CONV_2D"] == ["INT8"] and mixed["CONV_2D"] == ["FLOAT32"], (int8, mixed)
    assert int8["MUL"] == ["INT8"] and mixed["MUL"] == ["FLOAT32"]  # the normalisation before it too
    assert mixed["FULLY_CONNECTED"] == ["INT8"]  # the rest of the graph stays integer
    it = Interpreter(model_path=str(kept))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], images[:1])
    it.invoke()
    assert abs(float(it.get_tensor(it.get_output_details()[0]["index"]).sum()) - 1.0) < 0.05
    classifier = _op_input_types(quantize_int8(saved_model, tmp_path / "classifier.tflite", images,
                                               float_classifier=True))
    # the last dense layer and the softmax float; everything before them int8 as without the option
    assert classifier["FULLY_CONNECTED"][:-1] == int8["FULLY_CONNECTED"][:-1] and \
        classifier["FULLY_CONNECTED"][-1] == "FLOAT32" and int8["FULLY_CONNECTED"][-1] == "INT8", (int8, classifier)
    assert classifier["SOFTMAX"] == ["FLOAT32"] and int8["SOFTMAX"] == ["INT8"]
    assert classifier["CONV_2D"] == ["INT8"]
    with pytest.raises(ConversionError, match=r"2 float convolutions asked \(--int8-float-convs\), the model has 1"):
        quantize_int8(saved_model, tmp_path / "x.tflite", images, float_convs=2)
    with pytest.raises(ValueError, match="int8.float_convs must be an integer from 0 to 1,000, got -1"):
        Int8Options(float_convs=-1)  # before any Exporter is made
