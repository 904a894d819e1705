"""`python scripts/import_keras.py ARGS` is `lit-garbage import-keras ARGS` (see `lit-garbage import-keras --help`)."""

import sys

from lit_garbage.commands.main import main

if __name__ == "__main__":
    sys.exit(main(["import-keras", *sys.argv[1:]]))
