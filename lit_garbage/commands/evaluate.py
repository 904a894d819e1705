"""`lit-garbage evaluate` (alias `scripts/evaluate.py`): the seed's report for any model file.

Exit status: 0 evaluated; 1 no image could be evaluated; 2 the model or the data cannot be used.
"""

from __future__ import annotations

import argparse
import sys

from lit_garbage.checks import Rule
from lit_garbage.commands.options import (
    MODEL_FILES,
    RUNTIME_RULES,
    add_data,
    add_model,
    add_runtime,
    option_problems,
    quiet_tensorflow,
    whole,
)
from lit_garbage.data.manifest import DatasetError
from lit_garbage.evaluation.evaluate import (
    ALL_SPLIT,
    WORST_COUNT,
    DataError,
    evaluate,
    print_terminal,
)

EPILOG = """examples:
  # the checkpoint on its run's test split (dataset and split manifest found through the checkpoint)
  lit-garbage evaluate --model runs/demo/model.ckpt

  # an exported format: the same images, the same report
  lit-garbage evaluate --model runs/demo/export/model_int8.tflite --out eval/int8

  # validation and test splits; the dataset moved since training
  lit-garbage evaluate --model runs/demo/export/model.onnx --split val test --data.root /data/garbage

  # any folder of class folders, every image (no split manifest needed)
  lit-garbage evaluate --model runs/demo/export/tfjs --data.root photos/ --split all

outputs (in --out, default RUN/eval/<model>): report.md, metrics.json, confusion_<split>.png,
worst_<split>.png, predictions_<split>.csv. The seed's reported numbers (SPEC.md) are shown beside ours.
exit status: 0 evaluated; 1 no image could be evaluated; 2 the model or the data cannot be used.
"""


EVALUATE_RULES = (*RUNTIME_RULES, Rule("--worst", *whole(0, 12)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lit-garbage evaluate",
        description="Accuracy, per-class precision/recall/F1 (macro and weighted), confusion matrix and the "
                    "worst mistakes of any model file of this project, side by side with the seed's results.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model(p, f"the model file: {MODEL_FILES}")
    add_data(p, "dataset root (default: the one the run was trained on)")
    p.add_argument("--split", nargs="+", default=["test"], metavar="SPLIT",
                   help="train, val, test (several allowed) or 'all' (every image under --data.root); default: test")
    p.add_argument("--out", metavar="DIR", help="output folder (default: RUN/eval/<model>)")
    p.add_argument("--worst", type=int, default=WORST_COUNT, help=f"mistakes drawn, at most 12 (default: {WORST_COUNT})")
    add_runtime(p)
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average each image's probabilities with its mirror image's")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_tensorflow()
    from rich.console import Console
    from rich.markup import escape

    from lit_garbage.inference.backends import BackendUnavailableError, ModelFileError

    console, errors = Console(), Console(stderr=True, soft_wrap=True)
    bad = [s for s in args.split if s not in ("train", "val", "test", ALL_SPLIT)]
    if bad:
        errors.print(f"[red]error:[/] unknown split {', '.join(bad)} (train, val, test or all)")
        return 2
    broken = option_problems(args, EVALUATE_RULES)
    if args.out:
        from lit_garbage.files import folder_problem

        problem = folder_problem(args.out)
        if problem:  # found now, not after every image was predicted
            broken.append(f"--out {args.out} {problem}")
    for problem in broken:
        errors.print(f"[red]error:[/] {escape(problem)}")
    if broken:
        return 2
    try:
        ev = evaluate(args.model, args.split, args.data_root, args.manifest, args.out, args.batch_size, args.threads,
                      args.worst, console=errors, tta=args.tta)
    except (ModelFileError, BackendUnavailableError, DataError, DatasetError) as err:
        errors.print(f"[red]error:[/] {escape(str(err))}")
        return 2
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130
    except OSError as err:  # the report's folder refused a file the checks up front could not foresee
        errors.print(f"[red]error:[/] cannot write {escape(str(err.filename or args.out))}: "
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
