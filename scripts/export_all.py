"""Export a checkpoint to every format and verify each: `python scripts/export_all.py --ckpt RUN/model.ckpt`.

See `--help` for the options and examples; the work is done by `lit_garbage.export`.
"""

import sys

from lit_garbage.export.cli import main

if __name__ == "__main__":
    sys.exit(main())
