"""Evaluate and predict on every backend, end to end, with the session's one tiny trained + exported model.

No mocks: the checkpoint, onnxruntime, TensorFlow, LiteRT and TFJS-in-Node all run. The images are the
model's own synthetic dataset (its split manifest) and, where present, the real photos in ../shared.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lit_garbage.commands import evaluate as ev
from lit_garbage.commands import predict as pr
from lit_garbage.evaluation import seed_reference
from lit_garbage.evaluation.figures import confusion_size_px, grid_size_px
from lit_garbage.formats import FORMATS
from tests.fixtures_export import CLASSES

ROOT = Path(__file__).resolve().parents[2]
FP32 = ["onnx", "saved_model", "tflite_float32", "tfjs"]


def _model(tiny_export, name: str) -> Path:
    return tiny_export["ckpt"] if name == "torch" else tiny_export["out"] / FORMATS[name].file


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    assert arr.std() > 5, f"{path} looks blank"
    return arr


# ------------------------------------------------------------------ evaluate


@pytest.fixture(scope="module")
def evaluations(tiny_export, tmp_path_factory) -> dict:
    """`lit-garbage evaluate` on the checkpoint and every fp32 export (the CLI, as a person runs it)."""
    base = tmp_path_factory.mktemp("eval")
    out = {}
    for name in ["torch", *FP32]:
        folder = base / name
        code = ev.main(["--model", str(_model(tiny_export, name)), "--out", str(folder)])
        assert code == 0, name
        out[name] = {"dir": folder, "metrics": json.loads((folder / "metrics.json").read_text())}
    return out


def _comparable(metrics: dict) -> list:
    return [{k: s[k] for k in ("split", "images", "accuracy", "report", "confusion_matrix", "vs_seed")}
            for s in metrics["splits"]]


def test_evaluate_gives_identical_metrics_for_checkpoint_and_fp32_exports(evaluations, tiny_export):
    reference = _comparable(evaluations["torch"]["metrics"])
    (test,) = reference
    assert test["split"] == "test" and test["images"] == 24  # 4 classes x 40 images, 15 % test
    # the same number Lightning's own test loop reported for this split at the end of training
    assert test["accuracy"] == pytest.approx(tiny_export["results"]["test_acc"], abs=1e-6)
    for name in FP32:
        assert _comparable(evaluations[name]["metrics"]) == reference, name
        assert evaluations[name]["metrics"]["kind"] == ("tflite" if name.startswith("tflite") else name)


def test_evaluation_report_has_the_spec_shape_and_the_seed_side_by_side(evaluations):
    folder, metrics = evaluations["onnx"]["dir"], evaluations["onnx"]["metrics"]
    (split,) = metrics["splits"]
    assert list(split["report"]) == [*CLASSES, "macro avg", "weighted avg"]
    assert metrics["data"]["manifest"].endswith("split.csv")  # the run's own manifest, found through metadata.json
    # scikit-learn's numbers from the written per-image predictions
    from sklearn.metrics import accuracy_score, f1_score

    with (folder / "predictions_test.csv").open() as f:
        rows = list(csv.DictReader(f))
    y_true, y_pred = [r["true"] for r in rows], [r["predicted"] for r in rows]
    assert split["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert split["report"]["macro avg"]["f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert np.array(split["confusion_matrix"]).sum() == len(rows) == 24
    # delta against the seed's reported numbers (the one copy in lit_garbage.evaluation.seed_reference)
    seed = split["vs_seed"]
    assert seed["accuracy"]["seed"] == seed_reference.ACCURACY["test"] == 0.9288
    battery = seed["rows"]["battery"]["precision"]
    assert battery["seed"] == 0.9252 and battery["delta"] == pytest.approx(battery["ours"] - 0.9252)
    assert seed["rows"]["weighted avg"]["f1"]["seed"] == 0.9295
    md = (folder / "report.md").read_text()
    assert "| class | precision | recall | F1 | support |" in md
    assert "| split | accuracy | images | seed | delta |" in md
    assert "| class | precision | seed | delta | recall | seed | delta | F1 | seed | delta |" in md
    assert "| macro avg |" in md and "| weighted avg |" in md and "92.88 %" in md


def test_confusion_and_worst_mistakes_pngs_are_real_images_of_the_expected_size(evaluations):
    folder, metrics = evaluations["torch"]["dir"], evaluations["torch"]["metrics"]
    cm = _png(folder / "confusion_test.png")
    assert (cm.shape[1], cm.shape[0]) == confusion_size_px(len(CLASSES))
    (split,) = metrics["splits"]
    wrong = split["images"] - int(np.trace(np.array(split["confusion_matrix"])))
    if wrong:
        worst = _png(folder / "worst_test.png")
        assert (worst.shape[1], worst.shape[0]) == grid_size_px(min(wrong, 12))
        confidences = [w["confidence"] for w in split["worst"]]
        assert confidences == sorted(confidences, reverse=True) and all(w["true"] != w["predicted"] for w in split["worst"])
    else:
        assert not (folder / "worst_test.png").exists()


def test_evaluate_cli_prints_the_tables_and_more_splits(tiny_export, tmp_path, capsys):
    code = ev.main(["--model", str(tiny_export["ckpt"]), "--split", "val", "test", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    for text in ("accuracy", "val split", "test split", "macro avg", "weighted avg", "92.88 %", "91.13 %"):
        assert text in out, text
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [s["split"] for s in metrics["splits"]] == ["val", "test"]
    assert {p.name for p in tmp_path.glob("*.png")} >= {"confusion_val.png", "confusion_test.png"}


def test_export_without_its_run_needs_data_and_then_evaluates_the_whole_folder(tiny_export, tmp_path, capsys):
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(tiny_export["out"] / "model_float32.tflite", lone)
    meta = json.loads((tiny_export["out"] / "metadata.json").read_text())
    model = lone / "model_float32.tflite"
    # Once the run is gone (its recorded paths lead nowhere, and this machine's index of exports knows no run of
    # that checkpoint), the data has to be named.
    meta["checkpoint"]["path"] = str(tmp_path / "deleted" / "model.ckpt")
    meta["checkpoint"]["sha256"] = "0" * 64
    meta["split_manifest"]["path"] = str(tmp_path / "deleted" / "split.csv")
    (lone / "metadata.json").write_text(json.dumps(meta))
    assert ev.main(["--model", str(model), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "no split manifest" in err and "--data.root ROOT" in err and "Traceback" not in err
    assert ev.main(["--model", str(model), "--data.root", str(tiny_export["data"]), "--out", str(tmp_path / "b")]) == 0
    assert "evaluating every image" in capsys.readouterr().err
    (split,) = json.loads((tmp_path / "b" / "metrics.json").read_text())["splits"]
    assert split["split"] == "all" and split["images"] == 160


def test_evaluate_on_real_photos_skips_classes_the_model_does_not_know(tiny_export, real_smoke, tmp_path, capsys):
    code = ev.main(["--model", str(tiny_export["out"] / "model.onnx"), "--data.root", str(real_smoke), "--split", "all",
                    "--out", str(tmp_path)])
    assert code == 0
    assert "the model has no class glass" in capsys.readouterr().err
    (split,) = json.loads((tmp_path / "metrics.json").read_text())["splits"]
    assert split["images"] == sum(1 for c in CLASSES for p in (real_smoke / c).iterdir() if p.is_file())
    _png(tmp_path / "confusion_all.png")


def test_evaluate_clear_errors(tiny_export, tmp_path, capsys):
    wrong = tmp_path / "labels.txt"
    shutil.copy(tiny_export["out"] / "labels.txt", wrong)
    assert ev.main(["--model", str(wrong)]) == 2
    assert "unknown model file type" in capsys.readouterr().err
    assert ev.main(["--model", str(tiny_export["ckpt"]), "--split", "holdout"]) == 2
    assert "unknown split holdout" in capsys.readouterr().err


# ------------------------------------------------------------------ predict


@pytest.fixture(scope="module")
def photos(tiny_export) -> list[Path]:
    """Two synthetic test images per class."""
    data = tiny_export["data"]
    return [p for c in CLASSES for p in sorted((data / c).glob("*.jpg"))[:2]]


def test_predict_agrees_across_backends(tiny_export, photos, tmp_path, capsys):
    models = ["torch", *FP32, "tflite_float16"]
    args = [a for name in models for a in ("--model", str(_model(tiny_export, name)))]
    out_json, out_csv = tmp_path / "p.json", tmp_path / "p.csv"
    code = pr.main([*args, *map(str, photos), "--top-k", "3", "--json", str(out_json), "--csv", str(out_csv)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "agreement with torch" in printed and "prediction" in printed and "top-3" in printed
    result = json.loads(out_json.read_text())
    assert not result["errors"]
    runs = list(result["models"].values())
    assert len(runs) == len(models)
    ref = runs[0]["predictions"]
    assert len(ref) == len(photos) and all(len(p["top_k"]) == 3 for p in ref)
    for run in runs[1:]:
        for a, b in zip(ref, run["predictions"]):
            assert a["path"] == b["path"]
            assert a["top_k"][0]["label"] == b["top_k"][0]["label"], (run["kind"], a["path"])
            assert abs(a["top_k"][0]["confidence"] - b["top_k"][0]["confidence"]) <= 1e-2
    for name, run in result["models"].items():
        if "float16" not in name:
            for a, b in zip(ref, run["predictions"]):
                assert abs(a["top_k"][0]["confidence"] - b["top_k"][0]["confidence"]) <= 1e-4, name
    with out_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(models) * len(photos)
    assert set(rows[0]) >= {"model", "kind", "path", "label_1", "confidence_1", "label_3", "confidence_3"}


def _bad_inputs(folder: Path, good: Path) -> dict[str, Path]:
    folder.mkdir()
    shutil.copy(good, folder / "good.jpg")
    data = good.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "fake.jpg").write_text("this is not a picture\n")
    Image.open(good).convert("CMYK").save(folder / "cmyk.jpg")
    grey16 = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(grey16).save(folder / "grey16.png")
    assert Image.open(folder / "grey16.png").mode.startswith("I;16")
    empty = folder.parent / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    notes = folder.parent / "notes.txt"
    notes.write_text("not an image")
    return {"folder": folder, "empty": empty, "notes": notes}


def test_bad_inputs_each_get_a_clear_line_and_the_rest_still_runs(tiny_export, photos, tmp_path, capsys):
    bad = _bad_inputs(tmp_path / "mixed", photos[0])
    wrong_kind = tmp_path / "model.onnx"
    wrong_kind.write_text("not an onnx file")
    out_json = tmp_path / "p.json"
    code = pr.main(["--model", str(tiny_export["out"] / "model.onnx"), "--model", str(wrong_kind),
                    "--model", str(tiny_export["out"] / "labels.txt"),
                    str(bad["folder"]), str(bad["empty"]), str(bad["notes"]), str(tmp_path / "missing.jpg"),
                    "--json", str(out_json)])
    assert code == 2, "a model could not be loaded: non-zero, after the others ran"
    captured = capsys.readouterr()
    err = captured.err
    lines = err.splitlines()

    def line_for(name: str) -> str:
        hits = [l for l in lines if name in l]
        assert len(hits) == 1, f"one line for {name}: {hits}"
        return hits[0]

    assert "cannot decode image: truncated" in line_for("truncated.jpg")
    assert "not an image file" in line_for("fake.jpg")
    assert "not an image file" in line_for("notes.txt")
    assert "folder has no images" in line_for(str(bad["empty"]))
    assert "no such file or folder" in line_for("missing.jpg")
    assert "not a loadable ONNX model" in line_for(str(wrong_kind))
    assert "unknown model file type" in line_for("labels.txt")
    assert "Traceback" not in err
    result = json.loads(out_json.read_text())
    (run,) = result["models"].values()
    predicted = {Path(p["path"]).name: p for p in run["predictions"]}
    assert set(predicted) == {"good.jpg", "cmyk.jpg", "grey16.png"}
    assert predicted["cmyk.jpg"]["note"] == "CMYK converted to RGB"
    assert "16-bit" in predicted["grey16.png"]["note"]
    assert {Path(e["path"]).name for e in result["errors"]} == {"truncated.jpg", "fake.jpg", "notes.txt", "empty",
                                                                 "missing.jpg"}
    assert "predicted 3 of 6 images" in captured.out

    # nothing predictable: exit 1; no loadable model: exit 2
    assert pr.main(["--model", str(tiny_export["out"] / "model.onnx"), str(bad["empty"]), str(bad["notes"])]) == 1
    assert "no image could be predicted" in capsys.readouterr().err
    assert pr.main(["--model", str(wrong_kind), str(bad["folder"])]) == 2
    assert "not a loadable ONNX model" in capsys.readouterr().err


def test_grid_is_a_seeded_sample_of_at_most_12_images(tiny_export, tmp_path, capsys):
    model = str(tiny_export["out"] / "model_float32.tflite")
    folder = str(tiny_export["data"])  # 160 images
    paths = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        paths[name] = tmp_path / f"{name}.png"
        assert pr.main(["--model", model, folder, "--grid", str(paths[name]), "--seed", str(seed), "--quiet"]) == 0
    a, b, c = (_png(paths[k]) for k in "abc")
    assert (a.shape[1], a.shape[0]) == grid_size_px(12) == (1200, 1170)
    assert np.array_equal(a, b), "same seed, same grid"
    assert not np.array_equal(a, c), "another seed, another sample"
    # no images given: the seed's figure from the run's own test split, with the true labels
    out = tmp_path / "test_split.png"
    assert pr.main(["--model", model, "--grid", str(out), "--grid-size", "6", "--json", str(tmp_path / "t.json")]) == 0
    assert "the 24 images of the test split" in capsys.readouterr().out
    grid = _png(out)
    assert (grid.shape[1], grid.shape[0]) == grid_size_px(6)
    (run,) = json.loads((tmp_path / "t.json").read_text())["models"].values()
    assert len(run["predictions"]) == 6 and all("true" in p for p in run["predictions"])


def test_real_photos_through_the_script(tiny_export, real_smoke, tmp_path):
    """scripts/predict.py as a user runs it, on real photos (EXIF, odd sizes)."""
    out = tmp_path / "real.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "predict.py"), "--model",
                           str(tiny_export["out"] / "tfjs"), str(real_smoke / "glass"), str(real_smoke / "shoes"),
                           "--top-k", "2", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = json.loads(out.read_text())["models"].values()
    assert len(run["predictions"]) == 40 and all(len(p["top_k"]) == 2 for p in run["predictions"])
    assert "predicted 40 of 40 images" in proc.stdout


@pytest.mark.parametrize("module", [ev, pr, pytest.importorskip("lit_garbage.commands.serve")])
def test_every_command_has_help_with_examples(module, capsys):
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and ("--model" in text or "--export" in text)
