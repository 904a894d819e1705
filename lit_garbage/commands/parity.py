"""`lit-garbage parity`: every format of an export scored on the same photos, one table (parity.md, parity.json).

Exit status: 0 scored; 2 the export or the data cannot be used.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lit_garbage.commands.options import RUNTIME_RULES, add_data, option_problems
from lit_garbage.data.manifest import DatasetError

EPILOG = """example:
  # torch, ONNX, SavedModel, TFLite fp32 / fp16 / int8, TFJS (Node) and MediaPipe on the run's test split
  lit-garbage parity --export runs/seed/export

outputs (in --out, default EXPORT/parity): parity.md, parity.json, and each format's evaluation report.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lit-garbage parity",
        description="Accuracy, macro F1, top-1 agreement with torch, latency and size of every format of an "
                    "export on the same photos, MediaPipe's ImageClassifier on the int8 file included.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", required=True, type=Path, metavar="DIR", help="an export folder (lit-garbage export)")
    add_data(p, "dataset root (default: the one the run was trained on)", manifest=False)
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"), help="default: test")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: EXPORT/parity)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for every runtime (default: their own)")
    p.add_argument("--no-mediapipe", dest="mediapipe", action="store_false", help="leave MediaPipe's row out")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from rich.console import Console
    from rich.markup import escape

    from lit_garbage.evaluation.evaluate import DataError
    from lit_garbage.evaluation.parity import format_parity, parity_markdown
    from lit_garbage.inference.backends import BackendUnavailableError, ModelFileError

    errors = Console(stderr=True, soft_wrap=True)
    broken = option_problems(args, RUNTIME_RULES)  # --threads, bounded as in evaluate and predict
    for problem in broken:
        errors.print(f"[red]error:[/] {escape(problem)}")
    if broken:
        return 2
    if not args.export.is_dir():
        errors.print(f"[red]error:[/] {escape(str(args.export))} is not an export folder")
        return 2
    try:
        table = format_parity(args.export, args.split, args.data_root, args.out, args.threads, args.mediapipe,
                              console=errors)
    except (FileNotFoundError, ModelFileError, BackendUnavailableError, DataError, DatasetError) as err:
        errors.print(f"[red]error:[/] {escape(str(err))}")
        return 2
    print(parity_markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
