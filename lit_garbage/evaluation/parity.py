"""Format parity: every file of an export scored on the same photos, one table.

For each format present in the export folder (the rows of `lit_garbage.formats`: the torch weights
`model.safetensors` first, then every converted file), `evaluate` runs the split through that format's own runtime; the table gives accuracy, macro
F1, top-1 agreement with torch on the same photos, latency (one image at a time, the backend's own
preprocessing excluded) and size. MediaPipe's `ImageClassifier` opens the int8 file alone (its embedded labels and
normalisation) and classifies the photos itself (its own resize): the row a phone app would see.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from lit_garbage.formats import FORMATS

MEDIAPIPE_FORMAT = "tflite_int8"
LATENCY_IMAGES = 50


def format_files(export: Path) -> list[tuple[str, Path]]:
    """(format, path) of every model file present in an export folder, torch first."""
    return [(fmt, export / row.file) for fmt, row in FORMATS.items() if (export / row.file).exists()]


def size_bytes(path: Path) -> int:
    """A file's size; a folder's files together; TFJS's model.json with its weight shards (its whole folder)."""
    if path.name == "model.json":
        path = path.parent
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _latency_ms(backend, paths: list[Path]) -> float:
    from lit_garbage.inference.files import load_batch

    images, _, _ = load_batch(paths[:LATENCY_IMAGES], backend.image_size)
    _, ms = backend.timed_predict(images, warmup=2)
    return ms


def _mediapipe_top1(model: str, paths: list[str], class_names: list[str]) -> tuple[list[int], float]:
    """(top-1 class index per photo, -1 for a name the model does not know; seconds spent classifying)."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=model), max_results=1)
    index = {name: i for i, name in enumerate(class_names)}
    pred, elapsed = [], 0.0
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for p in paths:
            image = mp.Image.create_from_file(p)
            start = time.perf_counter()
            (head,) = classifier.classify(image).classifications
            elapsed += time.perf_counter() - start
            pred.append(index.get(head.categories[0].category_name, -1))
    return pred, elapsed


def mediapipe_row(path: Path, paths: list[Path], y_true: np.ndarray, class_names: list[str],
                  reference: dict[Path, int]) -> dict[str, Any]:
    """MediaPipe's ImageClassifier on the file alone, on the full-size photos (it resizes them itself). It runs in
    a fresh process: MediaPipe's own TFLite runtime beside TensorFlow and LiteRT in one process can crash it."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pred, elapsed = pool.apply(_mediapipe_top1, (str(path), [str(p) for p in paths], list(class_names)))
    return _row("mediapipe (int8 file alone)", path, paths, y_true, np.array(pred), class_names, reference,
                1000 * elapsed / max(len(paths), 1))


def _row(name: str, path: Path, paths: list[Path], y_true: np.ndarray, y_pred: np.ndarray,
         class_names: list[str], reference: dict[Path, int] | None, latency: float) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score

    agree = None
    if reference:
        same = [reference[p] == int(y) for p, y in zip(paths, y_pred) if p in reference]
        agree = float(np.mean(same)) if same else None
    return {"format": name, "file": path.name, "images": int(len(y_true)),
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", labels=list(range(len(class_names))),
                                       zero_division=0)),
            "agreement_with_torch": agree, "latency_ms": latency, "size_bytes": size_bytes(path)}


def format_parity(export: str | Path, split: str = "test", data_root: str | Path | None = None,
                  out: str | Path | None = None, threads: int | None = None, mediapipe: bool = True,
                  console=None) -> dict[str, Any]:
    """Score every format of `export` on `split`; writes parity.md and parity.json (and each format's evaluation
    report) into `out` (default: EXPORT/parity) and returns the table."""
    from lit_garbage.evaluation.evaluate import evaluate
    from lit_garbage.inference.backends import load_backend

    export = Path(export)
    out = Path(out) if out is not None else export / "parity"
    files = format_files(export)
    if not files:
        raise FileNotFoundError(f"{export} holds no model file of this project")
    rows: list[dict[str, Any]] = []
    reference: dict[Path, int] | None = None
    last = None
    for fmt, path in files:
        backend = load_backend(path, threads=threads)
        ev = evaluate(path, [split], data_root, out=out / fmt, threads=threads, worst=0, console=console,
                      backend=backend)
        (result,) = ev.results
        if reference is None and fmt == "torch":
            reference = {p: int(y) for p, y in zip(result.paths, result.y_pred)}
        rows.append(_row(fmt, path, result.paths, result.y_true, result.y_pred, result.class_names, reference,
                         _latency_ms(backend, result.paths)))
        last = (ev, result)
    if mediapipe and (export / FORMATS[MEDIAPIPE_FORMAT].file).is_file() and last is not None:
        ev, result = last
        rows.append(mediapipe_row(export / FORMATS[MEDIAPIPE_FORMAT].file, result.paths, result.y_true,
                                  result.class_names, reference))
    table = {"export": str(export), "split": split, "data": str(last[0].data.source) if last else None,
             "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "parity.json").write_text(json.dumps(table, indent=1) + "\n")
    (out / "parity.md").write_text(parity_markdown(table))
    return table


def parity_markdown(table: dict[str, Any]) -> str:
    lines = [f"# Format parity: {table['export']}, {table['split']} split", "",
             "| format | file | images | accuracy | macro F1 | agrees with torch | ms / image | size |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        agree = "-" if r["agreement_with_torch"] is None else f"{100 * r['agreement_with_torch']:.2f} %"
        lines.append(f"| {r['format']} | {r['file']} | {r['images']} | {100 * r['accuracy']:.2f} % | "
                     f"{r['macro_f1']:.4f} | {agree} | {r['latency_ms']:.1f} | {r['size_bytes'] / 1e6:.2f} MB |")
    lines += ["", "Latency: one image at a time on this machine's CPU, each format's own runtime (torch eager, "
              "onnxruntime, TensorFlow, LiteRT, TFJS in Node, MediaPipe), decoding and resizing excluded "
              "(MediaPipe's row includes its own resize)."]
    return "\n".join(lines) + "\n"
