"""`python -m references.latency`: single-image latency of model files side by side, in one process, on this machine.

Every file runs the same number of single-image predictions in interleaved rounds, the order rotated each round,
so each sees the same share of any slow-down of a shared machine. Per file: the median over rounds of the wall
time and of the process's CPU time per image; with one thread the CPU time is the work done, which hardly
depends on other load, so the ratios to the first file are taken from it (from the wall time with more
threads, where CPU time counts every worker). The best `export --int8-float-convs` depends on the CPU's int8
kernels (docs/results/2026-12-03-int8.md): this is how to measure it on the machine the files are for.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

# Runtimes that compute in this process (TFJS runs in Node: its time is not this process's).
IN_PROCESS_KINDS = ("torch", "onnx", "saved_model", "tflite")


class LatencyError(ValueError):
    """A file that cannot be timed here."""


def measure(paths: Sequence[str | Path], threads: int = 1, rounds: int = 30, per_round: int = 20,
            warmup: int = 5, seed: int = 0) -> list[dict]:
    """One row per file: wall / CPU ms per image (medians over `rounds`), its ratio to the first file."""
    from lit_garbage.inference.backends import detect_kind, load_backend

    if rounds < 1 or per_round < 1 or threads < 1:
        raise LatencyError(f"rounds, per-round and threads must be >= 1, got {rounds}, {per_round}, {threads}")
    backends, inputs = [], []
    rng = np.random.default_rng(seed)
    for path in map(Path, paths):
        kind = detect_kind(path)
        if kind not in IN_PROCESS_KINDS:
            raise LatencyError(f"{path}: a {kind} model runs outside this process; time it where it runs")
        backend = load_backend(path, kind=kind, threads=threads)
        # The runtimes' work does not depend on the pixels: random images of the file's own input size.
        x = rng.random((per_round, 3, backend.image_size, backend.image_size), dtype=np.float32)
        for i in range(warmup):
            backend.predict(x[i % per_round][None])
        backends.append(backend)
        inputs.append(x)
    wall: list[list[float]] = [[] for _ in backends]
    cpu: list[list[float]] = [[] for _ in backends]
    order = list(range(len(backends)))
    for r in range(rounds):
        for k in order[r % len(order):] + order[:r % len(order)]:
            backend, x = backends[k], inputs[k]
            w, c = time.perf_counter(), time.process_time()
            for i in range(per_round):
                backend.predict(x[i][None])
            cpu[k].append(1000 * (time.process_time() - c) / per_round)
            wall[k].append(1000 * (time.perf_counter() - w) / per_round)
    statistic = "cpu" if threads == 1 else "wall"
    rows = []
    for path, w, c in zip(paths, wall, cpu):
        rows.append({"file": str(path), "mb": Path(path).stat().st_size / 1e6 if Path(path).is_file() else None,
                     "wall_ms": statistics.median(w), "cpu_ms": statistics.median(c), "rounds": rounds,
                     "per_round": per_round, "threads": threads, "statistic": statistic})
    first = rows[0][f"{statistic}_ms"]
    for row in rows:
        row["ratio"] = row[f"{statistic}_ms"] / first
    return rows


def render(rows: list[dict]) -> str:
    statistic = rows[0]["statistic"]
    lines = [f"| file | MB | wall ms / image | CPU ms / image | x first ({statistic}) |", "|---|---|---|---|---|"]
    for row in rows:
        mb = "-" if row["mb"] is None else f"{row['mb']:.2f}"
        lines.append(f"| {row['file']} | {mb} | {row['wall_ms']:.3f} | {row['cpu_ms']:.3f} | {row['ratio']:.3f} |")
    r = rows[0]
    lines.append(f"\n{len(rows)} files, {r['threads']} thread(s), batch 1, {r['rounds']} interleaved rounds of "
                 f"{r['per_round']} images, medians over rounds.")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m references.latency", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""examples:
  python -m references.latency exports/demo/model_float32.tflite exports/demo/model_int8.tflite
  python -m references.latency model_float32.tflite int8_a.tflite int8_b.tflite --threads 2 --json latency.json""")
    p.add_argument("files", nargs="+", help="model files (the first is the reference): .tflite, .onnx, a "
                   "SavedModel folder or a checkpoint")
    p.add_argument("--threads", type=int, default=1, help="runtime threads (default: 1)")
    p.add_argument("--rounds", type=int, default=30, help="interleaved rounds (default: 30)")
    p.add_argument("--per-round", type=int, default=20, help="single-image runs per file per round (default: 20)")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rows = measure(args.files, threads=args.threads, rounds=args.rounds, per_round=args.per_round)
    except (LatencyError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(render(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
