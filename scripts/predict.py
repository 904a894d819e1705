"""Top-k predictions for images with any model file: `python scripts/predict.py --model PATH IMAGES...` (see --help)."""

import sys

from lit_garbage.serve.predict import main

if __name__ == "__main__":
    sys.exit(main())
