"""`scripts/bench.py`: this project against the seed's Keras recipe, side by side, in one run, on the same images.

    python scripts/bench.py                         # the real smoke photos if present, else generated photos
    python scripts/bench.py --data ROOT --out bench.json
    python scripts/bench.py --quick                 # tiny generated data, a few steps: a CI smoke test

Four comparisons, each measured in the same run on the same images (the train split of one manifest):

- input pipeline: images/s of this project's train DataLoader (`GarbageDataModule`, seed augmentations)
  against the seed's `ImageDataGenerator(...).flow_from_directory` fed through Keras's own `OrderedEnqueuer`
  (what `fit(workers=...)` uses), batch 32, the same number of worker processes, no model;
- training: images/s over a fixed number of optimisation steps after a warm-up, Lightning (timm MobileNetV2
  + the seed head, `configs/seed.yaml` with weights=None) against the Keras build of `references.keras_recipe`
  (weights=None, last 30 layers trainable), each fed by its own pipeline, plus each side's peak resident memory;
- inference: single-image latency (median over >= 50 runs after warm-up, backends interleaved) of torch eager,
  onnxruntime, TFLite float32 / float16 / int8 (LiteRT) and TFJS in Node from this project's export, against a
  TFLite file converted natively by Keras (`TFLiteConverter.from_keras_model`, the seed's path) run by the
  same interpreter with the same threads;
- export: wall time of export-all (ONNX, SavedModel, TFLite x3, TFJS) with verification.

Every side runs in its own subprocess (clean resident-memory figures, no state shared between frameworks),
one at a time, with the same intra-op thread count for torch, TensorFlow, onnxruntime and LiteRT and
`OMP_WAIT_POLICY=PASSIVE`. Ratios are ours / Keras; absolute numbers depend on the machine and its load and
are printed, never asserted. Results go to a table on stdout and to `bench.json`.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from itertools import chain, repeat
from pathlib import Path
from typing import Any, Self

from lit_garbage.data.images import DEFAULT_IMAGE_SIZE
from lit_garbage.formats import FORMATS
from lit_garbage.runs import MANIFEST_FILE

REPO = Path(__file__).resolve().parents[1]
SEED_CONFIG = REPO / "configs" / "seed.yaml"
SCHEMA_VERSION = 1
PHASE_TIMEOUT_S = 1200

# The issue's targets (ours / Keras unless stated); reported as met or not, never asserted.
TARGETS = {
    "pipeline": (">=", 3.0),
    "training": (">=", 1.5),
    "tflite_float32": ("<=", 1.05),
    "int8_vs_our_fp32": ("<=", 0.6),
    "int8_top1_agreement": (">=", 0.98),
}
# Inference backends of this project's export, in table order: format (a `lit_garbage.formats` row) -> label.
OURS = {
    "torch": "torch eager",
    "onnx": "onnxruntime",
    "tflite_float32": "TFLite float32 (onnx2tf)",
    "tflite_float16": "TFLite float16 (onnx2tf)",
    "tflite_int8": "TFLite int8",
    "tfjs": "TFJS in Node (wasm)",
}
KERAS_TFLITE = "keras_float32.tflite"
KERAS_MAX_QUEUE_SIZE = 10  # Keras `fit(max_queue_size=10)` default: batches its workers prepare ahead


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""

    image_size: int
    pipeline_warmup: int  # batches
    pipeline_batches: int
    train_warmup: int  # optimisation steps
    train_steps: int
    latency_warmup: int  # runs per backend
    latency_runs: int  # timed single-image runs per backend (>= 50)
    synthetic_per_class: int  # generated data when no --data is given and no real photos exist
    synthetic_px: int


FULL = Sizes(image_size=DEFAULT_IMAGE_SIZE, pipeline_warmup=2, pipeline_batches=12, train_warmup=3, train_steps=10,
             latency_warmup=10, latency_runs=200, synthetic_per_class=20, synthetic_px=384)
QUICK = Sizes(image_size=64, pipeline_warmup=1, pipeline_batches=3, train_warmup=1, train_steps=2,
              latency_warmup=3, latency_runs=50, synthetic_per_class=12, synthetic_px=96)


class BenchError(RuntimeError):
    """A measurement could not be made; the message says which and why."""


# ====================================================================== helpers used inside the phases


class PeakMemory:
    """Peak resident memory of this process (`ru_maxrss`, exact) and of its whole process tree, data workers
    included (sum of proportional set sizes, PSS, so pages that forked workers share count once; sampled
    every 2 s: reading PSS walks the page tables, ~40 ms of CPU for a 2 GB process, and at 0.5 s intervals the
    sampler took ~20 % of a core inside the process being timed, which on 2 CPUs stalls torch's OpenMP steps)."""

    def __init__(self, interval: float = 2.0) -> None:
        self.interval = interval
        self.peak_tree = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            try:
                total = me.memory_full_info().pss
                for child in me.children(recursive=True):
                    try:
                        total += child.memory_full_info().pss
                    except psutil.Error:  # a worker that just exited
                        pass
            except psutil.Error:
                pass
            self.peak_tree = max(self.peak_tree, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_main = _ru_maxrss_bytes()

    def result(self) -> dict[str, float]:
        return {"peak_rss_mb": self.peak_main / 2**20, "peak_tree_pss_mb": self.peak_tree / 2**20}


def _ru_maxrss_bytes() -> int:
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB


def throughput(stamps: list[float], sizes: list[int], warmup: int) -> dict[str, float]:
    """images/s from per-step end times, skipping `warmup` steps: the clock starts when warm-up step ends."""
    if len(stamps) <= warmup or len(stamps) != len(sizes):
        raise BenchError(f"{len(stamps)} steps recorded, need more than the {warmup} warm-up steps")
    start = stamps[warmup - 1] if warmup > 0 else None
    if start is None:
        raise BenchError("throughput needs at least one warm-up step to start the clock")
    seconds = stamps[-1] - start
    images = sum(sizes[warmup:])
    steps_ms = [1000 * (b - a) for a, b in zip(stamps[warmup - 1:-1], stamps[warmup:])]
    return {"images_per_s": images / seconds, "images": images, "steps": len(stamps) - warmup,
            "seconds": seconds, "step_ms_median": statistics.median(steps_ms)}


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) used so far by this process and by its live child processes (data workers)."""
    import psutil

    me = psutil.Process()
    own = sum(me.cpu_times()[:2])
    children = 0.0
    for child in me.children(recursive=True):
        try:
            children += sum(child.cpu_times()[:2])
        except psutil.Error:  # a worker that just exited
            pass
    return own, children


def cpu_per_image(cpu: list[tuple[float, float]], sizes: list[int], warmup: int) -> dict[str, float]:
    """CPU milliseconds per image after warm-up, main process and workers: the work done, which (unlike images/s)
    hardly depends on how busy a shared machine is."""
    images = sum(sizes[warmup:])
    main = cpu[-1][0] - cpu[warmup - 1][0]
    workers = cpu[-1][1] - cpu[warmup - 1][1]
    return {"cpu_ms_per_image": 1000 * (main + workers) / images, "cpu_ms_per_image_main": 1000 * main / images,
            "cpu_ms_per_image_workers": 1000 * workers / images}


def _time_batches(batches: Iterator, warmup: int, count: int, size: Callable[[Any], int]) -> dict[str, float]:
    stamps, sizes = [time.perf_counter()], [0]  # a zero-image "step 0": the clock starts after warm-up
    for _ in range(warmup):
        next(batches)
    stamps[0] = time.perf_counter()
    for _ in range(count):
        sizes.append(size(next(batches)))
        stamps.append(time.perf_counter())
    result = throughput(stamps, sizes, 1)
    result["batches"] = result.pop("steps")
    result["batch_ms_median"] = result.pop("step_ms_median")
    return result


def _set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _set_tf_threads(threads: int) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _datamodule(spec: dict, cache: str | None = None):
    from lit_garbage.data.datamodule import GarbageDataModule
    from lit_garbage.data.transforms import Augment

    return GarbageDataModule(spec["root"], manifest=spec["manifest"], image_size=spec["image_size"],
                             batch_size=spec["batch_size"], num_workers=spec["workers"],
                             augment=Augment(**spec["augment"]), cache=cache or spec.get("cache", "auto"))


def _prepare_cache(dm) -> dict:
    """Build the decoded-image cache outside the clock (Lightning's `fit` does the same in `prepare_data`)."""
    start = time.perf_counter()
    dm.prepare_data()
    return {"cache": dm.image_cache is not None, "cache_prepare_s": time.perf_counter() - start}


def _keras_flow(spec: dict, shuffle: bool = True):
    from lit_garbage.data.transforms import Augment
    from references.keras_recipe import flow_from_directory

    return flow_from_directory(spec["keras_train_dir"], image_size=spec["image_size"], batch_size=spec["batch_size"],
                               augment=Augment(**spec["augment"]), classes=spec["class_names"], shuffle=shuffle,
                               seed=spec["seed"])


# ====================================================================== phases (each in its own subprocess)


def phase_pipeline_ours(spec: dict, cache: str | None = None) -> dict:
    _set_torch_threads(spec["threads"])
    dm = _datamodule(spec, cache)
    prepared = _prepare_cache(dm)
    loader = dm.train_dataloader()
    # Batches the workers prepared ahead during warm-up come out at once: skip them too, so the clock sees
    # the steady state (for both pipelines alike).
    ahead = loader.num_workers * (loader.prefetch_factor or 0) if loader.num_workers else 0
    result = _time_batches(chain.from_iterable(repeat(loader)), spec["pipeline_warmup"] + ahead, spec["pipeline_batches"],
                           lambda b: len(b[1]))
    return {**result, **prepared, "skipped_prefetched_batches": ahead}


def phase_pipeline_ours_uncached(spec: dict) -> dict:
    """The same DataLoader decoding every file every time (`data.cache: none`), for comparison."""
    return phase_pipeline_ours(spec, cache="none")


def phase_pipeline_keras(spec: dict) -> dict:
    from tf_keras.utils import OrderedEnqueuer

    _set_tf_threads(spec["threads"])
    flow = _keras_flow(spec)
    enqueuer = OrderedEnqueuer(flow, use_multiprocessing=spec["keras_multiprocessing"], shuffle=False)
    ahead = KERAS_MAX_QUEUE_SIZE
    enqueuer.start(workers=spec["workers"], max_queue_size=ahead)
    try:
        result = _time_batches(enqueuer.get(), spec["pipeline_warmup"] + ahead, spec["pipeline_batches"],
                               lambda b: len(b[0]))
    finally:
        enqueuer.stop()
    return {**result, "skipped_prefetched_batches": ahead}


def phase_train_ours(spec: dict) -> dict:
    import lightning.pytorch as pl

    from lit_garbage.models.network import trainable_parameter_count
    from lit_garbage.training.callbacks import FreezeBackbone
    from lit_garbage.training.module import GarbageClassifier

    _set_torch_threads(spec["threads"])
    pl.seed_everything(spec["seed"], verbose=False)
    stamps: list[float] = []
    sizes: list[int] = []
    cpu: list[tuple[float, float]] = []

    class StepTimer(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            stamps.append(time.perf_counter())
            sizes.append(len(batch[1]))
            cpu.append(cpu_seconds())

    dm = _datamodule(spec)
    # Speed switches of the model (e.g. channels_last) are passed only where this version of the module has them.
    accepted = inspect.signature(GarbageClassifier).parameters
    model = GarbageClassifier(class_names=dm.class_names, image_size=spec["image_size"],
                              class_weights=dm.class_weights,
                              **{k: v for k, v in spec["model"].items() if k in accepted})
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=spec["train_warmup"] + spec["train_steps"],
                         limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=spec["workdir"],
                         callbacks=[FreezeBackbone(spec["torch_trainable_layers"]), StepTimer()])
    with PeakMemory() as mem:
        trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(spec["ckpt"])
    return {**throughput(stamps, sizes, spec["train_warmup"]), **cpu_per_image(cpu, sizes, spec["train_warmup"]),
            **mem.result(), "trainable_params": trainable_parameter_count(model),
            "channels_last": bool(model.hparams.get("channels_last", False)), "compile": bool(model.hparams.get("compile")),
            "cache": dm.image_cache is not None}


def phase_train_keras(spec: dict) -> dict:
    from tf_keras.callbacks import Callback

    from references.keras_recipe import (
        build_seed_model,
        class_weight_dict,
        convert_to_tflite,
        keras,
    )

    _set_tf_threads(spec["threads"])
    keras().utils.set_random_seed(spec["seed"])
    total = spec["train_warmup"] + spec["train_steps"]
    flow = _keras_flow(spec)
    stamps: list[float] = []
    sizes: list[int] = []
    cpu: list[tuple[float, float]] = []

    class StepTimer(Callback):
        def on_train_batch_end(self, batch, logs=None):  # logs arrive as numpy: the step has finished
            stamps.append(time.perf_counter())
            sizes.append(min(flow.batch_size, flow.n - batch * flow.batch_size))
            cpu.append(cpu_seconds())
            if len(stamps) >= total:
                self.model.stop_training = True

    seed = build_seed_model(len(spec["class_names"]), spec["image_size"], weights=None,
                            trainable_layers=spec["keras_trainable_layers"])
    with PeakMemory() as mem:
        seed.model.fit(flow, steps_per_epoch=len(flow), epochs=math.ceil(total / len(flow)) + 1,
                       class_weight=class_weight_dict(spec["class_weights"]), workers=spec["workers"],
                       use_multiprocessing=spec["keras_multiprocessing"], verbose=0, callbacks=[StepTimer()])
    result = {**throughput(stamps[:total], sizes[:total], spec["train_warmup"]),
              **cpu_per_image(cpu[:total], sizes[:total], spec["train_warmup"]), **mem.result(),
              "trainable_params": int(sum(math.prod(w.shape) for w in seed.model.trainable_weights))}
    start = time.perf_counter()
    Path(spec["keras_tflite"]).write_bytes(convert_to_tflite(seed.model))
    result["tflite_convert_s"] = time.perf_counter() - start
    return result


def phase_export(spec: dict) -> dict:
    from lit_garbage.export.config import ExportConfig
    from lit_garbage.export.exporter import Exporter

    log: list[str] = []
    result = Exporter(ExportConfig(model=spec["ckpt"], out=spec["export_dir"]), log=log.append).run()
    report = result.report
    return {"seconds": result.timings["total"], "steps_s": {k: v for k, v in result.timings.items() if k != "total"},
            "formats": result.formats, "verify_passed": bool(result.passed),
            "verdict": report.verdict() if report else "skipped",
            "verify": {r.name: {"status": r.status, "max_abs_diff": r.max_abs_diff,
                                "top1_agreement": r.top1_agreement} for r in report.results} if report else {}}


def _latency_images(spec: dict, count: int):
    """Up to `count` distinct images of the manifest (test split first) through the one preprocessing contract."""
    import numpy as np

    from lit_garbage.data.images import load_rgb
    from lit_garbage.data.manifest import Manifest
    from lit_garbage.data.transforms import eval_transform

    manifest = Manifest.read(spec["manifest"])
    records = (manifest.split("test") + manifest.split("val") + manifest.split("train"))[:count]
    tf = eval_transform(spec["image_size"])
    return np.stack([tf(load_rgb(Path(spec["root"]) / r.path)).numpy() for r in records])


def phase_inference(spec: dict) -> dict:
    import numpy as np

    from lit_garbage.inference.backends import BackendUnavailableError, load_backend

    threads, runs, warmup = spec["threads"], spec["latency_runs"], spec["latency_warmup"]
    export = Path(spec["export_dir"])
    images = _latency_images(spec, 32)
    paths = {name: (Path(spec["ckpt"]) if name == "torch" else export / FORMATS[name].file) for name in OURS}
    paths["keras_tflite_float32"] = Path(spec["keras_tflite"])
    backends = {name: load_backend(path, threads=threads) for name, path in paths.items() if name != "tfjs"}
    for backend in backends.values():
        for i in range(warmup):
            backend.predict(images[i % len(images)][None])
    # Interleaved rounds: every backend sees the same share of any slow-down on a shared machine. The order
    # rotates every round, so no backend always runs right after the same other one (onnxruntime's intra-op
    # threads, for one, keep spinning for a while after each run).
    times: dict[str, list[float]] = {name: [] for name in backends}
    chunk = 5
    names = list(backends)
    for r in range(math.ceil(runs / chunk)):
        for name in names[r % len(names):] + names[:r % len(names)]:
            backend = backends[name]
            for i in range(r * chunk, min(runs, (r + 1) * chunk)):
                x = images[i % len(images)][None]
                start = time.perf_counter()
                backend.predict(x)
                times[name].append(1000 * (time.perf_counter() - start))
    out: dict[str, dict] = {}
    for name, ms in times.items():
        out[name] = {"median_ms": statistics.median(ms), "mean_ms": statistics.fmean(ms),
                     "p10_ms": float(np.percentile(ms, 10)), "p90_ms": float(np.percentile(ms, 90)),
                     "runs": len(ms), "statistic": "median", "file_mb": _size_mb(paths[name])}
    try:  # TFJS is timed inside Node (batch 1 per image, after warm-up); its runner reports the mean
        tfjs = load_backend(paths["tfjs"], threads=threads)
        batch = images[np.arange(runs) % len(images)]
        _, mean_ms = tfjs.timed_predict(batch, warmup=warmup)
        out["tfjs"] = {"median_ms": mean_ms, "mean_ms": mean_ms, "runs": runs, "statistic": "mean",
                       "file_mb": _size_mb(paths["tfjs"])}
    except BackendUnavailableError as err:
        out["tfjs"] = {"skipped": str(err)}
    except Exception as err:  # noqa: BLE001  the TFJS file fails to run: report it, keep the other numbers
        out["tfjs"] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
    probs = {name: backends[name].predict(images) for name in ("torch", "tflite_float32", "tflite_int8")}
    agreement = {
        "images": len(images),
        "int8_vs_fp32_top1": float((probs["tflite_int8"].argmax(1) == probs["tflite_float32"].argmax(1)).mean()),
        "int8_vs_torch_top1": float((probs["tflite_int8"].argmax(1) == probs["torch"].argmax(1)).mean()),
        "fp32_vs_torch_max_abs_diff": float(np.abs(probs["tflite_float32"] - probs["torch"]).max()),
    }
    return {"backends": out, "agreement": agreement, "threads": threads}


def phase_tflite_pair(spec: dict) -> dict:
    """Our onnx2tf float32 TFLite against the Keras-native one, and nothing else in the process: alternating
    single runs (ABAB..., the order swapped every round) on the same interpreter settings. In the all-backend
    phase other runtimes' worker threads (onnxruntime's spin after each run) and allocations share the cores,
    which skewed this one ratio by up to 1.9x between two runs of the same files."""
    import numpy as np

    from lit_garbage.inference.backends import load_backend

    threads, runs, warmup = spec["threads"], spec["latency_runs"], spec["latency_warmup"]
    images = _latency_images(spec, 32)
    backends = {"ours": load_backend(Path(spec["export_dir"]) / FORMATS["tflite_float32"].file, threads=threads),
                "keras": load_backend(Path(spec["keras_tflite"]), threads=threads)}
    for backend in backends.values():
        for i in range(warmup):
            backend.predict(images[i % len(images)][None])
    times: dict[str, list[float]] = {name: [] for name in backends}
    for i in range(runs):
        x = images[i % len(images)][None]
        for name in (("ours", "keras") if i % 2 == 0 else ("keras", "ours")):
            start = time.perf_counter()
            backends[name].predict(x)
            times[name].append(1000 * (time.perf_counter() - start))
    out = {name: {"median_ms": statistics.median(ms), "p10_ms": float(np.percentile(ms, 10)), "runs": len(ms)}
           for name, ms in times.items()}
    return {**out, "ratio": _ratio(out["ours"]["median_ms"], out["keras"]["median_ms"]),
            "p10_ratio": _ratio(out["ours"]["p10_ms"], out["keras"]["p10_ms"]), "threads": threads}


def _size_mb(path: Path) -> float:
    """A model file's size (a folder's files together; TFJS's model.json with its weight shards), in MiB."""
    from lit_garbage.evaluation.parity import size_bytes

    return size_bytes(path) / 2**20


PHASES: dict[str, Callable[[dict], dict]] = {
    "pipeline_ours": phase_pipeline_ours, "pipeline_ours_uncached": phase_pipeline_ours_uncached,
    "pipeline_keras": phase_pipeline_keras,
    "train_ours": phase_train_ours, "train_keras": phase_train_keras,
    "train_ours_compiled": lambda spec: phase_train_ours(
        {**spec, "model": {**spec["model"], "compile": True}, "ckpt": str(Path(spec["workdir"]) / "ours_compiled.ckpt")}),
    "export": phase_export, "inference": phase_inference, "tflite_pair": phase_tflite_pair,
}


def phase_main(name: str, spec_path: str, result_path: str) -> int:
    """Entry point of a phase subprocess: run one phase, write its result JSON."""
    spec = json.loads(Path(spec_path).read_text())
    result = PHASES[name](spec)
    Path(result_path).write_text(json.dumps(result, indent=2))
    return 0


# ====================================================================== orchestration


def default_data() -> Path | None:
    from references.experiments import real_data

    return real_data("smoke")


def seed_config() -> dict:
    import yaml

    return yaml.safe_load(SEED_CONFIG.read_text())


class Bench:
    def __init__(self, data: Path | None, out: Path, sizes: Sizes, workdir: Path, threads: int, workers: int,
                 repeats: int, keras_multiprocessing: bool, console, quick: bool) -> None:
        self.sizes, self.workdir, self.out, self.console = sizes, workdir, out, console
        self.threads, self.workers, self.repeats, self.quick = threads, workers, repeats, quick
        self.keras_multiprocessing = keras_multiprocessing
        self.data_arg = data
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.phase_wall_s: dict[str, list[float]] = {}

    # ------------------------------------------------------------ data

    def prepare_data(self) -> dict:
        from lit_garbage.data.manifest import build_manifest

        generated = False
        root = self.data_arg if self.data_arg is not None else (None if self.quick else default_data())
        if root is None:
            from lit_garbage.data.synthetic import generate

            root = generate(self.workdir / "data", per_class=self.sizes.synthetic_per_class,
                            size=self.sizes.synthetic_px, seed=0)
            generated = True
        root = Path(root).resolve()
        cfg = seed_config()
        d = cfg["data"]
        manifest = build_manifest(root, tuple(d["split"]), d["split_seed"])
        manifest_path = self.workdir / MANIFEST_FILE
        manifest.write(manifest_path)
        train = manifest.split("train")
        # The Keras side reads the very same files: the train split as a folder of class folders (links).
        keras_dir = self.workdir / "keras_train"
        for name in manifest.class_names:
            (keras_dir / name).mkdir(parents=True, exist_ok=True)
        for r in train:
            link = keras_dir / r.label / r.path.replace("/", "__")
            link.unlink(missing_ok=True)  # a reused --workdir
            try:
                link.symlink_to(root / r.path)
            except OSError:
                shutil.copy2(root / r.path, link)
        model = {k: v for k, v in cfg["model"].items() if k not in ("pretrained", "weights")}
        self.spec = {
            "root": str(root), "manifest": str(manifest_path), "keras_train_dir": str(keras_dir),
            "class_names": list(manifest.class_names), "class_weights": manifest.class_weights(),
            "image_size": self.sizes.image_size, "batch_size": d["batch_size"], "workers": self.workers,
            "threads": self.threads, "keras_multiprocessing": self.keras_multiprocessing, "seed": cfg["seed_everything"],
            "augment": {**d["augment"], "brightness": list(d["augment"]["brightness"])},
            # The seed's network exactly as Keras builds it (TF "same" padding, BatchNorm eps 1e-3, [0, 1] pixels
            # straight in), so both sides train and export the same graph; docs/benchmark.md has timm's padding.
            "model": {**model, "pretrained": False, "weights": None, "channels_last": True, "keras_compat": True,
                      "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
            "cache": "auto",  # decoded-image cache next to the manifest (workdir/image_cache), built outside the clock
            "torch_trainable_layers": cfg["freeze"]["trainable_layers"], "keras_trainable_layers": 30,
            "pipeline_warmup": self.sizes.pipeline_warmup, "pipeline_batches": self.sizes.pipeline_batches,
            "train_warmup": self.sizes.train_warmup, "train_steps": self.sizes.train_steps,
            "latency_warmup": self.sizes.latency_warmup, "latency_runs": self.sizes.latency_runs,
            "workdir": str(self.workdir), "ckpt": str(self.workdir / "ours.ckpt"),
            "export_dir": str(self.workdir / "export"), "keras_tflite": str(self.workdir / "keras" / KERAS_TFLITE),
        }
        (self.workdir / "keras").mkdir(exist_ok=True)
        self.spec_path = self.workdir / "spec.json"
        self.spec_path.write_text(json.dumps(self.spec, indent=2))
        return {"root": str(root), "generated": generated, "images": len(manifest.records), "train_images": len(train),
                "classes": len(manifest.class_names)}

    # ------------------------------------------------------------ phases

    def phase(self, name: str, label: str) -> dict:
        result_path = self.workdir / f"{name}.json"
        result_path.unlink(missing_ok=True)
        log_path = self.logs / f"{name}.log"
        env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
                   OMP_NUM_THREADS=str(self.threads), TF_CPP_MIN_LOG_LEVEL="2",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        cmd = [sys.executable, "-m", "references.bench", "_phase", name, str(self.spec_path), str(result_path)]
        self.console.print(f"  {label} ...", end="")
        start = time.perf_counter()
        with log_path.open("w") as log:
            try:
                proc = subprocess.run(cmd, check=False, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
                                      timeout=PHASE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise BenchError(f"{label}: no result after {PHASE_TIMEOUT_S} s (log: {log_path})") from None
        wall = time.perf_counter() - start
        self.phase_wall_s.setdefault(name, []).append(wall)
        if proc.returncode != 0 or not result_path.is_file():
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
            self.console.print(" [red]failed[/red]")
            raise BenchError(f"{label} failed (exit {proc.returncode}); last lines of {log_path}:\n{tail}")
        result = json.loads(result_path.read_text())
        self.console.print(f" {wall:.0f} s")
        return result

    def side_by_side(self, names: tuple[str, str], labels: tuple[str, str]) -> list[tuple[dict, dict]]:
        """`repeats` A/B pairs, alternating which side goes first (so drift on a shared machine hits both)."""
        pairs = []
        for rep in range(self.repeats):
            order = (0, 1) if rep % 2 == 0 else (1, 0)
            got = {i: self.phase(names[i], labels[i]) for i in order}
            pairs.append((got[0], got[1]))
        return pairs

    def run(self) -> dict:
        started = datetime.now(UTC)
        load_start = _loadavg()
        self.console.print(f"[bold]lit_garbage bench[/bold] ({'quick' if self.quick else 'full'}): "
                           f"{self.threads} threads, {self.workers} workers, workdir {self.workdir}")
        data = self.prepare_data()
        self.console.print(f"  data: {data['root']} ({data['images']} images, {data['train_images']} in the train split"
                           f"{', generated' if data['generated'] else ''})")
        results: dict[str, Any] = {}
        pipe = self.side_by_side(("pipeline_ours", "pipeline_keras"),
                                 ("input pipeline, ours (DataLoader)", "input pipeline, Keras (ImageDataGenerator)"))
        results["pipeline"] = _pair_summary(pipe, "images_per_s", higher_is_better=True)
        uncached = [self.phase("pipeline_ours_uncached", "input pipeline, ours without the image cache")
                    for _ in range(self.repeats)]
        results["pipeline"]["ours_uncached"] = _pick(uncached, "images_per_s")
        results["pipeline"]["ratio_uncached"] = _ratio(results["pipeline"]["ours_uncached"]["images_per_s"],
                                                       results["pipeline"]["keras"]["images_per_s"])
        train = self.side_by_side(("train_ours", "train_keras"),
                                  ("training, ours (Lightning/timm)", "training, Keras recipe"))
        results["training"] = _pair_summary(train, "images_per_s", higher_is_better=True)
        results["training"]["memory_ratio"] = _ratio(results["training"]["ours"]["peak_rss_mb"],
                                                     results["training"]["keras"]["peak_rss_mb"])
        results["training"]["tree_memory_ratio"] = _ratio(results["training"]["ours"]["peak_tree_pss_mb"],
                                                          results["training"]["keras"]["peak_tree_pss_mb"])
        # Work per image (lower is better): a ratio that a busy shared machine distorts far less than images/s.
        results["training"]["cpu_ratio"] = _ratio(results["training"]["ours"]["cpu_ms_per_image"],
                                                  results["training"]["keras"]["cpu_ms_per_image"])
        if not self.quick:  # torch.compile's first step takes minutes on a small CPU: not a smoke-test item
            compiled = self.phase("train_ours_compiled", "training, ours with model.compile")
            results["training"]["ours_compiled"] = compiled
            results["training"]["ratio_compiled"] = _ratio(compiled["images_per_s"],
                                                           results["training"]["keras"]["images_per_s"])
            results["training"]["cpu_ratio_compiled"] = _ratio(compiled["cpu_ms_per_image"],
                                                               results["training"]["keras"]["cpu_ms_per_image"])
        export = self.phase("export", "export-all with verification (ours)")
        export["wall_s"] = self.phase_wall_s["export"][-1]
        export["keras_tflite_convert_s"] = train[-1][1]["tflite_convert_s"]
        results["export"] = export
        results["inference"] = _inference_summary(self.phase("inference", "inference latency (all backends)"))
        results["inference"]["tflite_pair"] = self.phase("tflite_pair", "TFLite float32, ours vs Keras, head to head")
        results["targets"] = _targets(results)
        return {
            "schema_version": SCHEMA_VERSION, "tool": "references.bench", "quick": self.quick,
            "started": started.isoformat(timespec="seconds"),
            "duration_s": (datetime.now(UTC) - started).total_seconds(),
            "data": data, "settings": {**asdict(self.sizes), "batch_size": self.spec["batch_size"],
                                       "threads": self.threads, "workers": self.workers, "repeats": self.repeats,
                                       "keras_multiprocessing": self.keras_multiprocessing,
                                       "torch_trainable_layers": self.spec["torch_trainable_layers"],
                                       "keras_trainable_layers": self.spec["keras_trainable_layers"],
                                       "augment": self.spec["augment"], "cache": self.spec["cache"],
                                       "model": self.spec["model"]},
            "machine": _machine(load_start), **results, "phase_wall_s": self.phase_wall_s,
        }


def _ratio(ours: float, keras: float) -> float:
    return ours / keras if keras else float("nan")


def _pick(runs: list[dict], key: str) -> dict:
    """The median run by `key` (all its fields), with every run's value of `key`."""
    ranked = sorted(runs, key=lambda r: r[key])
    return {**ranked[(len(ranked) - 1) // 2], "all_" + key: [r[key] for r in runs]}


def _pair_summary(pairs: list[tuple[dict, dict]], key: str, higher_is_better: bool) -> dict:
    """Median over repeats of each side (all fields of the median run), and the ratio ours / Keras."""
    ours, keras = _pick([p[0] for p in pairs], key), _pick([p[1] for p in pairs], key)
    return {"ours": ours, "keras": keras, "ratio": _ratio(ours[key], keras[key]), "metric": key,
            "higher_is_better": higher_is_better}


def _inference_summary(raw: dict) -> dict:
    backends = raw["backends"]
    keras = backends.pop("keras_tflite_float32")
    ratios = {name: _ratio(b["median_ms"], keras["median_ms"]) for name, b in backends.items() if "median_ms" in b}
    # The 10th percentile: the latency without most of the interference of other work on a shared machine.
    p10_ratios = {name: _ratio(b["p10_ms"], keras["p10_ms"]) for name, b in backends.items() if "p10_ms" in b}
    fp32 = backends["tflite_float32"]["median_ms"]
    return {"keras_tflite_float32": keras, "ours": backends, "ratio_vs_keras": ratios, "p10_ratio_vs_keras": p10_ratios,
            "int8_vs_our_fp32": _ratio(backends["tflite_int8"]["median_ms"], fp32),
            "agreement": raw["agreement"], "threads": raw["threads"]}


def _targets(r: dict) -> list[dict]:
    values = {
        "pipeline": r["pipeline"]["ratio"],
        "training": r["training"]["ratio"],
        "tflite_float32": r["inference"]["tflite_pair"]["ratio"],
        "int8_vs_our_fp32": r["inference"]["int8_vs_our_fp32"],
        "int8_top1_agreement": r["inference"]["agreement"]["int8_vs_fp32_top1"],
    }
    out = []
    for name, (op, goal) in TARGETS.items():
        v = values[name]
        shown = f"{op} {100 * goal:g} %" if name == "int8_top1_agreement" else f"{op} {goal:g}"
        out.append({"name": name, "value": v, "target": shown,
                    "met": bool(v >= goal if op == ">=" else v <= goal)})
    return out


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _machine(load_start) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in ("torch", "lightning", "timm", "tensorflow", "tf-keras", "onnxruntime", "ai-edge-litert", "onnx2tf"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(), "loadavg_start": load_start,
            "loadavg_end": _loadavg(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "versions": versions}


# ====================================================================== report


def render_table(result: dict):
    from rich import box
    from rich.table import Table

    def num(v, spec=".1f", unit=""):
        return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:{spec}}{unit}"

    targets = {t["name"]: t for t in result["targets"]}

    def target(name):
        t = targets.get(name)
        return ("", "") if t is None else (t["target"], "[green]yes[/green]" if t["met"] else "[red]no[/red]")

    s = result["settings"]
    table = Table(title=f"lit_garbage vs the seed's Keras recipe ({'quick' if result['quick'] else 'full'}, "
                        f"{s['image_size']} px, batch {s['batch_size']}, {s['threads']} threads, "
                        f"{s['workers']} workers)", box=box.SIMPLE_HEAVY)
    for col, justify in (("measure", "left"), ("ours", "right"), ("Keras (seed)", "right"),
                         ("ours / Keras", "right"), ("target", "right"), ("met", "center"),
                         ("latency p10: ours / Keras", "right")):
        table.add_column(col, justify=justify)
    p, t = result["pipeline"], result["training"]
    table.add_row("input pipeline (images/s)", num(p["ours"]["images_per_s"]), num(p["keras"]["images_per_s"]),
                  num(p["ratio"], ".2f", "x"), *target("pipeline"))
    if "ours_uncached" in p:
        table.add_row("input pipeline, ours without image cache (images/s)", num(p["ours_uncached"]["images_per_s"]),
                      num(p["keras"]["images_per_s"]), num(p["ratio_uncached"], ".2f", "x"), "", "")
    table.add_row("training (images/s)", num(t["ours"]["images_per_s"]), num(t["keras"]["images_per_s"]),
                  num(t["ratio"], ".2f", "x"), *target("training"))
    table.add_row("training step (ms, median)", num(t["ours"]["step_ms_median"], ".0f"),
                  num(t["keras"]["step_ms_median"], ".0f"), num(_ratio(t["ours"]["step_ms_median"],
                                                                      t["keras"]["step_ms_median"]), ".2f", "x"), "", "")
    if "ours_compiled" in t:
        table.add_row("training, ours with model.compile (images/s)", num(t["ours_compiled"]["images_per_s"]),
                      num(t["keras"]["images_per_s"]), num(t["ratio_compiled"], ".2f", "x"), "", "")
        table.add_row("training CPU time per image, ours with model.compile (ms)",
                      num(t["ours_compiled"]["cpu_ms_per_image"], ".0f"), num(t["keras"]["cpu_ms_per_image"], ".0f"),
                      num(t["cpu_ratio_compiled"], ".2f", "x"), "", "")
    if "cpu_ratio" in t:
        table.add_row("training CPU time per image, all processes (ms)", num(t["ours"]["cpu_ms_per_image"], ".0f"),
                      num(t["keras"]["cpu_ms_per_image"], ".0f"), num(t["cpu_ratio"], ".2f", "x"), "", "")
    table.add_row("training peak RSS, main process (MB)", num(t["ours"]["peak_rss_mb"], ".0f"),
                  num(t["keras"]["peak_rss_mb"], ".0f"), num(t["memory_ratio"], ".2f", "x"), "", "")
    table.add_row("training peak memory with workers (PSS, MB)", num(t["ours"]["peak_tree_pss_mb"], ".0f"),
                  num(t["keras"]["peak_tree_pss_mb"], ".0f"), num(t["tree_memory_ratio"], ".2f", "x"), "", "")
    inf = result["inference"]
    keras = inf["keras_tflite_float32"]
    keras_ms = keras["median_ms"]
    table.add_section()
    for name, label in OURS.items():
        b = inf["ours"].get(name, {})
        if "median_ms" not in b:
            table.add_row(f"latency {label} (ms)", "error" if "error" in b else "skipped", num(keras_ms, ".2f"),
                          "-", "", "")
            continue
        stat = "" if b.get("statistic") == "median" else f" ({b['statistic']})"
        p10 = (f"{num(b['p10_ms'], '.2f')} / {num(keras['p10_ms'], '.2f')} = "
               f"{num(inf['p10_ratio_vs_keras'][name], '.2f', 'x')}") if "p10_ms" in b else ""
        table.add_row(f"latency {label}{stat} (ms)", num(b["median_ms"], ".2f"), num(keras_ms, ".2f"),
                      num(inf["ratio_vs_keras"].get(name), ".2f", "x"),
                      "", "", p10)
        if name == "tflite_float32" and "tflite_pair" in inf:
            pair = inf["tflite_pair"]
            table.add_row("latency TFLite float32, ours vs Keras head to head (ms)", num(pair["ours"]["median_ms"], ".2f"),
                          num(pair["keras"]["median_ms"], ".2f"), num(pair["ratio"], ".2f", "x"),
                          *target("tflite_float32"),
                          f"{num(pair['ours']['p10_ms'], '.2f')} / {num(pair['keras']['p10_ms'], '.2f')} = "
                          f"{num(pair['p10_ratio'], '.2f', 'x')}")
    table.add_row("int8 latency / our float32", num(inf["ours"]["tflite_int8"]["median_ms"], ".2f"),
                  num(inf["ours"]["tflite_float32"]["median_ms"], ".2f") + " (ours fp32)",
                  num(inf["int8_vs_our_fp32"], ".2f", "x"), *target("int8_vs_our_fp32"))
    ag = inf["agreement"]
    table.add_row(f"int8 top-1 agreement with float32 ({ag['images']} images)",
                  num(100 * ag["int8_vs_fp32_top1"], ".1f", " %"), "", "", *target("int8_top1_agreement"))
    table.add_section()
    e = result["export"]
    table.add_row("export-all + verify (s)", num(e["seconds"], ".1f"),
                  num(e["keras_tflite_convert_s"], ".1f") + " (TFLite only)", "", "", "")
    return table


def _notes(result: dict) -> list[str]:
    notes = []
    ag = result["inference"]["agreement"]
    if result["settings"]["train_steps"] < 100:
        notes.append(f"int8 agreement ({100 * ag['int8_vs_fp32_top1']:.0f} %) is measured on a model trained "
                     f"{result['settings']['train_warmup'] + result['settings']['train_steps']} steps from scratch: "
                     "near-tie outputs make it meaningless; judge int8 accuracy on a trained model's export "
                     "(verify.md).")
    if not result["export"]["verify_passed"]:
        notes.append(f"export verification: {result['export']['verdict']}")
    tfjs = result["inference"]["ours"].get("tfjs", {})
    if "median_ms" in tfjs:
        notes.append("TFJS latency is the mean per image measured inside Node (its runner reports no median).")
    else:
        notes.append(f"TFJS not measured: {tfjs.get('error') or tfjs.get('skipped')}")
    la, lb = result["machine"]["loadavg_start"], result["machine"]["loadavg_end"]
    if la and lb:
        notes.append(f"load average {la[0]:.2f} at start, {lb[0]:.2f} at end on {result['machine']['cpu_count']} "
                     "CPUs: absolute numbers are noise on a shared machine; compare the ratios.")
    return notes


# ====================================================================== CLI


EPILOG = """examples:
  python -m references.bench                           # real photos in data/real/smoke, else generated
  python scripts/bench.py --data data/garbage --out bench.json --repeats 3
  python scripts/bench.py --quick                      # CI smoke test: tiny data and step counts

ratios are ours / Keras: above 1 is better for images/s, below 1 is better for latency and memory.
"""


def build_parser() -> argparse.ArgumentParser:
    cpus = os.cpu_count() or 1
    p = argparse.ArgumentParser(prog="python -m references.bench", description=__doc__.split("\n\n")[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data.root", "--data", dest="data", type=Path, default=None,
                   help="ImageFolder root to measure on (default: the real smoke photos, data/real/smoke in the "
                        "checkout or ../shared/data/real/smoke, when present, else "
                        "generated images; --quick always generates unless --data is given)")
    p.add_argument("--quick", action="store_true", help="tiny data (64 px) and a few steps: a smoke test, not a measurement")
    p.add_argument("--out", type=Path, default=Path("bench.json"), help="result file (default: bench.json)")
    p.add_argument("--threads", type=int, default=cpus,
                   help=f"intra-op threads for torch, TensorFlow, onnxruntime and LiteRT alike (default: {cpus})")
    p.add_argument("--workers", type=int, default=cpus,
                   help=f"data worker processes for both pipelines (default: {cpus})")
    p.add_argument("--repeats", type=int, default=1,
                   help="A/B repetitions of the pipeline and training measurements, alternating order; the median "
                        "is reported (default: 1)")
    p.add_argument("--keras-threads", action="store_true",
                   help="run Keras's data workers as threads (its `fit` default) instead of processes")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep the intermediate files (checkpoint, export, logs) here instead of a temporary folder")
    return p


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    args = build_parser().parse_args(argv)
    console = Console()
    if not console.is_terminal:  # logs and CI: rich would wrap the table at 80 columns
        console = Console(width=150)
    for name in ("threads", "workers", "repeats"):
        if getattr(args, name) < 1:
            console.print(f"[red]error:[/red] --{name} must be at least 1")
            return 2
    if args.data is not None and not args.data.is_dir():
        console.print(f"[red]error:[/red] --data {args.data} is not a folder")
        return 2
    workdir = args.workdir.resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="lit-garbage-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(args.data, args.out, QUICK if args.quick else FULL, workdir, args.threads, args.workers,
                  args.repeats, not args.keras_threads, console, args.quick)
    try:
        result = bench.run()
    except BenchError as err:
        console.print(f"[red]error:[/red] {err}")
        return 1
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(render_table(result))
    for note in _notes(result):
        console.print(f"  note: {note}")
    console.print(f"  written: {args.out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "_phase":
        sys.exit(phase_main(*sys.argv[2:]))
    sys.exit(main())
