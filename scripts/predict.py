"""`python scripts/predict.py ARGS` is `lit-garbage predict ARGS` (see `lit-garbage predict --help`)."""

import sys

from lit_garbage.commands.main import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
