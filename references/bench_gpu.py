"""Training throughput of the seed recipe on one GPU: `python scripts/bench_gpu.py [--data ROOT]`.

Each row is a short Lightning fit of the seed recipe (timm MobileNetV2 + the seed head, last 21 weighted
layers trainable, class weights, Adam) on the same images with one set of speed switches: precision, batch
size, where the augmentation runs (`data.augment_on`), `model.compile`; cuDNN autotuning on (`trainer.benchmark`).
Images/s are counted after a warm-up, between two CUDA synchronisations; GPU utilisation is the driver's busy fraction (NVML) sampled during the
timed steps. A "loader only" row per augmentation placement shows what the input pipeline alone can deliver.
Writes `bench_gpu.json`. Without a GPU it stops with a clear message (the CPU comparison is `scripts/bench.py`);
`--device cpu` runs the same code on the CPU, as a smoke test of the script.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from itertools import chain, repeat
from pathlib import Path

from lit_garbage.data.images import DEFAULT_IMAGE_SIZE
from references.bench import seed_config
from lit_garbage.runs import MANIFEST_FILE


@dataclass(frozen=True)
class Row:
    name: str
    batch_size: int
    precision: str
    augment_on: str
    compile: bool = False


DEFAULT_ROWS = (
    Row("seed as written (fp32, batch 32, CPU augmentation)", 32, "32-true", "cpu"),
    Row("bf16, batch 32, CPU augmentation", 32, "bf16-mixed", "cpu"),
    Row("bf16, batch 32, GPU augmentation", 32, "bf16-mixed", "device"),
    Row("bf16, batch 256, CPU augmentation", 256, "bf16-mixed", "cpu"),
    Row("bf16, batch 256, GPU augmentation", 256, "bf16-mixed", "device"),
    Row("bf16, batch 512, GPU augmentation", 512, "bf16-mixed", "device"),
    Row("bf16, batch 256, GPU augmentation, compiled", 256, "bf16-mixed", "device", compile=True),
)


class UtilisationSampler:
    """Mean / max GPU busy percentage (NVML via torch.cuda.utilization) while active."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval, self.samples, self.active = interval, [], False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import torch

        while not self._stop.wait(self.interval):
            if self.active:
                try:
                    self.samples.append(torch.cuda.utilization())
                except Exception:  # noqa: BLE001 - no NVML: utilisation is reported as unknown
                    return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def result(self) -> dict:
        if not self.samples:
            return {"gpu_util_mean": None, "gpu_util_max": None}
        return {"gpu_util_mean": statistics.fmean(self.samples), "gpu_util_max": max(self.samples)}


def _datamodule(root: Path, manifest: Path, image_size: int, row: Row, workers: int):
    from lit_garbage.data.datamodule import GarbageDataModule
    from lit_garbage.data.transforms import Augment

    return GarbageDataModule(str(root), manifest=str(manifest), image_size=image_size, batch_size=row.batch_size,
                             num_workers=workers, augment=Augment(**seed_config()["data"]["augment"]),
                             augment_on=row.augment_on)


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def train_row(root: Path, manifest: Path, image_size: int, row: Row, workers: int, warmup: int, steps: int,
              device: str = "cuda") -> dict:
    """One short fit; images/s over `steps` steps after `warmup` steps."""
    import lightning.pytorch as pl
    import torch

    from lit_garbage.training.callbacks import FreezeBackbone
    from lit_garbage.training.module import GarbageClassifier

    pl.seed_everything(0, verbose=False)
    dm = _datamodule(root, manifest, image_size, row, workers)
    marks: dict[str, float] = {}
    sampler = UtilisationSampler()

    class Clock(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step = trainer.global_step
            if step in (warmup, warmup + steps):
                _sync(device)
                marks[f"t{step}"] = time.perf_counter()
                sampler.active = step == warmup

    model = GarbageClassifier(dm.class_names, image_size=image_size, class_weights=dm.class_weights,
                              keras_compat=True, compile=row.compile)
    trainer = pl.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, precision=row.precision,
                         max_steps=warmup + steps,
                         limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, benchmark=device == "cuda",
                         callbacks=[FreezeBackbone(seed_config()["freeze"]["trainable_layers"]), Clock()])
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with sampler:
        trainer.fit(model, datamodule=dm)
    seconds = marks[f"t{warmup + steps}"] - marks[f"t{warmup}"]
    return {**asdict(row), "workers": workers, "images_per_s": steps * row.batch_size / seconds,
            "step_ms": 1000 * seconds / steps, "augmented_on": "device" if dm.batch_augment is not None else "cpu",
            "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else None,
            **sampler.result()}


def loader_row(root: Path, manifest: Path, image_size: int, augment_on: str, batch_size: int, workers: int,
               batches: int, device: str = "cuda") -> dict:
    """The train DataLoader alone (no model), as the trainer would build it on a GPU."""
    row = Row(f"loader only, {augment_on} augmentation", batch_size, "-", augment_on)
    dm = _datamodule(root, manifest, image_size, row, workers)
    dm.prepare_data()
    loader = dm.train_dataloader()
    it = chain.from_iterable(repeat(loader))  # the loader's epochs, one after another
    for _ in range(workers * (loader.prefetch_factor or 0) + 2):  # the workers' first, prefetched batches
        next(it)
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        images, _labels = next(it)
        if dm.batch_augment is not None:
            images = dm.batch_augment(images.to(device, non_blocking=True))
        seen += len(images)
    _sync(device)
    return {**asdict(row), "workers": workers, "images_per_s": seen / (time.perf_counter() - start)}


def prepare(data: Path | None, workdir: Path, image_size: int, per_class: int) -> tuple[Path, Path, dict]:
    from lit_garbage.data.manifest import build_manifest

    if data is None:
        from lit_garbage.data.synthetic import generate

        data = generate(workdir / "data", per_class=per_class, size=max(image_size + 32, 256), seed=0)
    manifest = workdir / MANIFEST_FILE
    m = build_manifest(data, (0.8, 0.1, 0.1), 42)
    m.write(manifest)
    return Path(data), manifest, {"root": str(data), "train_images": len(m.split("train"))}


def render(result: dict) -> str:
    lines = [f"{'configuration':<52} {'workers':>7} {'images/s':>9} {'step ms':>8} {'GPU util %':>10} {'GPU GB':>7}"]
    for r in result["rows"]:
        util = "-" if r.get("gpu_util_mean") is None else f"{r['gpu_util_mean']:.0f} (max {r['gpu_util_max']:.0f})"
        step = f"{r['step_ms']:.1f}" if "step_ms" in r else "-"
        mem = "-" if r.get("peak_gpu_memory_gb") is None else f"{r['peak_gpu_memory_gb']:.1f}"
        lines.append(f"{r['name']:<52} {r['workers']:>7} {r['images_per_s']:>9.0f} {step:>8} {util:>10} {mem:>7}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m references.bench_gpu", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data.root", "--data", dest="data", type=Path, help="ImageFolder root (default: generated images)")
    p.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE)
    p.add_argument("--per-class", type=int, default=300, help="generated images per class (default 300)")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2), help="DataLoader workers")
    p.add_argument("--warmup", type=int, default=30, help="steps before the clock starts")
    p.add_argument("--steps", type=int, default=100, help="timed steps per row")
    p.add_argument("--rows", default="all", help="comma-separated row numbers (1-based) of the default table, or all")
    p.add_argument("--workdir", type=Path, help="keep data and cache here (default: a temporary folder)")
    p.add_argument("--loader-batches", type=int, default=60, help="batches of 256 per loader-only row")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: a smoke test of this script")
    p.add_argument("--out", type=Path, default=Path("bench_gpu.json"))
    args = p.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU visible to torch; run it on a GPU machine (the CPU benchmark is "
              "scripts/bench.py)", file=sys.stderr)
        return 2
    rows = DEFAULT_ROWS if args.rows == "all" else [DEFAULT_ROWS[int(i) - 1] for i in args.rows.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        root, manifest, data = prepare(args.data, workdir, args.image_size, args.per_class)
        name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
        result = {"device": name, "torch": torch.__version__, "cpu_count": os.cpu_count(),
                  "image_size": args.image_size, "data": data, "rows": []}
        for augment_on in ("cpu", "device"):
            result["rows"].append(loader_row(root, manifest, args.image_size, augment_on, 256, args.workers,
                                             args.loader_batches, args.device))
            print(render(result).splitlines()[-1], flush=True)
        for row in rows:
            result["rows"].append(train_row(root, manifest, args.image_size, row, args.workers, args.warmup,
                                            args.steps, args.device))
            print(render(result).splitlines()[-1], flush=True)
    print(render(result))
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
