"""Opening a model file to predict or evaluate never runs its code, whatever the format.

Each test plants a payload in an otherwise real file (a pickled `exec` in a checkpoint of this project, a
Keras file its hyper-parameters name, a SavedModel `WriteFile` op, TFJS weights outside the model's folder)
and opens it the way a user does (the commands' `main`, `load_backend`, the Node runner). The payload never
runs; where the file is refused, the message names the file and what was found in it, and the command exits 2.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from lit_garbage.commands import evaluate as ev
from lit_garbage.commands import predict as pr
from lit_garbage.inference.backends import ModelFileError, load_backend
from lit_garbage.inference.node_runtime import node_executable, node_modules, runner
from tests.forged_files import (
    UNSAFE_GLOBAL,
    an_image,
    edit_checkpoint,
    forge_pickle,
    ran,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


# ------------------------------------------------------------------ checkpoints


def test_predict_refuses_a_checkpoint_with_pickled_code(one_epoch_run, synthetic_root, tmp_path, capsys):
    marker = tmp_path / "marker"
    evil = forge_pickle(one_epoch_run / "model.ckpt", tmp_path / "evil.ckpt", marker)
    code = pr.main(["--model", str(evil), str(an_image(synthetic_root)), "--quiet"])
    err = capsys.readouterr().err
    assert ran(marker) == 0, f"unpickling {evil} ran its code {ran(marker)} time(s) (exit {code})"
    assert code == 2
    assert "evil.ckpt" in err and UNSAFE_GLOBAL in err and "Traceback" not in err, err[-1500:]


def test_evaluate_refuses_a_checkpoint_with_pickled_code(one_epoch_copy, tmp_path, capsys):
    marker = tmp_path / "marker"
    evil = forge_pickle(one_epoch_copy / "model.ckpt", one_epoch_copy / "evil.ckpt", marker)
    code = ev.main(["--model", str(evil), "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert ran(marker) == 0, f"unpickling {evil} ran its code {ran(marker)} time(s) (exit {code})"
    assert code == 2
    assert "evil.ckpt" in err and UNSAFE_GLOBAL in err and "Traceback" not in err, err[-1500:]
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("hparams", ["weights=keras:evil.h5", "pretrained=True"])
def test_a_checkpoint_opens_no_other_file_and_no_network(hparams, keras2_lambda, one_epoch_copy, synthetic_root,
                                                         capsys, monkeypatch):
    """A checkpoint of plain data (weights_only loads it) whose hyper-parameters name a Keras file, or timm's
    pretrained weights: its own state_dict replaces those weights anyway, so loading must follow neither."""
    import huggingface_hub.constants

    marker = keras2_lambda["marker"]
    marker.unlink(missing_ok=True)

    def edit(ckpt):
        if hparams.startswith("weights"):
            ckpt["hyper_parameters"].update(weights=f"keras:{keras2_lambda['h5']}", keras_compat=True)
        else:
            ckpt["hyper_parameters"].update(pretrained=True)

    ckpt = edit_checkpoint(one_epoch_copy / "model.ckpt", edit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without network: fail fast instead of retrying
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    code = pr.main(["--model", str(ckpt), str(an_image(synthetic_root)), "--quiet"])
    err = capsys.readouterr().err
    assert ran(marker) == 0, "loading a checkpoint ran the Lambda of the Keras file its hyper-parameters name"
    assert code == 0, err[-1500:]


# ------------------------------------------------------------------ SavedModel: a TensorFlow program


def test_a_savedmodel_with_file_operations_is_refused(synthetic_root, tmp_path, capsys):
    """A SavedModel's serving function can write files (tf.io.write_file); the SavedModel backend runs it on
    every prediction. Refused before TensorFlow loads it, naming the op."""
    import tensorflow as tf

    marker = tmp_path / "marker"

    class Model(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 64, 64, 3], tf.float32, name="images")])
        def serve(self, images):
            tf.io.write_file(str(marker), "ran")
            return {"probabilities": tf.nn.softmax(tf.reduce_mean(images, axis=[1, 2]))}

    module = Model()
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.serve})
    code = pr.main(["--model", str(tmp_path / "sm"), str(an_image(synthetic_root)), "--quiet"])
    err = capsys.readouterr().err
    assert not marker.exists(), f"predicting with the SavedModel ran its WriteFile op (exit {code})"
    assert code == 2
    assert "sm" in err and "WriteFile" in err and "Traceback" not in err, err[-1500:]


# ------------------------------------------------------------------ TFJS: weights from outside the model's folder


def _tfjs_model(folder, shard: str) -> None:
    """A small real TFJS graph model (mean over the image, a 3x4 matrix, softmax) whose weights are in `shard`."""
    dims = lambda *d: {"dim": [{"size": str(x)} for x in d]}  # noqa: E731
    const = lambda dtype, *d: {"dtype": {"type": dtype}, "value": {"tensor": {"dtype": dtype, "tensorShape": dims(*d)}}}  # noqa: E731
    nodes = [
        {"name": "images", "op": "Placeholder", "attr": {"dtype": {"type": "DT_FLOAT"}, "shape": {"shape": dims(-1, 64, 64, 3)}}},
        {"name": "axes", "op": "Const", "attr": const("DT_INT32", 2)},
        {"name": "w", "op": "Const", "attr": const("DT_FLOAT", 3, 4)},
        {"name": "mean", "op": "Mean", "input": ["images", "axes"],
         "attr": {"T": {"type": "DT_FLOAT"}, "Tidx": {"type": "DT_INT32"}, "keep_dims": {"b": False}}},
        {"name": "logits", "op": "MatMul", "input": ["mean", "w"], "attr": {"T": {"type": "DT_FLOAT"}}},
        {"name": "probabilities", "op": "Softmax", "input": ["logits"], "attr": {"T": {"type": "DT_FLOAT"}}},
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps({
        "format": "graph-model", "modelTopology": {"node": nodes, "library": {}, "versions": {}},
        "signature": {"inputs": {"images:0": {"name": "images:0", "dtype": "DT_FLOAT", "tensorShape": dims(-1, 64, 64, 3)}},
                      "outputs": {"probabilities:0": {"name": "probabilities:0", "dtype": "DT_FLOAT",
                                                      "tensorShape": dims(-1, 4)}}},
        "weightsManifest": [{"paths": [shard], "weights": [{"name": "axes", "shape": [2], "dtype": "int32"},
                                                           {"name": "w", "shape": [3, 4], "dtype": "float32"}]}],
    }))


def _weights() -> bytes:
    return np.array([1, 2], "<i4").tobytes() + np.arange(12, dtype="<f4").tobytes()


@pytest.mark.parametrize("shard", ["../secret.bin", "SECRET_ABSOLUTE", "link.bin"])
def test_tfjs_weights_outside_the_model_folder_are_refused(shard, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(_weights())
    folder = tmp_path / "tfjs"
    folder.mkdir()
    if shard == "link.bin":
        (folder / "link.bin").symlink_to(secret)
    shard = str(secret) if shard == "SECRET_ABSOLUTE" else shard
    _tfjs_model(folder, shard)
    with pytest.raises(ModelFileError, match="weightsManifest names .*refused"):
        load_backend(folder)


def test_the_node_runner_refuses_tfjs_weights_outside_the_model_folder(tmp_path):
    """The runner checks by itself too (it is also run on its own); the same model with its weights inside
    its folder predicts, so the refusal is the path's alone."""
    if not node_executable() or not (node_modules() / "@tensorflow" / "tfjs-backend-wasm").is_dir():
        pytest.fail("node and the TFJS packages are needed: npm ci --prefix lit_garbage/inference/tfjs")
    (tmp_path / "secret.bin").write_bytes(_weights())
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "w.bin").write_bytes(_weights())
    _tfjs_model(tmp_path / "good", "w.bin")
    _tfjs_model(tmp_path / "evil", "../secret.bin")
    np.zeros((1, 64, 64, 3), "<f4").tofile(tmp_path / "x.f32")

    def run(model: str) -> subprocess.CompletedProcess:
        return subprocess.run([node_executable(), str(runner()), "--node-modules", str(node_modules()),
                               "--model", str(tmp_path / model / "model.json"), "--input", str(tmp_path / "x.f32"),
                               "--shape", "1,64,64,3", "--output", str(tmp_path / f"{model}.json"), "--warmup", "0"],
                              capture_output=True, text=True, timeout=120)

    good = run("good")
    assert good.returncode == 0, good.stderr[-800:]
    assert json.loads((tmp_path / "good.json").read_text())["shape"] == [1, 4]
    evil = run("evil")
    assert evil.returncode != 0 and not (tmp_path / "evil.json").exists(), "the runner read ../secret.bin"
    assert "../secret.bin" in evil.stderr and "refused" in evil.stderr, evil.stderr[-800:]
