"""`lit-garbage predict` (alias `scripts/predict.py`): top-k classes for images with any model file.

Exit status: 0 when at least one image was predicted by every model; 1 when no image could be
predicted; 2 when a model cannot be loaded (the other models still run) or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lit_garbage.checks import Rule
from lit_garbage.commands.options import (
    RUNTIME_RULES,
    add_data,
    add_model,
    add_runtime,
    option_problems,
    quiet_tensorflow,
    whole,
)
from lit_garbage.data.images import IMAGE_EXTENSIONS
from lit_garbage.serve.predict import run

EPILOG = """examples:
  # top-3 for a folder and a single photo with the checkpoint
  lit-garbage predict --model runs/demo/model.ckpt photos/ my_bin.jpg

  # the same with the int8 TFLite file, top-5, results to JSON and CSV
  lit-garbage predict --model runs/demo/export/model_int8.tflite photos/ --top-k 5 \\
      --json preds.json --csv preds.csv

  # a grid of 12 images sampled (seed 7) from a folder, with label and confidence
  lit-garbage predict --model runs/demo/export/model.onnx photos/ --grid grid.png --seed 7

  # no images given: 12 images of the run's own test split (the seed's figure)
  lit-garbage predict --model runs/demo/export/model_float32.tflite --grid grid.png

  # two formats side by side: the second table shows whether they agree
  lit-garbage predict --model runs/demo/model.ckpt --model runs/demo/export/tfjs photos/

model files: a .ckpt checkpoint, model.onnx, a SavedModel folder, a .tflite file (fp32, fp16, int8) or a
TFJS model.json / folder (needs Node and `npm ci`). Folders are searched recursively for images
(""" + ", ".join(IMAGE_EXTENSIONS) + """).
exit status: 0 predicted; 1 nothing could be predicted; 2 a model could not be loaded or bad arguments.
"""


PREDICT_RULES = (
    *RUNTIME_RULES,
    Rule("--top-k", *whole(1, 1000)),  # more than the model's classes shows them all
    Rule("--grid-size", *whole(1, 12)),
    Rule("--seed", *whole(0, 2**32 - 1)),
)


def output_problems(args: argparse.Namespace) -> list[str]:
    """What is wrong with the output paths, found before any model is loaded or image read."""
    from lit_garbage.files import writable_problem

    out = []
    named = [(flag, getattr(args, flag[2:])) for flag in ("--json", "--csv", "--grid") if getattr(args, flag[2:])]
    for flag, path in named:
        problem = writable_problem(path)
        if problem:
            out.append(f"{flag} {path}: {problem}")
    if args.grid:
        from lit_garbage.evaluation.figures import figure_format_problem

        problem = figure_format_problem(args.grid)
        if problem:
            out.append(f"--grid {args.grid}: {problem}")
    seen: dict[Path, str] = {}
    for flag, path in named:
        key = Path(os.path.abspath(path))
        if key in seen:
            out.append(f"{seen[key]} and {flag} name the same file {path}: one would overwrite the other")
        seen[key] = flag
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lit-garbage predict",
        description="Top-k garbage classes with confidences for image files and folders, with any model "
                    "file of this project (checkpoint, ONNX, SavedModel, TFLite, TFJS).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="IMAGES_OR_FOLDERS",
                   help="image files and/or folders (searched recursively); none: the run's test split "
                        "(from the model's split manifest)")
    add_model(p, "model file or folder; repeat to compare formats", repeat=True)
    p.add_argument("--top-k", type=int, default=3, help="classes shown per image (default: 3)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write all predictions as JSON")
    p.add_argument("--csv", type=Path, metavar="FILE", help="write all predictions as CSV (one row per image)")
    p.add_argument("--grid", type=Path, metavar="PNG", help="draw up to 12 images with predicted label and confidence")
    p.add_argument("--grid-size", type=int, default=12, help="images in the grid, at most 12 (default: 12)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling the grid's images (default: 0)")
    add_data(p, "dataset root for the test-split default, if it moved since training", manifest=False)
    p.add_argument("--split", default="test", help="split used when no images are given (default: test)")
    add_runtime(p)
    p.add_argument("--quiet", action="store_true", help="no per-image table (summaries and errors only)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_tensorflow()
    from rich.console import Console

    console = Console()
    errors = Console(stderr=True, soft_wrap=True)  # one message = one line, whatever the width
    from rich.markup import escape

    broken = option_problems(args, PREDICT_RULES)
    broken += output_problems(args)
    for problem in broken:
        errors.print(f"[red]error:[/] {escape(problem)}")
    if broken:
        return 2
    try:
        return run(args, console, errors)
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
