"""`python scripts/export_all.py ARGS` is `lit-garbage export ARGS` (see `lit-garbage export --help`)."""

import sys

from lit_garbage.commands.main import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
