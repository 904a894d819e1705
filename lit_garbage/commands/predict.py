"""`lit-garbage predict` (alias `scripts/predict.py`): top-k classes for images with any model file.

Exit status: 0 when at least one image was predicted by every model; 1 when no image could be
predicted; 2 when a model cannot be loaded (the other models still run) or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lit_garbage.checks import Rule, whole
from lit_garbage.commands.options import (
    OLD_DATA_SPELLINGS,
    OLD_RUNTIME_SPELLINGS,
    RUNTIME_RULES,
    quiet_tensorflow,
)
from lit_garbage.data.images import IMAGE_EXTENSIONS
from lit_garbage.inference.files import DEFAULT_BATCH
from lit_garbage.runs import DataRoot
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

  # the options as a file: --print_config writes one, --config reads it (flags after it win)
  lit-garbage predict --config predict.yaml photos/

model files: a .ckpt checkpoint, model.onnx, a SavedModel folder, a .tflite file (fp32, fp16, int8) or a
TFJS model.json / folder (needs Node and `npm ci`). Folders are searched recursively for images
(""" + ", ".join(IMAGE_EXTENSIONS) + """).
exit status: 0 predicted; 1 nothing could be predicted; 2 a model could not be loaded or bad arguments.
"""


@dataclass
class PredictConfig:
    """what to predict, with which models, and where the results go"""

    model: list[Path]
    """model file or folder; repeat to compare formats"""
    inputs: list[Path] = field(default_factory=list)
    """image files and/or folders (searched recursively); none: the run's test split (from the model's split
    manifest)"""
    top_k: int = 3
    """classes shown per image"""
    json: Path | None = None
    """write all predictions as JSON"""
    csv: Path | None = None
    """write all predictions as CSV (one row per image)"""
    grid: Path | None = None
    """draw up to 12 images with predicted label and confidence"""
    grid_size: int = 12
    """images in the grid, at most 12"""
    seed: int = 0
    """seed for sampling the grid's images"""
    data: DataRoot = field(default_factory=DataRoot)
    split: str = "test"
    """split used when no images are given"""
    batch_size: int = DEFAULT_BATCH
    """images per model call"""
    threads: int | None = None
    """CPU threads for the runtime (default: its own)"""
    quiet: bool = False
    """no per-image table (summaries and errors only)"""


PREDICT_RULES = (
    *RUNTIME_RULES,
    Rule("--top-k", *whole(1, 1000)),  # more than the model's classes shows them all
    Rule("--grid-size", *whole(1, 12)),
    Rule("--seed", *whole(0, 2**32 - 1)),
)
# Earlier releases' spellings, still read, not listed.
OLD_SPELLINGS = {**OLD_DATA_SPELLINGS, **OLD_RUNTIME_SPELLINGS, "--top-k": "--top_k", "--grid-size": "--grid_size"}


def output_problems(args: PredictConfig) -> list[str]:
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


def build_parser():
    from lit_garbage.commands.parsing import config_parser

    p = config_parser(
        PredictConfig, prog="lit-garbage predict",
        description="Top-k garbage classes with confidences for image files and folders, with any model file of\n"
                    "this project (checkpoint, ONNX, SavedModel, TFLite, TFJS).",
        epilog=EPILOG, skip={"model", "inputs"}, renamed=OLD_SPELLINGS)
    # Added by hand: a positional list, and an option that may be repeated (--model A --model B). No images on the
    # command line leaves a --config file's `inputs` (SUPPRESS: argparse then sets nothing).
    p.add_argument("inputs", nargs="*", default=argparse.SUPPRESS, metavar="IMAGES_OR_FOLDERS",
                   help="image files and/or folders (searched recursively); none: the run's test split "
                        "(from the model's split manifest)")
    p.add_argument("--model", action="append", required=True, metavar="PATH",
                   help="model file or folder; repeat to compare formats")
    return p


def main(argv: list[str] | None = None) -> int:
    from lit_garbage.commands.parsing import config_problems, make_config

    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_tensorflow()
    from rich.console import Console

    console = Console()
    errors = Console(stderr=True, soft_wrap=True)  # one message = one line, whatever the width
    from rich.markup import escape

    config = make_config(parser, args, PredictConfig)
    broken = config_problems(parser, argv, args, PREDICT_RULES)
    broken += output_problems(config)
    for problem in broken:
        errors.print(f"[red]error:[/] {escape(problem)}")
    if broken:
        return 2
    try:
        return run(config, console, errors)
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
