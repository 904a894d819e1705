"""`python scripts/fit.py ARGS` is `lit-garbage fit ARGS` (see `lit-garbage fit --help`)."""

import sys

from lit_garbage.commands.main import main

if __name__ == "__main__":
    sys.exit(main(["fit", *sys.argv[1:]]))
