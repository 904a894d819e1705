"""`lit-garbage audit`: the photos of a dataset that mislead a model, found without training one.

Exit status: 0 audited; 2 the data, the model or the options cannot be used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = """examples:
  # a dataset: duplicates, borders, sizes, suspected wrong labels and outliers (ImageNet features, no training)
  lit-garbage audit data/garbage --out audit/garbage

  # the features of a trained model instead, and the twins a test folder has in the training data
  lit-garbage audit data/garbage --model runs/demo/model.ckpt --against photos/test --out audit/garbage

  # then train without the suspects you confirmed (delete the rows you want to keep from the CSV first)
  lit-garbage fit --config configs/seed.yaml --data.root data/garbage --data.exclude audit/garbage/label_issues.csv

outputs (in --out): audit.md, audit.json, label_issues.csv, outliers.csv, duplicates.csv, leakage.csv (--against),
label_issues_N.png, outliers_N.png, leakage_N.png (contact sheets), embeddings.npz (the features, reused by the next
audit of the same files). No photo is ever moved, changed or deleted.
exit status: 0 audited; 2 the data, the model or the options cannot be used.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lit-garbage audit",
        description="Find the photos of a class-folder dataset that mislead a model: suspected wrong labels (cleanlab "
                    "on out-of-fold probabilities), outliers, exact and near duplicates (across classes too), "
                    "unreadable files, class balance, sizes and borders; with --against, the twins another folder "
                    "has here.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path, help="dataset folder: one sub-folder per class")
    p.add_argument("--model", type=Path, metavar="PATH",
                   help="a model of this project: a checkpoint or model.safetensors gives its backbone's features, "
                        "another model file its class probabilities (default: ImageNet MobileNetV2 features)")
    p.add_argument("--weights", type=Path, metavar="PATH",
                   help="torchvision's ImageNet MobileNetV2 weights (mobilenet_v2-b0353104.pth; default: the one in "
                        "torch's hub cache or the one `make setup` installs)")
    p.add_argument("--against", type=Path, metavar="OTHER_DATA",
                   help="another class-folder dataset (e.g. a test folder): its photos with a twin in DATA")
    p.add_argument("--out", type=Path, default=Path("audit"), metavar="DIR", help="output folder (default: audit)")
    p.add_argument("--folds", type=int, default=5, help="folds of the out-of-fold predictions (default: 5)")
    p.add_argument("--sheet", type=int, default=50, help="suspects drawn on the contact sheets (default: 50)")
    p.add_argument("--near-distance", type=int, default=4,
                   help="perceptual-hash bits (of 64) at or below which two photos are near duplicates (default: 4)")
    p.add_argument("--batch-size", type=int, default=64, help="photos per network call (default: 64)")
    p.add_argument("--image-size", type=int, metavar="PX",
                   help="the network's input size (default: 224, or the model's own); smaller is faster and weaker")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console
    from rich.markup import escape

    from lit_garbage.audit.embeddings import find_imagenet_weights
    from lit_garbage.audit.label_issues import AuditError
    from lit_garbage.audit.run import run_audit
    from lit_garbage.data.manifest import DatasetError
    from lit_garbage.inference.backends import BackendUnavailableError, ModelFileError

    console, errors = Console(), Console(stderr=True, soft_wrap=True)
    if args.folds < 2 or args.sheet < 0 or not 0 <= args.near_distance <= 32 or args.batch_size < 1 or (
            args.image_size is not None and args.image_size < 32):
        errors.print("[red]error:[/] --folds must be at least 2, --sheet at least 0, --near-distance 0..32, "
                     "--batch-size at least 1 and --image-size at least 32")
        return 2
    try:
        weights = None if args.model else find_imagenet_weights(args.weights)
        if args.model is None and weights is None:
            errors.print("[yellow]note:[/] no ImageNet MobileNetV2 weights found (--weights, or mobilenet_v2-b0353104.pth "
                         "in torch's hub cache or installed by `make setup`): falling back to colour thumbnails, which find far fewer label issues")
        audit = run_audit(args.data, args.out, model=args.model, against=args.against, weights=weights,
                          folds=args.folds, sheet=args.sheet, near_distance=args.near_distance,
                          batch_size=args.batch_size, image_size=args.image_size, say=lambda text: errors.print(escape(text)))
    except (AuditError, DatasetError, ModelFileError, BackendUnavailableError, FileNotFoundError, ValueError) as err:
        errors.print(f"[red]error:[/] {escape(str(err))}")
        return 2
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130
    r = audit.result
    line = (f"{r['photos']} photos: {r['label_issues']['count']} label issues, {r['outliers']['count']} outliers "
            f"listed, {r['scan']['duplicates']['exact_groups'] + r['scan']['duplicates']['near_groups']} duplicate "
            f"groups ({r['scan']['duplicates']['across_classes']} across classes), "
            f"{len(r['scan']['unreadable'])} unreadable")
    if "leakage" in r:
        lk = r["leakage"]
        line += f"; {lk['with_twin']} of {lk['photos']} photos of {lk['against']} have a twin here"
    console.print(escape(line))
    console.print(escape(f"wrote {audit.out}: " + ", ".join(f.name for f in audit.files)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
