"""Benchmark this project against the seed's Keras recipe, side by side: `python scripts/bench.py [--quick]`.

See `--help`; the work is done by `lit_garbage.lab.bench`.
"""

import sys

from lit_garbage.lab.bench import main

if __name__ == "__main__":
    sys.exit(main())
