"""Hostile values: what a model file says about itself, the names of class folders and the numbers on the
command line are checked once, each refused in one line before any work.

Model files are hand-made (a 3-output ONNX graph built with onnx.helper, a zip standing in for a .tflite's
metadata), so nothing here trains or converts.
"""

from __future__ import annotations

import json
import resource
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lit_garbage.inference.backends import ModelFileError, load_backend

CLASSES = ["glass", "metal", "paper"]


def tiny_onnx(path: Path, facts: dict | None = None, size: int = 64, outputs: int = 3) -> Path:
    """images [N, 3, size, size] -> softmax of the channel means, padded to `outputs` classes."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("ReduceMean", ["images"], ["m"], axes=[2, 3], keepdims=0)]
    if outputs != 3:
        nodes.append(helper.make_node("Pad", ["m", "pads"], ["p"]))
        pads = [helper.make_tensor("pads", TensorProto.INT64, [4], [0, 0, 0, outputs - 3])]
        last = "p"
    else:
        pads, last = [], "m"
    nodes.append(helper.make_node("Softmax", [last], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", outputs])], initializer=pads)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if facts is not None:
        helper.set_model_props(model, {"lit_garbage": json.dumps(facts)})
    onnx.save(model, str(path))
    return path


BAD_FACTS = {
    "image_size huge": ({"class_names": CLASSES, "image_size": 100000}, "image_size"),
    "image_size negative": ({"class_names": CLASSES, "image_size": -64}, "image_size"),
    "image_size zero": ({"class_names": CLASSES, "image_size": 0}, "image_size"),
    "image_size list": ({"class_names": CLASSES, "image_size": [64, 64]}, "image_size"),
    "image_size text": ({"class_names": CLASSES, "image_size": "64"}, "image_size"),
    "image_size bool": ({"class_names": CLASSES, "image_size": True}, "image_size"),
    "image_size float": ({"class_names": CLASSES, "image_size": 64.5}, "image_size"),
    "name not text": ({"class_names": ["glass", 7, "paper"], "image_size": 64}, "class name 1"),
    "name null": ({"class_names": ["glass", None, "paper"], "image_size": 64}, "class name 1"),
    "name newline": ({"class_names": ["glass", "me\ntal", "paper"], "image_size": 64}, "control characters"),
    "name empty": ({"class_names": ["glass", "", "paper"], "image_size": 64}, "empty"),
    "names repeat": ({"class_names": ["glass", "glass", "paper"], "image_size": 64}, "repeat"),
    "names a string": ({"class_names": "glass", "image_size": 64}, "class_names"),
    "names too few": ({"class_names": ["glass", "metal"], "image_size": 64}, "2 class names for a model with 3"),
    "names too many": ({"class_names": CLASSES + ["x"], "image_size": 64}, "4 class names for a model with 3"),
    "size disagrees": ({"class_names": CLASSES, "image_size": 96}, "image_size 96"),
}


@pytest.mark.parametrize("case", list(BAD_FACTS))
def test_every_backend_refuses_facts_that_do_not_hold_in_one_line(case, tmp_path):
    facts, words = BAD_FACTS[case]
    # Inside the file, and in a metadata.json beside it: the same one check.
    inside = tiny_onnx(tmp_path / "inside.onnx", facts)
    with pytest.raises(ModelFileError, match=words) as err:
        load_backend(inside)
    assert "\n" not in str(err.value).strip() or case == "name newline"
    beside = tmp_path / "export"
    beside.mkdir()
    tiny_onnx(beside / "model.onnx")
    (beside / "metadata.json").write_text(json.dumps(facts))
    with pytest.raises(ModelFileError, match=words):
        load_backend(beside / "model.onnx")


def test_good_facts_still_load(tmp_path):
    backend = load_backend(tiny_onnx(tmp_path / "m.onnx", {"class_names": CLASSES, "image_size": 64}))
    assert backend.class_names == CLASSES and backend.image_size == 64
    assert backend.predict(np.zeros((1, 3, 64, 64), np.float32)).shape == (1, 3)


def test_a_forged_input_shape_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="input shape"):
        load_backend(tiny_onnx(tmp_path / "m.onnx", size=100000))


def test_an_embedded_metadata_zip_bomb_is_not_inflated(tmp_path):
    """A .tflite's metadata is a zip appended to it; sizes in a zip are the writer's word."""
    bomb = tmp_path / "bomb.tflite"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("lit_garbage.json", "w") as f:
            chunk = b" " * 2**20
            for _ in range(64):  # 64 MiB of spaces: valid JSON whitespace, a few hundred KB compressed
                f.write(chunk)
    from lit_garbage.artifacts import FactsError, read_facts

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(FactsError, match="over 4 MiB"):
        read_facts(bomb)
    assert time.perf_counter() - start < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 32 * 1024  # KiB: never inflated whole


def test_check_facts_is_the_one_table():
    from lit_garbage.artifacts import FactsError, check_facts

    assert check_facts(CLASSES, 224, outputs=3, input_size=224) == (CLASSES, 224)
    assert check_facts(None, None) == (None, None)
    with pytest.raises(FactsError):
        check_facts(["a", "b\u2028c"], 64)  # a Unicode line separator is a line break in labels.txt too


def test_class_folders_with_control_characters_are_refused_at_the_scan(tmp_path):
    from PIL import Image

    from lit_garbage.data.manifest import DatasetError, find_class_folders

    for name in ("glass", "me\ntal", "tab\there"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (40, 40)).save(tmp_path / name / "a.png")
    with pytest.raises(DatasetError) as err:
        find_class_folders(tmp_path)
    assert "'me\\ntal'" in str(err.value) and "control characters" in str(err.value)


PREDICT_OPTIONS = {
    "threads huge": (["--threads", "100000"], "--threads"),
    "threads negative": (["--threads", "-1"], "--threads"),
    "threads zero": (["--threads", "0"], "--threads"),
    "top-k huge": (["--top-k", "1000000000"], "--top-k"),
    "top-k zero": (["--top-k", "0"], "--top-k"),
    "batch huge": (["--batch-size", "10000000"], "--batch-size"),
    "batch zero": (["--batch-size", "0"], "--batch-size"),
    "grid size": (["--grid-size", "13"], "--grid-size"),
    "seed negative": (["--seed", "-5"], "--seed"),
}


@pytest.mark.parametrize("case", list(PREDICT_OPTIONS))
def test_every_numeric_option_is_bounded_in_one_line(case, tmp_path, capsys):
    from lit_garbage.commands import predict as pr

    extra, flag = PREDICT_OPTIONS[case]
    model = tiny_onnx(tmp_path / "m.onnx", {"class_names": CLASSES, "image_size": 64})
    assert pr.main(["--model", str(model), str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag} must be") and err.count("\n") == 1, err


@pytest.mark.parametrize("flags", [["--worst", "13"], ["--batch-size", "0"], ["--threads", "100000"]])
def test_evaluate_bounds_its_options(flags, tmp_path, capsys):
    from lit_garbage.commands import evaluate as ev

    assert ev.main(["--model", str(tmp_path / "m.onnx"), *flags]) == 2
    assert f"error: {flags[0]} must be" in capsys.readouterr().err


def test_top_k_beyond_the_classes_shows_every_class_once(tmp_path, capsys):
    from PIL import Image

    from lit_garbage.commands import predict as pr

    model = tiny_onnx(tmp_path / "m.onnx", {"class_names": CLASSES, "image_size": 64})
    Image.new("RGB", (50, 40), "red").save(tmp_path / "a.png")
    out = tmp_path / "p.csv"
    assert pr.main(["--model", str(model), str(tmp_path / "a.png"), "--top-k", "1000", "--csv", str(out),
                    "--quiet"]) == 0
    header = out.read_text().splitlines()[0].split(",")
    assert header.count("label_3") == 1 and "label_4" not in header
    capsys.readouterr()


@pytest.mark.parametrize("flags", [["--trainer.limit_train_batches", "0"], ["--trainer.limit_train_batches", "0.0"],
                                   ["--trainer.max_steps", "0"]])
def test_fit_refuses_to_train_on_nothing(flags, synthetic_root, tmp_path, capsys):
    from lit_garbage.training.cli import main
    from tests.conftest import fit_args

    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(fit_args(synthetic_root, run_dir, *flags))
    assert exc.value.code == 2
    assert flags[0].lstrip("-") in capsys.readouterr().err
    assert not run_dir.exists()


def test_figures_draw_any_class_name_as_text(tmp_path):
    import warnings

    from PIL import Image

    from lit_garbage.evaluation.figures import Panel, save_confusion, save_grid

    names = ["$x^$", "$\\frac{1}{0", "a_b$c", "垃圾", "ごみ", "\\$"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no per-label glyph warnings either
        save_confusion(np.eye(len(names), dtype=int), names, tmp_path / "cm.png", title="$oops")
        save_grid([Panel(Image.new("RGB", (8, 8)), n, 0.5, n, n) for n in names], tmp_path / "grid.png",
                  title="$$")
    assert Image.open(tmp_path / "cm.png").size[0] > 100 and Image.open(tmp_path / "grid.png").size[0] > 100


@pytest.mark.parametrize("suffix", [".onnx", ".tflite", ".ckpt"])
def test_a_model_path_that_is_a_fifo_is_refused_not_waited_on(suffix, tmp_path):
    import os

    fifo = tmp_path / f"model{suffix}"
    os.mkfifo(fifo)
    with pytest.raises(ModelFileError, match="not a regular file|not found"):
        load_backend(fifo)


@pytest.mark.parametrize("flags", [["--epochs", "-1"], ["--lr", "0"], ["--lr", "nan"], ["--backbone-lr-scale", "-1"],
                                   ["--batch-size", "0"], ["--num-workers", "100000"]])
def test_int8_finetune_bounds_its_options_before_reading_the_model(flags, tmp_path, capsys):
    from lit_garbage.commands import int8_finetune as ft

    code = ft.main(["--model", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "o.ckpt"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {flags[0]} must be") and err.count("\n") == 1, err


@pytest.mark.parametrize("flags", [["--calib-images", "0"], ["--verify-images", "10000000"],
                                   ["--int8-float-convs", "-3"]])
def test_export_bounds_its_options_before_reading_the_model(flags, tmp_path, capsys):
    from lit_garbage.commands import export as ex

    assert ex.main(["--model", str(tmp_path / "missing.ckpt"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flags[0]} must be") and err.count("\n") == 1, err
