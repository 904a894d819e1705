"""Training throughput of the seed recipe on one GPU: `python scripts/bench_gpu.py [--data ROOT]`.

See `--help`; the work is done by `lit_garbage.lab.bench_gpu`.
"""

import sys

from lit_garbage.lab.bench_gpu import main

if __name__ == "__main__":
    sys.exit(main())
