"""`python scripts/compare_keras.py ARGS` is `lit-garbage compare-keras ARGS` (see `lit-garbage compare-keras --help`)."""

import sys

from lit_garbage.commands.main import main

if __name__ == "__main__":
    sys.exit(main(["compare-keras", *sys.argv[1:]]))
