"""Serve the browser demo for an export: `python scripts/serve_demo.py --export DIR` (see --help)."""

import sys

from lit_garbage.serve.demo import main

if __name__ == "__main__":
    sys.exit(main())
