"""`lit-garbage fit` (alias `scripts/fit.py`): train, with every config value on the command line (LightningCLI).

    lit-garbage fit --config configs/seed.yaml --data.root PATH
    lit-garbage fit --config configs/seed.yaml --print_config     # the fully resolved config
    lit-garbage fit --help                                        # every option

Recipes other than configs/seed.yaml are overlays: `base: seed.yaml` and only what they change (e.g.
configs/improved.yaml); `--config` reads an overlay's base first (lit_garbage/training/config_files.py).
Several `--config` files apply in order, later values winning, like the options after them.

Exit status: 0 trained; 1 the dataset cannot be used (the message says why, no traceback), or a run file
cannot be written; 2 a bad option or config value (jsonargparse's and the config checks' messages), or the
run directory is in use by another process; 130 / 143 stopped by Ctrl-C / SIGTERM (a checkpoint of the
interrupted state is saved once training has started: `--run_dir RUN --resume true` continues it).
"""

from __future__ import annotations

import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from lit_garbage.data.manifest import DatasetError
    from lit_garbage.training.cli import main as fit

    try:
        return 0 if fit(list(sys.argv[1:] if argv is None else argv)) is not None else 1
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
