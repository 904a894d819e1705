"""Keras files never reach a loader with code in them: the architecture is read as JSON first.

tf-keras (Keras 2) rebuilds a Lambda layer from its marshalled bytecode when it loads an .h5 file or a
SavedModel (its `safe_mode` covers only .keras zips), and calls it on the model's input. `import-keras` and
`--model.weights keras:PATH` refuse such files before loading, naming the file and the layer (exit 2), and the
plain Keras 2 files of a MobileNetV2 still import.
"""

from __future__ import annotations

import os

import pytest

from lit_garbage.commands.import_keras import main
from tests.forged_files import ran

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf_keras = pytest.importorskip("tf_keras")


@pytest.fixture(scope="module")
def keras2_mobilenet(tmp_path_factory):
    """A plain tf-keras MobileNetV2 (random weights, 32 px) saved as `kind` (.h5 or a Keras 2 SavedModel)."""
    folder = tmp_path_factory.mktemp("keras2-mobilenet")
    made: dict = {}

    def saved_as(kind: str):
        if kind not in made:
            model = tf_keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3))
            made[kind] = folder / ("plain.h5" if kind == "h5" else "plain_savedmodel")
            model.save(made[kind])
        return made[kind]

    return saved_as


# The SavedModel case takes ~1 minute more: tf-keras traces every layer to save a MobileNetV2 SavedModel.
@pytest.mark.parametrize("kind", ["h5", pytest.param("saved_model", marks=pytest.mark.slow)])
def test_import_keras_never_runs_lambda_code(kind, keras2_lambda, keras2_mobilenet, tmp_path, capsys):
    marker = keras2_lambda["marker"]
    marker.unlink(missing_ok=True)
    path = keras2_lambda[kind]
    code = main([str(path), "--out", str(tmp_path / "evil.ckpt"), "--no-check"])
    err = capsys.readouterr().err
    assert ran(marker) == 0, f"reading {path} ran its Lambda layer's code"
    assert code == 2 and not (tmp_path / "evil.ckpt").exists()
    assert path.name in err and "'innocent'" in err and "Lambda" in err and "Traceback" not in err, err[-1500:]
    # the same kind of file without code still imports (tf-keras under safe mode reads it)
    assert main([str(keras2_mobilenet(kind)), "--out", str(tmp_path / "plain.ckpt"), "--no-check"]) == 0
    assert (tmp_path / "plain.ckpt").is_file()


def test_import_keras_refuses_a_layer_that_calls_a_tensorflow_function_the_file_names(tmp_path, capsys):
    """A TensorFlow op applied to a Keras tensor becomes a TFOpLambda layer: the file names the function
    (here tf.nn.relu) and loading calls it; any such name could be given. Refused like a Lambda."""
    import tensorflow as tf

    inp = tf_keras.Input((32, 32, 3))
    x = tf_keras.layers.Conv2D(4, 3, name="Conv1")(tf.nn.relu(inp))
    path = tmp_path / "tf_op.h5"
    tf_keras.Model(inp, x).save(path)
    code = main([str(path), "--out", str(tmp_path / "x.ckpt"), "--no-check"])
    err = capsys.readouterr().err
    assert code == 2
    assert "tf_op.h5" in err and "TFOpLambda" in err and "refused" in err, err[-1500:]
