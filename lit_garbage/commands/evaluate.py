"""`lit-garbage evaluate` (alias `scripts/evaluate.py`): the seed's report for any model file.

Exit status: 0 evaluated; 1 no image could be evaluated; 2 the model or the data cannot be used.
"""

from __future__ import annotations

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
from lit_garbage.data.manifest import DatasetError
from lit_garbage.evaluation.evaluate import (
    ALL_SPLIT,
    WORST_COUNT,
    DataError,
    evaluate,
    print_terminal,
)
from lit_garbage.inference.files import DEFAULT_BATCH
from lit_garbage.runs import DataPaths

EPILOG = """examples:
  # the checkpoint on its run's test split (dataset and split manifest found through the checkpoint)
  lit-garbage evaluate --model runs/demo/model.ckpt

  # an exported format: the same images, the same report
  lit-garbage evaluate --model runs/demo/export/model_int8.tflite --out eval/int8

  # validation and test splits; the dataset moved since training
  lit-garbage evaluate --model runs/demo/export/model.onnx --split val test --data.root /data/garbage

  # any folder of class folders, every image (no split manifest needed)
  lit-garbage evaluate --model runs/demo/export/tfjs --data.root photos/ --split all

  # the options as a file: --print_config writes one, --config reads it (flags after it win)
  lit-garbage evaluate --config eval.yaml --model runs/demo/export/model_int8.tflite

outputs (in --out, default RUN/eval/<model>): report.md, metrics.json, confusion_<split>.png,
worst_<split>.png, predictions_<split>.csv. The seed's reported numbers (SPEC.md) are shown beside ours.
exit status: 0 evaluated; 1 no image could be evaluated; 2 the model or the data cannot be used.
"""


@dataclass
class EvaluateConfig:
    """what to evaluate, on which images"""

    model: Path
    """the model file: checkpoint (.ckpt), model.onnx, a SavedModel folder, a .tflite file (fp32, fp16, int8) or a
    TFJS model.json / folder"""
    data: DataPaths = field(default_factory=DataPaths)
    split: tuple[str, ...] = ("test",)
    """train, val, test (several allowed) or 'all' (every image under --data.root)"""
    out: Path | None = None
    """output folder (default: RUN/eval/<model>)"""
    worst: int = WORST_COUNT
    """mistakes drawn, at most 12"""
    batch_size: int = DEFAULT_BATCH
    """images per model call"""
    threads: int | None = None
    """CPU threads for the runtime (default: its own)"""
    tta: bool = False
    """test-time augmentation: average each image's probabilities with its mirror image's"""


EVALUATE_RULES = (*RUNTIME_RULES, Rule("--worst", *whole(0, 12)))
OLD_SPELLINGS = {**OLD_DATA_SPELLINGS, **OLD_RUNTIME_SPELLINGS}  # earlier releases', still read, not listed


def build_parser():
    from lit_garbage.commands.parsing import config_parser

    p = config_parser(
        EvaluateConfig, prog="lit-garbage evaluate",
        description="Accuracy, per-class precision/recall/F1 (macro and weighted), confusion matrix and the worst\n"
                    "mistakes of any model file of this project, side by side with the seed's results.",
        epilog=EPILOG, skip={"split"}, renamed=OLD_SPELLINGS)
    p.add_argument("--split", nargs="+", default=list(EvaluateConfig.split), metavar="SPLIT",
                   help="train, val, test (several allowed) or 'all' (every image under --data.root)")
    return p


def main(argv: list[str] | None = None) -> int:
    from lit_garbage.commands.parsing import config_problems, make_config

    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_tensorflow()
    from rich.console import Console
    from rich.markup import escape

    from lit_garbage.inference.backends import BackendUnavailableError, ModelFileError

    console, errors = Console(), Console(stderr=True, soft_wrap=True)
    bad = [s for s in args.split if s not in ("train", "val", "test", ALL_SPLIT)]
    if bad:
        errors.print(f"[red]error:[/] unknown split {', '.join(bad)} (train, val, test or all)")
        return 2
    broken = config_problems(parser, argv, args, EVALUATE_RULES)
    if args.out:
        from lit_garbage.files import folder_problem

        problem = folder_problem(args.out)
        if problem:  # found now, not after every image was predicted
            broken.append(f"--out {args.out} {problem}")
    for problem in broken:
        errors.print(f"[red]error:[/] {escape(problem)}")
    if broken:
        return 2
    config = make_config(parser, args, EvaluateConfig)
    try:
        ev = evaluate(config.model, config.split, config.data.root, config.data.manifest, config.out,
                      config.batch_size, config.threads, config.worst, console=errors, tta=config.tta)
    except (ModelFileError, BackendUnavailableError, DataError, DatasetError) as err:
        errors.print(f"[red]error:[/] {escape(str(err))}")
        return 2
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130
    except OSError as err:  # the report's folder refused a file the checks up front could not foresee
        errors.print(f"[red]error:[/] cannot write {escape(str(err.filename or config.out))}: "
                     f"{escape(err.strerror or str(err))}; choose another --out")
        return 2
    if not ev.metrics:
        errors.print("[red]error:[/] no image could be evaluated")
        return 1
    print_terminal(ev, console)
    console.print(f"wrote {ev.out}: " + ", ".join(f.name for f in ev.files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
