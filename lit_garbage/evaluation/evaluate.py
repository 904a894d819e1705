"""The seed's report for any model file, on the run's own split (`lit-garbage evaluate`).

    python scripts/evaluate.py --model runs/demo/export/model_int8.tflite            # test split
    python scripts/evaluate.py --model runs/demo/model.ckpt --split val test --out eval/demo

The backend comes from the path (`load_backend`). The images come from the run's split manifest,
found through the model: a checkpoint's `datamodule_hyper_parameters` (dataset root + manifest), or
an export's metadata.json (manifest file and dataset root; exports made before the root was recorded
name the checkpoint they were made from, which is read only if its sha256 matches, as data only). `--data.root ROOT` overrides the root; with no manifest at all, every image under ROOT
is evaluated (split "all"). Every image goes through the one preprocessing contract.

Writes into --out: `report.md` (accuracy, per-class precision/recall/F1 with macro and weighted
averages as in SPEC.md, side by side with the seed's numbers), `metrics.json`, and per split
`confusion_<split>.png` (counts + row-normalised), `worst_<split>.png` (the most confidently wrong
images) and `predictions_<split>.csv`. Metrics come from scikit-learn.

A file whose content changed since the scan (size, or sha256 when the size or mtime differs from split.csv) is
never evaluated as the photo the manifest lists: a warning names it and it is left out (the report lists it
under Skipped); when more than 1 % of a split (at least 5 files) changed, the evaluation is refused.

Exit status: 0 evaluated; 1 no image could be evaluated; 2 the model or the data cannot be used.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lit_garbage.data.images import shown
from lit_garbage.data.manifest import (
    DatasetError,
    Manifest,
    Record,
    check_files,
    scan_image_folder,
)
from lit_garbage.evaluation import seed_reference
from lit_garbage.files import sha256_file
from lit_garbage.runs import EVAL_DIR, find_model_data, missing_manifest

WORST_COUNT = 12
ALL_SPLIT = "all"



class DataError(RuntimeError):
    """The images to evaluate cannot be found; the message says what to pass."""


@dataclass
class RunDataset:
    root: Path
    manifest: Manifest
    manifest_path: Path | None  # None: a plain folder scan (split "all")
    source: str  # how they were found, for the report
    warnings: list[str] = field(default_factory=list)
    run_dir: Path | None = None


# ---------------------------------------------------------------- finding the run's data


def _folder_manifest(root: Path) -> Manifest:
    class_names, samples, _skipped = scan_image_folder(root)  # unreadable files are left out
    records = tuple(Record(p.relative_to(root).as_posix(), label, ALL_SPLIT, probe.bytes, probe.sha256)
                    for p, label, probe in samples)
    return Manifest(tuple(class_names), records)


def resolve_data(backend, model_path: str | Path, data_root: str | Path | None = None,
                 manifest: str | Path | None = None, whole_folder: bool = False) -> RunDataset:
    """Dataset root + split manifest for a loaded model (`lit_garbage.runs.find_model_data` finds them)."""
    model_path = Path(model_path)
    warnings: list[str] = []
    checkpoint = None
    if backend.kind == "torch" and model_path.suffix.lower() != ".safetensors":  # a checkpoint
        checkpoint = getattr(backend, "checkpoint", None) or {}
    found = find_model_data(model_path, checkpoint=checkpoint, data_root=data_root, manifest=manifest,
                            warnings=warnings)
    root, run_dir, expected_sha = found.root, found.run_dir, found.expected_manifest_sha256
    if whole_folder:
        if root is None or not root.is_dir():
            raise DataError(f"--split all needs a dataset folder: pass --data.root ROOT (got {root})")
        return RunDataset(root, _folder_manifest(root), None, f"every image under {root}", warnings, run_dir)
    manifest_path = found.manifest
    if manifest_path is None:
        if root is not None and root.is_dir() and data_root:
            warnings.append(f"the model carries no split manifest: evaluating every image under {root}")
            return RunDataset(root, _folder_manifest(root), None, f"every image under {root}", warnings, run_dir)
        raise DataError(f"{missing_manifest(model_path, found)}; pass --data.root ROOT "
                        "(a folder of class folders) to evaluate every image in it, or --data.manifest SPLIT.csv"
                        + "".join(f"; {w}" for w in warnings))
    if root is None or not root.is_dir():
        raise DataError(f"the run's dataset root '{root or '?'}' is not a folder; pass --data.root ROOT "
                        "(the dataset the run was trained on)" + "".join(f"; {w}" for w in warnings))
    if expected_sha and sha256_file(manifest_path) != expected_sha:
        warnings.append(f"{manifest_path} differs from the manifest the export was made with (sha256 mismatch)")
    try:
        parsed = Manifest.read(manifest_path)
    except (DatasetError, KeyError, ValueError) as err:
        raise DataError(f"cannot read the split manifest {manifest_path}: {err}") from None
    if data_root and not manifest and parsed.records and _share_listed(root, parsed) < 0.5:
        # Another folder, not the run's dataset moved: the manifest's splits mean nothing there; all of it.
        warnings.append(f"{root} holds under half of the files {manifest_path.name} lists: it is not the run's "
                        "dataset, so every image under it is evaluated (as --split all)")
        return RunDataset(root, _folder_manifest(root), None, f"every image under {root}", warnings, run_dir)
    return RunDataset(root, parsed, manifest_path, f"split manifest {manifest_path}", warnings, run_dir)


def _share_listed(root: Path, manifest: Manifest, sample: int = 200) -> float:
    """The share of (a spread sample of) the manifest's files that are under `root`."""
    records = manifest.records[::max(1, len(manifest.records) // sample)]
    return sum((root / r.path).is_file() for r in records) / len(records)


# ---------------------------------------------------------------- metrics


@dataclass
class SplitResult:
    split: str
    class_names: list[str]
    paths: list[Path]
    y_true: np.ndarray
    y_pred: np.ndarray
    probs: np.ndarray
    skipped: list[dict[str, str]]

    @property
    def n(self) -> int:
        return len(self.y_true)

    def metrics(self) -> dict[str, Any]:
        from sklearn.metrics import (
            accuracy_score,
            classification_report,
            confusion_matrix,
        )

        labels = list(range(len(self.class_names)))
        present = sorted(set(self.y_true.tolist()) | set(self.y_pred.tolist()))
        report = classification_report(self.y_true, self.y_pred, labels=present,
                                       target_names=[self.class_names[i] for i in present],
                                       output_dict=True, zero_division=0)
        rows = {}
        for name, row in report.items():
            if name == "accuracy":
                continue
            rows[name] = {"precision": row["precision"], "recall": row["recall"], "f1": row["f1-score"],
                          "support": int(row["support"])}
        return {
            "split": self.split,
            "images": self.n,
            "accuracy": float(accuracy_score(self.y_true, self.y_pred)),
            "report": rows,
            "confusion_matrix": confusion_matrix(self.y_true, self.y_pred, labels=labels).tolist(),
            "skipped": self.skipped,
        }


def seed_comparison(metrics: dict[str, Any]) -> dict[str, Any]:
    """Our numbers minus the seed's, for the accuracy of this split and every row the seed reports."""
    split = metrics["split"]
    seed_split = split if split in seed_reference.ACCURACY else "test"
    seed_acc = seed_reference.ACCURACY[seed_split]
    rows = {}
    for name, row in metrics["report"].items():
        ref = seed_reference.reference_row(name)
        if ref is None:
            continue
        rows[name] = {key: {"ours": row[key], "seed": ref[key], "delta": row[key] - ref[key]}
                      for key in ("precision", "recall", "f1")}
    return {"seed_split": seed_split,
            "accuracy": {"ours": metrics["accuracy"], "seed": seed_acc, "delta": metrics["accuracy"] - seed_acc},
            "rows": rows, "source": seed_reference.SOURCE}


# ---------------------------------------------------------------- markdown


def accuracy_markdown(all_metrics: Sequence[dict[str, Any]]) -> str:
    lines = ["| split | accuracy | images | seed | delta |", "|---|---|---|---|---|"]
    for m in all_metrics:
        cmp = m["vs_seed"]["accuracy"]
        lines.append(f"| {m['split']} | {100 * m['accuracy']:.2f} % | {m['images']} | {100 * cmp['seed']:.2f} % "
                     f"| {100 * cmp['delta']:+.2f} pp |")
    return "\n".join(lines)


def report_markdown(metrics: dict[str, Any]) -> str:
    """The per-class table in SPEC.md's shape (class | precision | recall | F1), plus support."""
    lines = ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name, row in metrics["report"].items():
        lines.append(f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {row['support']} |")
    return "\n".join(lines)


def seed_markdown(metrics: dict[str, Any]) -> str:
    cmp = metrics["vs_seed"]
    if not cmp["rows"]:
        return "_no class in common with the seed's report_"
    lines = ["| class | precision | seed | delta | recall | seed | delta | F1 | seed | delta |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in cmp["rows"].items():
        cells = []
        for key in ("precision", "recall", "f1"):
            v = row[key]
            cells += [f"{v['ours']:.4f}", f"{v['seed']:.4f}", f"{v['delta']:+.4f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- the evaluation


@dataclass
class Evaluation:
    model: Path
    kind: str
    data: RunDataset
    results: list[SplitResult]
    metrics: list[dict[str, Any]]
    out: Path
    files: list[Path]


def default_out(model_path: Path, kind: str, data: RunDataset | None) -> Path:
    name = model_path.stem if model_path.is_file() and model_path.name != "model.json" else model_path.name
    if model_path.name == "model.json":
        name = model_path.parent.name
    label = name if kind != "torch" else f"torch-{name}"
    base = data.run_dir if data is not None and data.run_dir is not None else Path(".")
    return base / EVAL_DIR / label


def evaluate(model: str | Path, splits: Sequence[str] = ("test",), data_root: str | Path | None = None,
             manifest: str | Path | None = None, out: str | Path | None = None, batch_size: int = 64,
             threads: int | None = None, worst: int = WORST_COUNT, console=None, backend=None,
             tta: bool = False) -> Evaluation:
    """Evaluate a model file on the asked splits and write the report; raises ModelFileError / DataError."""
    from rich.console import Console
    from rich.markup import escape

    from lit_garbage.inference.backends import load_backend
    from lit_garbage.inference.files import predict_files

    console = console or Console(stderr=True)
    model = Path(model)
    backend = backend or load_backend(model, threads=threads, tta=tta)
    if not backend.has_class_names:
        console.print(f"[yellow]warning:[/] {escape(str(model))} carries no class names and no metadata.json lies "
                      f"beside it: its outputs are class_0 .. class_{backend.num_classes - 1}, which match no "
                      "dataset class")
    whole = list(splits) == [ALL_SPLIT]
    if ALL_SPLIT in splits and not whole:
        raise DataError("--split all cannot be combined with other splits")
    data = resolve_data(backend, model, data_root, manifest, whole_folder=whole)
    for w in data.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")
    if data.manifest_path is None:
        splits = [ALL_SPLIT]
    index = {name: i for i, name in enumerate(backend.class_names)}
    unknown = sorted(set(r.label for r in data.manifest.records) - set(index))
    if unknown:
        console.print(f"[yellow]warning:[/] the model has no class {', '.join(unknown)}: those images are skipped")
    results: list[SplitResult] = []
    for split in splits:
        records = data.manifest.split(split)
        if not records:
            raise DataError(f"the {split} split of {data.source} has no images "
                            f"(splits present: {', '.join(sorted({r.split for r in data.manifest.records}))})")
        records = [r for r in records if r.label in index]
        skipped: list[dict[str, str]] = []
        if data.manifest_path is not None:  # the images must still be the ones the manifest lists
            check = check_files(data.root, records)
            if check.too_many:
                raise DataError(check.error(data.root, data.manifest_path.name))
            for path, message in zip(check.changed, check.warnings(data.root, data.manifest_path.name)):
                console.print(f"[yellow]warning:[/] {escape(message)}")
                skipped.append({"path": shown(data.root / path), "error": "changed since the dataset scan: "
                                + check.changed[path]})
            records = [r for r in records if r.path not in check.changed]
        paths = [data.root / r.path for r in records]

        def report(e) -> None:
            skipped.append({"path": shown(e.path), "error": e.message})
            console.print(f"[yellow]skipped[/] {escape(shown(e.path))}: {escape(e.message)}")

        idx, probs, _ = predict_files(backend, paths, batch_size, on_error=report,
                                      description=f"{split}: {backend.kind} {backend.path.name}", console=console)
        y_true = np.array([index[records[i].label] for i in idx], dtype=int)
        results.append(SplitResult(split, list(backend.class_names), [paths[i] for i in idx], y_true,
                                   probs.argmax(axis=1) if len(probs) else np.empty(0, int), probs, skipped))
    if out is None:
        out = default_out(model, backend.kind, data)
        out = out.with_name(out.name + "-tta") if tta else out
    metrics = []
    for r in results:
        if r.n == 0:
            continue
        m = r.metrics()
        m["vs_seed"] = seed_comparison(m)
        metrics.append(m)
    out = Path(out)
    files = write_outputs(out, backend, model, data, results, metrics, worst) if metrics else []
    return Evaluation(model, backend.kind, data, results, metrics, out, files)


def write_outputs(out: Path, backend, model: Path, data: RunDataset, results: list[SplitResult],
                  metrics: list[dict[str, Any]], worst: int) -> list[Path]:
    from lit_garbage.data.images import load_rgb
    from lit_garbage.evaluation.figures import Panel, save_confusion, save_grid

    out.mkdir(parents=True, exist_ok=True)
    files = []
    by_split = {r.split: r for r in results}
    for m in metrics:
        r = by_split[m["split"]]
        title = f"{backend.kind}: {model.name}, {m['split']} split ({r.n} images, accuracy {100 * m['accuracy']:.2f} %)"
        files.append(save_confusion(np.array(m["confusion_matrix"]), r.class_names, out / f"confusion_{r.split}.png",
                                    title=title))
        conf = r.probs.max(axis=1)
        wrong = np.flatnonzero(r.y_pred != r.y_true)
        wrong = wrong[np.argsort(-conf[wrong], kind="stable")][:worst]
        m["worst"] = [{"path": shown(r.paths[i]), "true": r.class_names[r.y_true[i]],
                       "predicted": r.class_names[r.y_pred[i]], "confidence": float(conf[i])} for i in wrong]
        if len(wrong):
            panels = [Panel(load_rgb(r.paths[i]), r.class_names[r.y_pred[i]], float(conf[i]),
                            r.class_names[r.y_true[i]], shown(r.paths[i].name)) for i in wrong]
            files.append(save_grid(panels, out / f"worst_{r.split}.png",
                                   title=f"most confident mistakes, {r.split} split ({len(wrong)} of {r.n - int((r.y_pred == r.y_true).sum())})"))
        pred_csv = out / f"predictions_{r.split}.csv"
        with pred_csv.open("w", newline="", encoding="utf-8", errors="backslashreplace") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "true", "predicted", "confidence", "correct"])
            for p, t, y, c in zip(r.paths, r.y_true, r.y_pred, conf):
                writer.writerow([shown(p), r.class_names[t], r.class_names[y], f"{c:.6f}", int(t == y)])
        files.append(pred_csv)
    summary = {
        "model": str(model), "kind": backend.kind, "class_names": backend.class_names,
        "image_size": backend.image_size, "data": {"root": str(data.root), "source": data.source,
                                                   "manifest": str(data.manifest_path) if data.manifest_path else None},
        "preprocessing": "lit_garbage.data.images: load_rgb + model_input (RGB, EXIF, resize, [0, 1])",
        "seed_reference": seed_reference.SOURCE, "splits": metrics,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(full_markdown(backend, model, data, metrics), encoding="utf-8",
                                   errors="backslashreplace")
    return [out / "report.md", out / "metrics.json", *files]


def full_markdown(backend, model: Path, data: RunDataset, metrics: list[dict[str, Any]]) -> str:
    parts = [f"# Evaluation of `{model}` ({backend.kind})", "",
             f"Images: {data.source} (root `{data.root}`); preprocessing: the project's one contract "
             f"(RGB, EXIF orientation, {backend.image_size}x{backend.image_size}, [0, 1]).", "",
             "## Accuracy", "", accuracy_markdown(metrics), ""]
    for m in metrics:
        parts += [f"## Per-class report, {m['split']} split", "", report_markdown(m), "",
                  f"## Side by side with the seed ({m['vs_seed']['seed_split']} split, {seed_reference.SOURCE})", "",
                  seed_markdown(m), ""]
        if m["skipped"]:
            parts += [f"Skipped ({len(m['skipped'])}): " + "; ".join(f"`{s['path']}`: {s['error']}" for s in m["skipped"]), ""]
        parts += [f"![confusion matrix](confusion_{m['split']}.png)", ""]
        if m.get("worst"):
            parts += [f"![most confident mistakes](worst_{m['split']}.png)", ""]
    return "\n".join(parts)


def print_terminal(ev: Evaluation, console) -> None:
    """Accuracy per split, then per split one table: ours and the change against the seed's row."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    console.print(f"[bold]{ev.kind}[/] {escape(str(ev.model))} on {escape(ev.data.source)}")
    acc = Table(box=box.SIMPLE, title="accuracy", title_justify="left")
    for col in ("split", "accuracy", "images", "seed", "delta"):
        acc.add_column(col, justify="left" if col == "split" else "right")
    for m in ev.metrics:
        cmp = m["vs_seed"]["accuracy"]
        acc.add_row(m["split"], f"{100 * m['accuracy']:.2f} %", str(m["images"]), f"{100 * cmp['seed']:.2f} %",
                    _signed(100 * cmp["delta"], " pp", 2))
    console.print(acc)
    for m in ev.metrics:
        t = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1), collapse_padding=True, title=f"{m['split']} split (delta: ours minus seed's "
                  f"{m['vs_seed']['seed_split']} report)", title_justify="left")
        t.add_column("class", no_wrap=True)
        for col in ("precision", "recall", "F1", "support", "Δprec", "Δrecall", "ΔF1"):
            t.add_column(col, justify="right", no_wrap=True)
        seed_rows = m["vs_seed"]["rows"]
        for name, row in m["report"].items():
            d = seed_rows.get(name)
            deltas = [_signed(d[k]["delta"]) if d else "" for k in ("precision", "recall", "f1")]
            t.add_row(name, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}",
                      str(row["support"]), *deltas, end_section=name == list(m["report"])[-3])
        console.print(t)


def _signed(value: float, unit: str = "", digits: int = 4) -> str:
    colour = "green" if value > 0 else "red" if value < 0 else "white"
    return f"[{colour}]{value:+.{digits}f}{unit}[/]"

