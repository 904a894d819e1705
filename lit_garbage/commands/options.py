"""The options several subcommands share, named once: one fact, one flag, in every command.

The dataset flags are spelled as `lit-garbage fit` spells them (`--data.root`, `--data.manifest`, its
LightningCLI keys), so a path given to `fit` is given the same way to `export`, `evaluate` and `predict`.
The spellings of earlier releases (`--data-root`, `--data`, `--manifest`, `--ckpt`) still work, unlisted.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Iterable

from lit_garbage.checks import Rule, optional, problems, whole

MODEL_FILES = ("checkpoint (.ckpt), model.onnx, a SavedModel folder, a .tflite file (fp32, fp16, int8) "
               "or a TFJS model.json / folder")


def quiet_tensorflow(verbose: bool = False) -> None:
    """Hide TensorFlow's C++ start-up chatter (CUDA probing on CPU machines, oneDNN notes) unless `verbose`.

    TensorFlow reads TF_CPP_MIN_LOG_LEVEL once, when it is first imported: call this before anything imports it.
    A level the user set in the environment is kept either way."""
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def add_model(p: argparse.ArgumentParser, help: str, *, repeat: bool = False) -> None:
    """`--model PATH`: the model file a command reads (`repeat`: may be given several times)."""
    p.add_argument("--model", required=True, metavar="PATH", dest="model", help=help,
                   **({"action": "append"} if repeat else {}))


# The same spellings for the typed configs (`commands/parsing.py`): `--data` and `--data-root` -> `--data.root`.
OLD_DATA_SPELLINGS = {"--data-root": "--data.root", "--data": "--data.root", "--manifest": "--data.manifest"}
OLD_RUNTIME_SPELLINGS = {"--batch-size": "--batch_size"}


def add_data(p: argparse.ArgumentParser, root_help: str, *, manifest: bool = True) -> None:
    """`--data.root ROOT` (and `--data.manifest CSV`): the run's dataset, when it moved since training; the
    spellings of OLD_DATA_SPELLINGS read too, unlisted."""
    p.add_argument("--data.root", dest="data_root", type=Path, metavar="ROOT", help=root_help)
    if manifest:
        p.add_argument("--data.manifest", dest="manifest", type=Path, metavar="CSV",
                       help="split manifest (default: the run's split.csv)")
    for old, new in OLD_DATA_SPELLINGS.items():
        if manifest or new != "--data.manifest":
            p.add_argument(old, dest=p._option_string_actions[new].dest, type=Path, help=argparse.SUPPRESS)


# Every numeric option has bounds: an absurd value is one line before any work, not a hang or a MemoryError.
MAX_BATCH = 4096
MAX_THREADS = 4 * (os.cpu_count() or 1)  # more threads than that only contend (100000 hung for minutes)
RUNTIME_RULES = (
    Rule("--batch-size", *whole(1, MAX_BATCH)),
    Rule("--threads", optional(whole(1, MAX_THREADS)[0]), f"must be an integer from 1 to {MAX_THREADS} "
         f"(4 x this machine's {os.cpu_count() or 1} CPUs)"),
)


def option_problems(args: argparse.Namespace, rules: Iterable[Rule]) -> list[str]:
    """One line per broken rule of `rules`, whose keys are the flags as written (`--top-k`)."""
    missing = object()

    def value_of(flag: str) -> Any:
        return getattr(args, flag.lstrip("-").replace("-", "_").replace(".", "_"), missing)

    return problems(rules, value_of, missing=missing)
