"""Hostile outputs and environments: every output path is checked before the work, every input named is used
or listed with its reason, a damaged split.csv or a failing TFJS runner is one line, and a run's data is found
from any working folder; a folder that is not the run's dataset is evaluated whole, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from lit_garbage.commands import evaluate as ev
from lit_garbage.commands import predict as pr
from tests.inference.test_hostile_values import CLASSES, tiny_onnx


@pytest.fixture
def model(tmp_path) -> Path:
    return tiny_onnx(tmp_path / "m.onnx", {"class_names": CLASSES, "image_size": 64})


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photos" / "a.png"
    path.parent.mkdir()
    Image.new("RGB", (50, 40), "red").save(path)
    return path


def _one_line(err: str) -> str:
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_output_paths_are_checked_before_any_model_is_loaded(tmp_path, photo, capsys):
    missing_model = str(tmp_path / "not-loaded.onnx")  # never opened: the refusal comes first
    cases = {
        "unknown figure format": (["--grid", str(tmp_path / "grid.xyz")], "unknown figure format"),
        "no extension": (["--grid", str(tmp_path / "grid")], "unknown figure format"),
        "grid under a file": (["--grid", str(photo / "grid.png")], "is not a folder"),
        "json is a folder": (["--json", str(tmp_path)], "is a folder"),
        "csv under a file": (["--csv", str(photo / "x" / "p.csv")], "is not a folder"),
        "same file twice": (["--json", str(tmp_path / "p.out"), "--csv", str(tmp_path / "p.out")], "same file"),
        "same file spelled twice": (["--json", str(tmp_path / "p.out"), "--csv", str(tmp_path / "." / "p.out")],
                                    "same file"),
    }
    for case, (flags, words) in cases.items():
        assert pr.main(["--model", missing_model, str(photo), *flags]) == 2, case
        captured = capsys.readouterr()
        assert words in _one_line(captured.err), (case, captured.err)
        assert "predicted" not in captured.out
    for out in (photo, photo / "sub"):  # a file, a folder under a file
        assert ev.main(["--model", missing_model, "--out", str(out)]) == 2
        assert "--out" in _one_line(capsys.readouterr().err)


def test_every_input_named_is_used_or_listed_with_its_reason(tmp_path, model, photo, capsys):
    folder = photo.parent
    os.mkfifo(folder / "pipe.jpg")
    os.symlink(folder / "gone.jpg", folder / "dangling.jpg")
    (folder / "sub").mkdir()
    os.symlink("loop.png", folder / "sub" / "loop.png")
    out = tmp_path / "p.json"
    code = pr.main(["--model", str(model), str(folder), str(tmp_path / "nothing-here.jpg"), "--json", str(out),
                    "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    for name, reason in (("pipe.jpg", "FIFO"), ("dangling.jpg", "does not exist"), ("loop.png", ""),
                         ("nothing-here.jpg", "no such file")):
        line = next((ln for ln in err.splitlines() if name in ln), None)
        assert line is not None and "skipped" in line and reason in line, (name, err)
    data = json.loads(out.read_text())
    assert [Path(e["path"]).name for m in data["models"].values() for e in m["predictions"]] == ["a.png"]
    assert len(data["errors"]) == 4


def test_a_damaged_split_csv_is_one_line(tmp_path):
    from lit_garbage.data.manifest import FIELDS, DatasetError, Manifest

    header = ",".join(FIELDS)
    stray = tmp_path / "stray.csv"  # one stray quote: the rest of the file becomes one 200 KB field
    stray.write_text(header + "\n" + 'a/b.jpg,"glass,train,1,ab\n' + "x,y,z,1,2\n" * 20000)
    short = tmp_path / "short.csv"
    short.write_text(header + "\na/b.jpg\n")
    number = tmp_path / "number.csv"
    number.write_text(header + "\n" + "a/b.jpg,glass,train,many," + "0" * 64 + "\n")
    for path in (stray, short, number):
        with pytest.raises(DatasetError) as err:
            Manifest.read(path)
        assert path.name in str(err.value) and "line" in str(err.value) and "\n" not in str(err.value)


def _node_ready() -> bool:
    from lit_garbage.inference import node_runtime

    return bool(node_runtime.node_executable()) and \
        (node_runtime.node_modules() / "@tensorflow" / "tfjs-backend-wasm").is_dir()


@pytest.mark.skipif(not _node_ready(), reason="needs node and `npm ci` (lit_garbage/inference/tfjs)")
def test_a_failing_tfjs_runner_is_one_line_naming_the_file(tmp_path, photo, capsys):
    from tests.serve.test_hostile_serve import fake_export

    export = fake_export(tmp_path)
    spec = json.loads((export / "tfjs" / "model.json").read_text())
    # The manifest promises 4,000 bytes of weights; the shard holds 16 ("short shards").
    spec["weightsManifest"][0]["weights"] = [{"name": "w", "shape": [1000], "dtype": "float32"}]
    (export / "tfjs" / "model.json").write_text(json.dumps(spec))
    code = pr.main(["--model", str(export / "tfjs"), str(photo), "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err, err
    line = next(ln for ln in err.splitlines() if "error:" in ln)
    assert "model.json" in line and "TFJS runner" in line, err


def test_evaluating_another_folder_evaluates_all_of_it_and_says_so(one_epoch_run, synthetic_root, tmp_path, capsys):
    other = tmp_path / "other"
    for name in ("battery", "glass"):
        (other / name).mkdir(parents=True)
        for i, src in enumerate(sorted((synthetic_root / name).iterdir())[:3]):
            shutil.copy(src, other / name / f"new_{i}.jpg")  # names split.csv does not list
    out = tmp_path / "eval"
    assert ev.main(["--model", str(one_epoch_run / "model.ckpt"), "--data.root", str(other), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "not the run's dataset" in err and "every image under" in err, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert [(m["split"], m["images"]) for m in metrics["splits"]] == [("all", 6)]


def test_a_run_trained_with_a_relative_root_evaluates_from_any_folder(synthetic_root, tmp_path, monkeypatch):
    from lit_garbage.training import cli
    from tests.conftest import fit_args

    work = tmp_path / "work"
    shutil.copytree(synthetic_root, work / "data")
    monkeypatch.chdir(work)
    cli.main(fit_args(Path("data"), Path("run"), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = subprocess.run([sys.executable, "-m", "lit_garbage", "evaluate", "--model", str(work / "run" / "model.ckpt"),
                             "--out", str(tmp_path / "eval")], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert result.returncode == 0, result.stderr[-1500:]
    assert (tmp_path / "eval" / "metrics.json").is_file()
