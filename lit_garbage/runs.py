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

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from lit_garbage.files import sha256_file

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


@dataclass
class DataRoot:
    """the run's dataset, when it moved since training"""

    root: Path | None = None
    """dataset folder (default: the run's)"""


@dataclass
class DataPaths(DataRoot):
    """the run's dataset and split, when they moved since training"""

    manifest: Path | None = None
    """split manifest (default: the run's split.csv)"""


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
        # Where this machine made the export from, found by the checkpoint's hash (never written into the export):
        # an export moved away from its run still finds the run's split and dataset while they exist.
        local = recall_export(ckpt.get("sha256"))
        if local.get("manifest"):
            candidates.append(Path(local["manifest"]))
        roots = [export_dir / recorded["dataset_root"]] if recorded.get("dataset_root") else []
        if "dataset_root" in recorded and local.get("dataset_root"):  # exports made since roots were recorded
            roots.append(Path(local["dataset_root"]))
        if roots:  # the export says it itself: no checkpoint is opened
            dm = {"root": str(next((r for r in roots if r.is_dir()), roots[0]))}
        elif ckpt.get("file") and read_datamodule is not None:
            folders = (export_dir.parent, export_dir, export_dir.parent / CHECKPOINT_DIR)
            if ckpt.get("path"):
                folders = (*folders, (export_dir / ckpt["path"]).parent)
            if local.get("checkpoint"):
                folders = (*folders, Path(local["checkpoint"]).parent)
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


def find_model_data(model_path: str | Path, *, checkpoint: Mapping[str, Any] | None = None,
                    data_root: str | Path | None = None, manifest: str | Path | None = None,
                    warnings: list[str] | None = None) -> DataLocation:
    """`find_run_data` for any model file: a checkpoint through its own `datamodule_hyper_parameters`
    (`checkpoint`: the loaded checkpoint, without weights), any other file through the export around it (its
    metadata.json; an export made before the dataset root was recorded through the checkpoint it names, read
    only when its sha256 matches: `datamodule_of_export_checkpoint`, whose reasons go into `warnings`)."""
    if checkpoint is not None:
        datamodule = checkpoint.get("datamodule_hyper_parameters") or {}
        return find_run_data(model_path, checkpoint=True, datamodule=datamodule, data_root=data_root,
                             manifest=manifest)
    from lit_garbage.artifacts import locate_metadata

    warnings = [] if warnings is None else warnings
    export = locate_metadata(model_path)
    expected = (export[0].get("checkpoint") or {}).get("sha256") if export else None
    return find_run_data(model_path, export=export, data_root=data_root, manifest=manifest,
                         read_datamodule=lambda p: datamodule_of_export_checkpoint(p, expected, warnings))


def missing_manifest(model_path: str | Path, found: DataLocation) -> str:
    """The one line that says no split manifest was found for `model_path` (each command adds what to pass)."""
    looked = ", ".join(map(str, found.looked_at)) or "nowhere: the model names no manifest"
    return f"no split manifest for {model_path} (looked at {looked})"


def datamodule_of_export_checkpoint(path: Path, expected_sha256: str | None, warnings: list[str]) -> dict | None:
    """The data module hyper-parameters of the checkpoint beside an export made before exports recorded their
    dataset root (None: not used). Read only when it is the checkpoint the export was made from (metadata.json's
    sha256), and then with `weights_only=True`: a checkpoint holding Python objects is refused, with a warning."""
    if not expected_sha256 or sha256_file(path) != expected_sha256:
        warnings.append(f"{path} is not the checkpoint this export was made from (its sha256 differs from "
                        "metadata.json's): not read")
        return None
    try:  # without torch (the lite install) the run's dataset root must be given: --data.root
        import torch  # noqa: F401
    except ImportError:
        return None
    from lit_garbage.safe_loading import UnsafeFileError, load_torch_file

    try:
        ckpt = load_torch_file(path)
    except UnsafeFileError as err:
        warnings.append(f"{err}; not read to find the run's data")
        return None
    except Exception:  # noqa: BLE001 - damaged: no dataset root from it
        return None
    dm = ckpt.get("datamodule_hyper_parameters") if isinstance(ckpt, dict) else None
    return dm if isinstance(dm, dict) else None


# ---------------------------------------------------------------- this machine's memory of its exports

EXPORTS_INDEX_ENV = "LIT_GARBAGE_INDEX"  # the file below, elsewhere (tests, shared machines)
MAX_INDEXED = 1000


def exports_index() -> Path:
    """This user's private index of the exports made here: checkpoint sha256 -> the run's absolute paths. An
    export itself records paths only relative to it (a shipped file must not name this machine's folders)."""
    if os.environ.get(EXPORTS_INDEX_ENV):
        return Path(os.environ[EXPORTS_INDEX_ENV])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "lit-garbage" / "exports.json"


def _read_index() -> dict[str, Any]:
    try:
        data = json.loads(exports_index().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def remember_export(checkpoint_sha256: str, **paths: Path | None) -> None:
    """Record where the run of `checkpoint_sha256` lives (checkpoint, manifest, dataset_root); best effort."""
    from lit_garbage.files import replaced_atomically

    index = _read_index()
    index.pop(checkpoint_sha256, None)
    index[checkpoint_sha256] = {k: str(Path(v).resolve()) for k, v in paths.items() if v is not None}
    index = dict(list(index.items())[-MAX_INDEXED:])  # the most recent exports
    try:
        with replaced_atomically(exports_index()) as tmp:
            tmp.write_text(json.dumps(index, indent=1) + "\n")
        os.chmod(exports_index(), 0o600)  # private: it names this user's folders
    except OSError:
        pass  # a read-only home: moved exports then need --data.root, as before


def recall_export(checkpoint_sha256: str | None) -> dict[str, str]:
    entry = _read_index().get(checkpoint_sha256) if checkpoint_sha256 else None
    return {k: v for k, v in entry.items() if isinstance(v, str)} if isinstance(entry, dict) else {}
