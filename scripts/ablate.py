"""`python scripts/ablate.py ARGS` is `lit-garbage ablate ARGS` (see `lit-garbage ablate --help`)."""

import sys

from lit_garbage.commands.main import main

if __name__ == "__main__":
    sys.exit(main(["ablate", *sys.argv[1:]]))
