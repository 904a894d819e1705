"""`python scripts/evaluate.py ARGS` is `lit-garbage evaluate ARGS` (see `lit-garbage evaluate --help`)."""

import sys

from lit_garbage.commands.main import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
