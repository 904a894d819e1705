"""`python scripts/cv.py ARGS` is `python -m references.cv ARGS` (see its --help), from a checkout."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's root: references/ is not installed

from references.cv import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
