"""The run folder: the files `fit` writes and every later stage finds again.

    runs/<name>/
        config.yaml         the fully resolved config: `fit --config <run>/config.yaml` reproduces the run
        split.csv           the split manifest (path, class, split, bytes, sha256 of every image)
        skipped.csv         files the dataset scan left out, with the reason
        duplicates.csv      exact / near duplicate groups the split kept together
        metrics.csv, events.out.tfevents.*   per-epoch metrics (CSV, TensorBoard)
        checkpoints/        best-*.ckpt and last.ckpt
        model.ckpt          the best weights, restored at the end of training
        results.json        final validation / test scores of model.ckpt
        .lock               held by the one `fit` writing the run (pid, host, start), empty when none is
        image_cache/        decoded images (safe to delete)
        export/             every exported format (`export`), with metadata.json
        eval/               reports (`evaluate`)

"Which data belongs to this model" is answered here once, for checkpoints and exported files alike.
Standard library only: every stage imports it, the torch-free `lite` install included.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "split.csv"
SKIPPED_FILE = "skipped.csv"
DUPLICATES_FILE = "duplicates.csv"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
MODEL_FILE = "model.ckpt"
RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.csv"
LOCK_FILE = ".lock"
EXPORT_DIR = "export"
EVAL_DIR = "eval"
IMAGE_CACHE_DIR = "image_cache"


def run_dir_of(checkpoint: str | Path) -> Path:
    """The run a checkpoint belongs to: `<run>/model.ckpt` and `<run>/checkpoints/*.ckpt` both belong to `<run>`."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINT_DIR else checkpoint.parent


def default_export_dir(checkpoint: str | Path) -> Path:
    return run_dir_of(checkpoint) / EXPORT_DIR


@dataclass
class DataLocation:
    """Where a model's dataset and split manifest are (either may be missing: the caller decides)."""

    root: Path | None
    manifest: Path | None
    looked_at: list[Path]
    run_dir: Path | None
    expected_manifest_sha256: str | None = None  # what an export recorded, to detect a changed manifest


def find_run_data(model_path: str | Path, *, checkpoint: bool = False, datamodule: Mapping[str, Any] | None = None,
                  export: tuple[Mapping[str, Any], Path] | None = None,
                  read_datamodule: Callable[[Path], Mapping[str, Any] | None] | None = None,
                  data_root: str | Path | None = None, manifest: str | Path | None = None) -> DataLocation:
    """The dataset root and split manifest of the run that made `model_path`.

    - a checkpoint (`checkpoint=True`): `datamodule` is its `datamodule_hyper_parameters` (dataset root +
      manifest path), and the run folder's split.csv is looked for beside it;
    - an exported file: `export` is (metadata.json's content, the export folder); the manifest is looked
      up beside the export and at the path metadata.json recorded, and the dataset root is the one
      metadata.json records (`split_manifest.dataset_root`). Exports made before it was recorded take it from
      the checkpoint the export names, read with `read_datamodule` (None: not read), which returns None for a
      checkpoint it will not use (the next candidate is tried);
    - any other file: only the `data_root` / `manifest` given.

    `data_root` / `manifest` override what the run recorded (a moved dataset); candidate manifests are
    tried in order and the first existing file wins. The run's own folder comes before the absolute paths it
    recorded: a moved or copied run uses its own split.csv and checkpoint, not the ones at its old place (which
    may by now belong to another run).
    """
    model_path = Path(model_path)
    candidates: list[Path] = [Path(manifest)] if manifest else []
    dm: Mapping[str, Any] = datamodule or {}
    run_dir: Path | None = None
    expected_sha = None
    if checkpoint:
        run_dir = run_dir_of(model_path)
        candidates += [run_dir / MANIFEST_FILE]
        if model_path.parent != run_dir:
            candidates.append(model_path.parent / MANIFEST_FILE)
        if dm.get("manifest"):
            candidates.append(Path(dm["manifest"]))
    elif export is not None:
        meta, export_dir = export
        run_dir = export_dir.parent
        recorded = meta.get("split_manifest") or {}
        expected_sha = recorded.get("sha256")
        if recorded.get("file"):
            candidates += [export_dir / recorded["file"], export_dir.parent / recorded["file"]]
        if recorded.get("path"):  # relative to the export folder (exports made before: absolute)
            candidates.append(export_dir / recorded["path"])
        ckpt = meta.get("checkpoint") or {}
        if recorded.get("dataset_root"):  # the export says it itself: no checkpoint is opened
            dm = {"root": str(export_dir / recorded["dataset_root"])}
        elif ckpt.get("file") and read_datamodule is not None:
            folders = (export_dir.parent, export_dir, export_dir.parent / CHECKPOINT_DIR)
            if ckpt.get("path"):
                folders = (*folders, (export_dir / ckpt["path"]).parent)
            for found in dict.fromkeys(f / ckpt["file"] for f in folders):
                read = read_datamodule(found) if found.is_file() else None
                if read is not None:
                    dm = read
                    break
            if dm.get("manifest"):
                candidates.append(Path(dm["manifest"]))
    root = Path(data_root) if data_root else (Path(dm["root"]) if dm.get("root") else None)
    found_manifest = next((p for p in candidates if p.is_file()), None)
    return DataLocation(root, found_manifest, candidates, run_dir, expected_sha)
