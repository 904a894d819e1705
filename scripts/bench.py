"""`python scripts/bench.py ARGS` is `lit-garbage bench ARGS` (see `lit-garbage bench --help`)."""

import sys

from lit_garbage.commands.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
