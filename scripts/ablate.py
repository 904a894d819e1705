"""From the faithful seed recipe to the improved one, one change per row:
`python scripts/ablate.py [--data ROOT] [--seeds 0 1 2]`. See `--help`; the work is done by `lit_garbage.lab.ablate`."""

import sys

from lit_garbage.lab.ablate import main

if __name__ == "__main__":
    sys.exit(main())
