"""The seed recipe trained by this project and by the seed's Keras code, side by side:
`python scripts/compare_keras.py [--data ROOT] [--seeds 0 1 2]`. See `--help`; the work is done by
`lit_garbage.lab.compare_keras`."""

import sys

from lit_garbage.lab.compare_keras import main

if __name__ == "__main__":
    sys.exit(main())
