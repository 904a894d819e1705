"""`python scripts/bench_gpu.py ARGS` is `lit-garbage bench-gpu ARGS` (see `lit-garbage bench-gpu --help`)."""

import sys

from lit_garbage.commands.main import main

if __name__ == "__main__":
    sys.exit(main(["bench-gpu", *sys.argv[1:]]))
