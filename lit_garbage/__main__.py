"""`python -m lit_garbage ...` is `lit-garbage ...`."""

import sys

from lit_garbage.commands.main import main

sys.exit(main())
