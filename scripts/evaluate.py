"""Evaluate any model file on its run's split: `python scripts/evaluate.py --model PATH` (see --help)."""

import sys

from lit_garbage.evaluation.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
