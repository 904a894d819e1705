"""`lit-garbage int8-finetune`: a trained checkpoint -> an int8-ready checkpoint (weights on the int8 grid).

Exit status: 0 written; 2 the checkpoint or its data cannot be used.
"""

from __future__ import annotations

import argparse
import sys

from lit_garbage.checks import Rule, non_negative, optional, positive
from lit_garbage.commands.options import MAX_BATCH, add_data, add_model, option_problems, whole

EPILOG = """examples:
  # fine-tune under int8 weight fake quantisation, then export every format from the result
  lit-garbage int8-finetune --model runs/demo/model.ckpt --out runs/demo/int8/model.ckpt
  lit-garbage export --model runs/demo/int8/model.ckpt

  # snap only (no training): the weights rounded onto the int8 grid
  lit-garbage int8-finetune --model runs/demo/model.ckpt --out snapped.ckpt --epochs 0

The output checkpoint keeps the run's hyper-parameters and data settings (export, evaluate and fit find the run's
data through it) and records the fine-tune's settings and validation accuracy before / after.
The result is a new model: every weight rounded (also the layers the int8 file keeps float) and one more epoch
of training change its answers against the input checkpoint's on a few % of photos (2-7 % on two real models).
For an int8 file that answers as the trained model does, export the trained checkpoint itself.
"""


def build_parser() -> argparse.ArgumentParser:
    from lit_garbage.int8.finetune import (
        DEFAULT_ACTIVATIONS,
        DEFAULT_BACKBONE_LR_SCALE,
        DEFAULT_EPOCHS,
        DEFAULT_LR,
    )

    p = argparse.ArgumentParser(
        prog="lit-garbage int8-finetune",
        description="Fine-tune a checkpoint with its convolution and dense weights fake-quantised as TFLite's "
                    "per-channel int8 stores them (after BatchNorm folding), then snap them onto that grid and "
                    "write a new checkpoint: its int8 export keeps the float model's weights exactly.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model(p, "checkpoint of a `lit-garbage fit` run (e.g. RUN/model.ckpt)")
    p.add_argument("--out", required=True, help="checkpoint to write")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                   help=f"fine-tune epochs; 0: snap only (default: {DEFAULT_EPOCHS})")
    p.add_argument("--lr", type=float, default=DEFAULT_LR,
                   help=f"head learning rate, cosine-decayed to 0 (default: {DEFAULT_LR:g})")
    p.add_argument("--backbone-lr-scale", type=float, default=DEFAULT_BACKBONE_LR_SCALE,
                   help=f"backbone learning rate as a fraction of --lr (default: {DEFAULT_BACKBONE_LR_SCALE:g})")
    p.add_argument("--activations", action=argparse.BooleanOptionalAction, default=DEFAULT_ACTIVATIONS,
                   help="fake-quantise the activations too while fine-tuning (per tensor, ranges from 100 "
                        "validation images, as int8 rounds them; default: "
                        f"{'on' if DEFAULT_ACTIVATIONS else 'off'})")
    p.add_argument("--train-batchnorm", action="store_true",
                   help="let BatchNorms use batch statistics while fine-tuning (default: inference mode)")
    p.add_argument("--batch-size", type=int, default=None, help="training batch size (default: the run's)")
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: the run's)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the fine-tune (default: 0)")
    p.add_argument("--no-validate", action="store_true", help="skip the validation accuracy before / after")
    add_data(p, "dataset folder, if it moved since training")
    return p


INT8_FINETUNE_RULES = (
    Rule("--epochs", *whole(0, 1000)),
    Rule("--lr", lambda v: positive(v) and v < 10, "must be a positive number below 10"),
    Rule("--backbone-lr-scale", lambda v: non_negative(v) and v <= 10, "must be from 0 to 10"),
    Rule("--batch-size", optional(whole(1, MAX_BATCH)[0]), f"must be an integer from 1 to {MAX_BATCH:,}"),
    Rule("--num-workers", optional(whole(0, 256)[0]), "must be an integer from 0 to 256"),
    Rule("--seed", *whole(0, 2**32 - 1)),
)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    broken = option_problems(args, INT8_FINETUNE_RULES)
    for problem in broken:
        print(f"error: {problem}", file=sys.stderr)
    if broken:
        return 2
    from lit_garbage.int8.finetune import int8_finetune

    try:
        int8_finetune(args.model, args.out, epochs=args.epochs, lr=args.lr, backbone_lr_scale=args.backbone_lr_scale,
                      freeze_batchnorm=not args.train_batchnorm, activations=args.activations,
                      data_root=args.data_root, manifest=args.manifest, batch_size=args.batch_size,
                      num_workers=args.num_workers, validate=not args.no_validate, seed=args.seed)
    except (ValueError, FileNotFoundError) as err:  # bad options, unsafe / foreign checkpoints, missing data
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
