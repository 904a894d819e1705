"""Real images from a run's own split manifest: int8 calibration (train split) and verification (test split).

Images go through the project's one preprocessing contract (`images.load_rgb` + `images.model_input`). A file
whose content changed since the scan (`manifest.check_files`) is left out, named in `RunData.changed`; more than
1 % of the manifest (at least 5 files) changed refuses the export (SampleError).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lit_garbage.data.images import load_rgb, model_input, shown
from lit_garbage.data.manifest import DatasetError, Manifest, Record, check_files
from lit_garbage.runs import find_model_data, missing_manifest


class SampleError(RuntimeError):
    """The run's dataset or manifest cannot provide the images an export step needs."""


@dataclass(frozen=True)
class RunData:
    root: Path
    manifest_path: Path
    manifest: Manifest  # without the changed files
    changed: list[str] = field(default_factory=list)  # warnings: files changed since the scan, left out

    def pick(self, split: str, count: int) -> list[Record]:
        """Up to `count` records of a split, spread evenly over the classes, deterministic."""
        by_class: dict[str, list[Record]] = defaultdict(list)
        for r in sorted(self.manifest.split(split), key=lambda r: r.path):
            by_class[r.label].append(r)
        queues = [by_class[name] for name in self.manifest.class_names if by_class[name]]
        picked: list[Record] = []
        i = 0
        while len(picked) < count and any(i < len(q) for q in queues):
            picked.extend(q[i] for q in queues if i < len(q))
            i += 1
        return picked[:count]

    def load(self, records: list[Record], image_size: int) -> np.ndarray:
        """float32 NCHW [0, 1] images of `records`."""
        out = np.empty((len(records), 3, image_size, image_size), dtype=np.float32)
        for i, r in enumerate(records):
            path = self.root / r.path
            try:
                out[i] = model_input(load_rgb(path), image_size)
            except OSError as err:
                raise SampleError(f"cannot read {shown(path)} (listed in {self.manifest_path}): {err}") from None
        return out


def run_data(checkpoint: Mapping[str, Any], ckpt_path: Path, data_root: str | Path | None = None,
             manifest: str | Path | None = None) -> RunData:
    """Dataset root + split manifest of the run that produced a checkpoint (`lit_garbage.runs.find_model_data`).

    Taken from the checkpoint's datamodule hyper-parameters; `data_root` / `manifest` override them
    (e.g. when the dataset moved). A relative manifest path is also looked up beside the checkpoint.
    """
    found = find_model_data(ckpt_path, checkpoint=checkpoint, data_root=data_root, manifest=manifest)
    if found.manifest is None:
        raise SampleError(f"{missing_manifest(ckpt_path, found)}; pass --data.manifest PATH (the run's split.csv)")
    root = found.root or Path("")
    if not str(root) or not root.is_dir():
        raise SampleError(f"the run's dataset root '{root}' is not a folder; pass --data.root PATH "
                          "(the dataset the run was trained on)")
    try:
        manifest = Manifest.read(found.manifest)
    except DatasetError as err:
        raise SampleError(str(err)) from None
    check = check_files(root, manifest.records)
    if check.too_many:
        raise SampleError(check.error(root, found.manifest.name))
    return RunData(root, found.manifest, manifest.without(check.changed), check.warnings(root, found.manifest.name))
