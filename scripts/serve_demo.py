"""`python scripts/serve_demo.py ARGS` is `lit-garbage serve ARGS` (see `lit-garbage serve --help`)."""

import sys

from lit_garbage.commands.main import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
