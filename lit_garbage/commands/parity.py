"""`lit-garbage parity`: every format of an export scored on the same photos, one table (parity.md, parity.json).

Exit status: 0 scored; 2 the export or the data cannot be used.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lit_garbage.commands.options import OLD_DATA_SPELLINGS, RUNTIME_RULES
from lit_garbage.data.manifest import DatasetError
from lit_garbage.runs import DataRoot

EPILOG = """example:
  # torch, ONNX, SavedModel, TFLite fp32 / fp16 / int8, TFJS (Node) and MediaPipe on the run's test split
  lit-garbage parity --export runs/seed/export

  # the options as a file: --print_config writes one, --config reads it (flags after it win)
  lit-garbage parity --config parity.yaml

outputs (in --out, default EXPORT/parity): parity.md, parity.json, and each format's evaluation report.
"""


@dataclass
class ParityConfig:
    """which export, on which photos"""

    export: Path
    """an export folder (lit-garbage export)"""
    data: DataRoot = field(default_factory=DataRoot)
    split: Literal["train", "val", "test", "all"] = "test"
    """the split scored ('all': every image under --data.root)"""
    out: Path | None = None
    """output folder (default: EXPORT/parity)"""
    threads: int | None = None
    """CPU threads for every runtime (default: their own)"""
    mediapipe: bool = True
    """score MediaPipe's ImageClassifier on the int8 file too (false: leave its row out)"""


OLD_SPELLINGS = {**OLD_DATA_SPELLINGS, "--no-mediapipe": "--mediapipe=false"}  # earlier releases', not listed


def build_parser():
    from lit_garbage.commands.parsing import config_parser

    return config_parser(
        ParityConfig, prog="lit-garbage parity",
        description="Accuracy, macro F1, top-1 agreement with torch, latency and size of every format of an export\n"
                    "on the same photos, MediaPipe's ImageClassifier on the int8 file included.",
        epilog=EPILOG, renamed=OLD_SPELLINGS)


def main(argv: list[str] | None = None) -> int:
    from lit_garbage.commands.parsing import config_problems, make_config

    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from rich.console import Console
    from rich.markup import escape

    from lit_garbage.evaluation.evaluate import DataError
    from lit_garbage.evaluation.parity import format_parity, parity_markdown
    from lit_garbage.inference.backends import BackendUnavailableError, ModelFileError

    errors = Console(stderr=True, soft_wrap=True)
    broken = config_problems(parser, argv, args, RUNTIME_RULES)  # --threads, bounded as in evaluate and predict
    for problem in broken:
        errors.print(f"[red]error:[/] {escape(problem)}")
    if broken:
        return 2
    config = make_config(parser, args, ParityConfig)
    if not config.export.is_dir():
        errors.print(f"[red]error:[/] {escape(str(config.export))} is not an export folder")
        return 2
    try:
        table = format_parity(config.export, config.split, config.data.root, config.out, config.threads,
                              config.mediapipe, console=errors)
    except (FileNotFoundError, ModelFileError, BackendUnavailableError, DataError, DatasetError) as err:
        errors.print(f"[red]error:[/] {escape(str(err))}")
        return 2
    print(parity_markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
