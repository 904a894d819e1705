"""Training speed of recipe variants, measured side by side in one process (images/s of real training steps).

Each variant trains `--steps` batches of the real data module (cached uint8 images, the seed's augmentation) and
the real LightningModule through Lightning's `Trainer`, after `--warmup` untimed steps; the variants take turns,
round after round, so a busy machine slows them alike. Prints one table: images/s (median of the rounds), ms per
step, and each variant's ratio to the first.

    python -m references.train_speed --manifest RUN/split.csv --cache RUN/image_cache --root DATA \
        --variant today:precision=32-true,num_workers=4 --variant bf16:precision=bf16-mixed,num_workers=2

A variant sets any of: precision, num_workers, augment_on (cpu | device), trainable_layers (an int or all),
image_size, batch_size, compile (0 | 1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import lightning.pytorch as pl
import torch

from lit_garbage.data.datamodule import GarbageDataModule
from lit_garbage.training.callbacks import FreezeBackbone
from lit_garbage.training.module import GarbageClassifier

DEFAULTS = {"precision": "32-true", "num_workers": 2, "augment_on": "cpu", "trainable_layers": "21",
            "image_size": "224", "batch_size": "32", "compile": "0"}


class StepClock(pl.Callback):
    """Wall time of the training batches after the first `warmup` (loading included: it is part of a step)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.images = warmup, None, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self.images += len(batch[1])
            self.end = time.perf_counter()


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, spec = text.partition(":")
    options = dict(DEFAULTS)
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key not in DEFAULTS:
            raise SystemExit(f"error: unknown variant option {key!r} (one of {', '.join(DEFAULTS)})")
        options[key] = value
    return name, options


def one_run(args, options: dict) -> float:
    """Images/s of one variant over `args.steps` timed steps."""
    pl.seed_everything(0, verbose=False)
    data = GarbageDataModule(root=args.root, manifest=args.manifest, cache=args.cache,
                             image_size=int(options["image_size"]), batch_size=int(options["batch_size"]),
                             num_workers=int(options["num_workers"]), augment_on=options["augment_on"])
    data.setup("fit")
    model = GarbageClassifier(data.class_names, image_size=int(options["image_size"]),
                              class_weights=data.class_weights, weights=args.weights,
                              compile=options["compile"] == "1")
    layers = None if options["trainable_layers"] == "all" else int(options["trainable_layers"])
    clock = StepClock(args.warmup)
    trainer = pl.Trainer(accelerator="cpu", devices=1, precision=options["precision"], max_epochs=1,
                         limit_train_batches=args.warmup + args.steps, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[FreezeBackbone(layers), clock])
    trainer.fit(model, datamodule=data)
    return clock.images / (clock.end - clock.start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the dataset folder (class folders)")
    parser.add_argument("--manifest", required=True, help="a run's split.csv (its split is reused, not rebuilt)")
    parser.add_argument("--cache", default="auto", help="the decoded-image cache folder to share")
    parser.add_argument("--weights", default=None, help="backbone weights file (default: none, random init)")
    parser.add_argument("--variant", action="append", required=True, help="NAME:key=value,...")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the results here too")
    args = parser.parse_args(argv)
    variants = [parse_variant(v) for v in args.variant]
    rates: dict[str, list[float]] = {name: [] for name, _ in variants}
    for _ in range(args.rounds):
        for name, options in variants:
            rates[name].append(one_run(args, options))
            print(f"{name}: {rates[name][-1]:.1f} images/s", flush=True)
    base = statistics.median(rates[variants[0][0]])
    print(f"\n| variant | options | images/s (median of {args.rounds}) | ms per step | vs {variants[0][0]} |")
    print("|---|---|---|---|---|")
    rows = []
    for name, options in variants:
        rate = statistics.median(rates[name])
        changed = ", ".join(f"{k}={v}" for k, v in options.items() if v != DEFAULTS[k]) or "defaults"
        print(f"| {name} | {changed} | {rate:.1f} | {1000 * int(options['batch_size']) / rate:.0f} | "
              f"{rate / base:.2f}x |")
        rows.append({"variant": name, "options": options, "images_per_s": rates[name], "ratio": rate / base})
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, CPU bf16: "
          f"{torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
