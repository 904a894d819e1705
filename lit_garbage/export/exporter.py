"""`Exporter`: a checkpoint -> every deployable format, verified, written atomically.

    Exporter(ExportConfig(model="runs/x/model.ckpt", out="runs/x/export")).run()

Everything is written into a hidden sibling folder (`.export.partial-<pid>`) and moved into place
only when complete, so an interrupted export leaves the previous complete export untouched, and a
re-run replaces it cleanly. Formats that build on another reuse it (TFLite and TFJS come from the
SavedModel, the SavedModel from the ONNX file). Each step prints its wall time; a total at the end.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lit_garbage.artifacts import (
    FactsError,
    build_metadata,
    check_facts,
    embedded_facts,
    write_metadata,
)
from lit_garbage.export.config import ExportConfig
from lit_garbage.export.samples import RunData, SampleError, run_data
from lit_garbage.export.verify import VerifyReport, verify_export
from lit_garbage.files import low_space, sha256_file
from lit_garbage.formats import DEFAULT_FORMATS, FORMAT_FILES, FORMATS, REQUIRES
from lit_garbage.inference.backends import TorchBackend, load_classifier, torch_outputs
from lit_garbage.runs import (
    RESULTS_FILE,
    default_export_dir,
    remember_export,
    run_dir_of,
)
from lit_garbage.training.checkpoints import save_safetensors

# The `--formats` names and what they build on: the rows of `lit_garbage.formats`.
ALL_FORMATS = tuple(FORMAT_FILES)
MARKER = ".lit-garbage-export"  # identifies a folder this tool may replace
WEIGHTS_FILE = FORMATS["torch"].file  # every export's weights, shareable without a pickle
# Every name an export writes at its top level: a re-export replaces these and nothing else.
EXPORT_NAMES = frozenset({MARKER, "metadata.json", "labels.txt", "verify.md", "verify.json",
                          *(Path(row.file).parts[0] for row in FORMATS.values())})
# Free space an export needs where it writes and in the temporary folder (a MobileNetV2 export is ~60 MB,
# the converters' temporary files about as much again).
EXPORT_SPACE = 256 * 2**20


class ExportError(RuntimeError):
    """The export cannot be made; the message says why and what to do."""


@dataclass
class ExportResult:
    out: Path
    formats: list[str]
    timings: dict[str, float]
    report: VerifyReport | None

    @property
    def passed(self) -> bool:
        return self.report is None or self.report.passed


def resolve_formats(requested: Sequence[str] | None) -> list[str]:
    """Requested formats (default: DEFAULT_FORMATS) plus what they build on, in build order."""
    wanted = set(requested or DEFAULT_FORMATS)
    unknown = wanted - set(ALL_FORMATS)
    if unknown:
        raise ExportError(f"unknown format(s) {', '.join(sorted(unknown))}; choose from {', '.join(ALL_FORMATS)}")
    todo = list(wanted)
    while todo:
        for dep in REQUIRES[todo.pop()]:
            if dep not in wanted:
                wanted.add(dep)
                todo.append(dep)
    return [f for f in ALL_FORMATS if f in wanted]


class Exporter:
    def __init__(self, config: ExportConfig, log: Callable[[str], None] = print,
                 warn: Callable[[str], None] | None = None) -> None:
        """`config`: what to export, its options checked when it was made; `log` / `warn`: where progress and
        warnings go."""
        self.config = config
        self.ckpt = Path(config.model)
        # Absolute (not resolved: a linked folder stays the link): "--out ." has a name and a parent to rename in.
        self.out = Path(os.path.abspath(config.out if config.out is not None else default_export_dir(self.ckpt)))
        self.formats = resolve_formats(config.formats)
        if config.tflite_metadata and any(f.startswith("tflite_") for fmt in self.formats for f in FORMAT_FILES[fmt]):
            from lit_garbage.export.metadata import tflite_writer_problem

            problem = tflite_writer_problem()
            if problem:  # found out now, not after minutes of conversion
                raise ExportError(problem)
        self.int8 = config.int8
        self.data_root, self.manifest = config.data.root, config.data.manifest
        self.verbose, self.log = config.verbose, log
        self.warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr, flush=True))
        self.timings: dict[str, float] = {}
        self.embedded: list = []  # lit_garbage.export.metadata.Embedded, one per model file
        self.work: Path | None = None
        self._data: RunData | None = None
        self._calibration: np.ndarray | None = None  # int8 / int16x8 calibration images, NHWC

    # ------------------------------------------------------------ orchestration

    def run(self) -> ExportResult:
        start = time.perf_counter()
        self.log(f"export {self.ckpt} -> {self.out}  formats: {', '.join(self.formats)}")
        self._check_out()  # before any work: what it refuses costs nothing
        self._step("load checkpoint", self.load)
        self.work = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"
        shutil.rmtree(self.work, ignore_errors=True)
        try:
            self.work.mkdir(parents=True)
            (self.work / MARKER).write_text("written by lit_garbage.export; safe to replace\n")
            for fmt in self.formats:
                self._step(fmt, getattr(self, f"export_{fmt}"))
            self._step("metadata", self.write_metadata)
            report = self._step("verify", self.run_verify) if self.config.verify else None
            self._step("move into place", self._commit)
        finally:
            if self.work.exists():
                shutil.rmtree(self.work, ignore_errors=True)
        total = time.perf_counter() - start
        self.timings["total"] = total
        self.log(f"total {total:.1f} s -> {self.out}")
        return ExportResult(self.out, self.formats, dict(self.timings), report)

    def _step(self, name: str, fn: Callable):
        t0 = time.perf_counter()
        self.log(f"[{name}] ...")
        result = fn()
        self.timings[name] = time.perf_counter() - t0
        self.log(f"[{name}] done in {self.timings[name]:.1f} s")
        return result

    def _check_out(self) -> None:
        out = self.out
        if out.exists() and not out.is_dir():
            raise ExportError(f"output {out} exists and is not a folder")
        if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
            raise ExportError(f"output folder {out} exists and is not a lit_garbage export; refusing to replace "
                              "it (choose another --out or empty it)")
        self._check_nothing_lost(out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            probe = out.parent / f".{out.name}.write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise ExportError(f"cannot write the export next to {out}: {err.strerror or err} "
                              f"({err.filename or out.parent}); choose a writable --out") from None
        for folder, what in ((out.parent, "--out"), (Path(tempfile.gettempdir()), "the temporary folder (TMPDIR)")):
            problem = low_space(folder, EXPORT_SPACE, what)
            if problem:  # the converters fail late and obscurely on a full disk
                raise ExportError(problem)
        # Partial folders of exports that died (kill -9, power loss): their process no longer exists.
        for stale in out.parent.glob(f".{out.name}.partial-*"):
            pid = stale.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)

    def _check_nothing_lost(self, out: Path) -> None:
        """Replacing `out` must lose nothing the export did not write: not its own input, not the user's files,
        not the folder the command runs in."""
        real = out.resolve()
        inputs = [("the checkpoint", self.ckpt), ("--data.manifest", self.manifest), ("--data.root", self.data_root)]
        for what, path in inputs:
            if path is not None and _within(Path(path).resolve(), real):
                raise ExportError(f"{what} {path} lies inside the output folder {out}, which an export replaces "
                                  "whole; choose another --out (e.g. the default RUN/export)")
        if _within(Path.cwd().resolve(), real):
            raise ExportError(f"the output folder {out} holds the current folder, which an export replaces whole; "
                              f"run from outside it (cd {out.parent}) or choose another --out")
        if out.is_dir():
            foreign = sorted(p.name for p in out.iterdir() if p.name not in EXPORT_NAMES)
            if foreign:
                shown_names = ", ".join(foreign[:10]) + (f" and {len(foreign) - 10} more" if len(foreign) > 10 else "")
                raise ExportError(f"the output folder {out} holds files an export did not write ({shown_names}); "
                                  "a re-export would delete them: move them out or choose another --out")

    def _commit(self) -> None:
        old = None
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.out, old)
        os.replace(self.work, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    # ------------------------------------------------------------ steps

    @property
    def weights_on_int8_grid(self) -> bool:
        """Whether the checkpoint's weights are exactly representable in int8 (an `int8-finetune` checkpoint):
        otherwise int8 and int16x8 round them, which is what loses their answers on real models."""
        from lit_garbage.int8.grid import max_grid_error

        return max_grid_error(self.module.net) < 1e-3

    def load(self) -> None:
        self.module, self.checkpoint = load_classifier(self.ckpt)
        hp = self.module.hparams
        try:  # the checks every model file's facts get: what goes into labels.txt must be what the model outputs
            self.class_names, self.image_size = check_facts(list(hp.class_names), hp.image_size,
                                                            outputs=torch_outputs(self.module),
                                                            source=f"{self.ckpt}: its hyper-parameters")
        except FactsError as err:
            raise ExportError(str(err)) from None
        self.log(f"  {len(self.class_names)} classes, {self.image_size} px, backbone {hp.backbone}")

    @property
    def data(self) -> RunData:
        if self._data is None:
            try:
                self._data = run_data(self.checkpoint, self.ckpt, self.data_root, self.manifest)
            except SampleError as err:
                raise ExportError(str(err)) from None
            for message in self._data.changed:  # never calibrated or verified on
                self.warn(message)
        return self._data

    def _images(self, split: str, count: int, size: int) -> tuple[np.ndarray, list]:
        records = self.data.pick(split, count)
        if not records:
            raise ExportError(f"the {split} split of {self.data.manifest_path} has no images")
        try:
            return self.data.load(records, size), records
        except SampleError as err:
            raise ExportError(str(err)) from None

    def _file(self, key: str) -> Path:
        """Where the format `key` (a `lit_garbage.formats` row) is written in the export being made."""
        return self.work / FORMATS[key].file

    def export_onnx(self) -> None:
        from lit_garbage.export.onnx import export_onnx

        # Its metadata is written with every other file's in the metadata step (one schema).
        export_onnx(self.module.net, self.image_size, self._file("onnx"))

    def export_saved_model(self) -> None:
        from lit_garbage.export.tensorflow import onnx2tf_options, onnx_to_saved_model

        # Extra onnx2tf options some backbones' ops need (none for MobileNetV2), chosen from the graph.
        self.onnx2tf_options = onnx2tf_options(self._file("onnx"))
        if self.onnx2tf_options:
            self.log(f"  onnx2tf options for this graph: {self.onnx2tf_options}")
        # onnx2tf's own check data (normally downloaded): 20 real training images at 128 px, NHWC.
        sample, _ = self._images("train", 20, 128)
        files = onnx_to_saved_model(self._file("onnx"), self._file("saved_model"),
                                    sample.transpose(0, 2, 3, 1), verbose=self.verbose,
                                    options=self.onnx2tf_options)
        for key in ("float32", "float16"):  # onnx2tf writes them inside the SavedModel folder
            target = self._file(f"tflite_{key}")
            if "tflite" in self.formats:
                shutil.move(files[key], target)
            else:
                files[key].unlink()

    def export_tflite(self) -> None:
        """float32 / float16 TFLite come out of the SavedModel conversion; check they are there."""
        for key in ("float32", "float16"):
            if not self._file(f"tflite_{key}").is_file():
                raise ExportError(f"onnx2tf did not write {FORMATS[f'tflite_{key}'].file}")

    def _calibration_nhwc(self) -> np.ndarray:
        """The training images both integer formats are calibrated on (read once), NHWC."""
        if self._calibration is None:
            calib, records = self._images("train", self.int8.calib_images, self.image_size)
            self._calibration = calib.transpose(0, 2, 3, 1)
            # The int8 options under their own names (`--int8.float_convs` -> "float_convs"), beside what was found.
            self.calibration = {"split": "train", "images": len(records), "manifest": self.data.manifest_path.name,
                                **asdict(self.int8)}
        return self._calibration

    def export_int8(self) -> None:
        from lit_garbage.export.tensorflow import quantize_int8

        calib = self._calibration_nhwc()
        int8 = self.int8
        floats = f", first {int8.float_convs} convolutions float" if int8.float_convs else ""
        floats += ", classifier output float" if int8.float_classifier else ""
        self.log(f"  calibrating int8 on {len(calib)} training images ({int8.ranges} ranges{floats})")
        quantize_int8(self._file("saved_model"), self._file("tflite_int8"), calib, ranges=int8.ranges,
                      float_convs=int8.float_convs, float_classifier=int8.float_classifier)

    def export_int16x8(self) -> None:
        from lit_garbage.export.tensorflow import quantize_int16x8

        calib = self._calibration_nhwc()
        self.log(f"  calibrating int16x8 on {len(calib)} training images")
        quantize_int16x8(self._file("saved_model"), self._file("tflite_int16x8"), calib)

    def export_tfjs(self) -> None:
        from lit_garbage.export.tfjs import saved_model_to_tfjs

        saved_model_to_tfjs(self._file("saved_model"), self._file("tfjs").parent, verbose=self.verbose)

    def write_metadata(self) -> None:
        import json

        results = None
        results_file = run_dir_of(self.ckpt) / RESULTS_FILE
        if results_file.is_file():
            results = json.loads(results_file.read_text())
            results = {k: results.get(k) for k in ("epochs", "monitor", "best_score", "val_loss", "val_acc",
                                                    "test_loss", "test_acc") if k in results}
        try:
            manifest_path, dataset_root = self.data.manifest_path, self.data.root
            manifest_sha = sha256_file(manifest_path)
        except ExportError:
            manifest_path = manifest_sha = dataset_root = None
        files = [f for fmt in self.formats for f in FORMAT_FILES[fmt]]
        meta = build_metadata(
            class_names=self.class_names, image_size=self.image_size, normalisation=self.module.normalisation,
            formats=files, checkpoint=self.ckpt, checkpoint_sha256=sha256_file(self.ckpt),
            manifest=manifest_path, manifest_sha256=manifest_sha, training=results,
            calibration=getattr(self, "calibration", None), backbone=self.module.hparams.backbone,
            onnx2tf_options=getattr(self, "onnx2tf_options", None), name=self.config.model_name,
            version=self.config.model_version, dataset_root=dataset_root, export_dir=self.out)
        # The weights without a pickle: safetensors, with what rebuilds the model in its header.
        weights = save_safetensors(self.module, self.work / WEIGHTS_FILE, embedded_facts(meta))
        meta["weights"] = {"file": WEIGHTS_FILE, "format": "safetensors", "sha256": sha256_file(weights),
                           "holds": "the GarbageClassifier's state_dict entries under net.* (float32), and in its "
                                    "header the hyper-parameters that rebuild it"}
        write_metadata(self.work, meta)
        remember_export(meta["checkpoint"]["sha256"], checkpoint=self.ckpt, manifest=manifest_path,
                        dataset_root=dataset_root)
        # Into every model file too, before verification: the files verified are the files shipped.
        from lit_garbage.export.metadata import MetadataError, embed_facts

        try:
            self.embedded = embed_facts(self.work, embedded_facts(meta), files, tflite=self.config.tflite_metadata)
        except MetadataError as err:
            raise ExportError(str(err)) from None
        for e in self.embedded:
            self.log(f"  {e.file}: " + (f"{e.where} +{e.bytes_added:,} bytes" if e.where else "")
                     + (f" ({e.note})" if e.where and e.note else e.note))

    def metadata_notes(self) -> list[str]:
        """verify.md lines on what each model file carries (the files verified are these)."""
        notes = []
        for e in self.embedded:
            if e.where:
                notes.append(f"`{e.file}`: facts in {e.where}" + (f"; {e.note}" if e.note else ""))
            else:
                notes.append(f"**WARNING** `{e.file}`: {e.note}")
        return notes

    def run_verify(self) -> VerifyReport:
        split = "test" if self.data.manifest.split("test") else "val"
        images, records = self._images(split, self.config.verify_images, self.image_size)
        reference = TorchBackend(self.ckpt, module=self.module)  # the module already loaded
        files = [f for fmt in self.formats for f in FORMAT_FILES[fmt]]
        report = verify_export(self.work, reference, images, files,
                               image_source=f"{split} split of {self.data.manifest_path.name}", log=self.log,
                               notes=self.metadata_notes())
        report.write(self.work)
        return report


def _within(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
