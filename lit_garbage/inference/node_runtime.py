"""Where Node.js and TensorFlow.js are found: the TFJS backend runs models in Node, the browser demo serves them.

The runner (`tfjs/tfjs_predict.mjs`) and its pinned npm packages (`tfjs/package.json`, `package-lock.json`)
ship inside the package; `npm ci --prefix <that folder>` installs TensorFlow.js beside them (the Makefile
does), or `LIT_GARBAGE_NODE_MODULES` names any node_modules folder that holds the same packages.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

RUNNER_DIR = Path(__file__).resolve().parent / "tfjs"
RUNNER = RUNNER_DIR / "tfjs_predict.mjs"
RUNNER_ENV = "LIT_GARBAGE_TFJS_RUNNER"
NODE_ENV = "LIT_GARBAGE_NODE"
NODE_MODULES_ENV = "LIT_GARBAGE_NODE_MODULES"


def node_executable() -> str | None:
    return os.environ.get(NODE_ENV) or shutil.which("node")


def runner() -> Path:
    return Path(os.environ.get(RUNNER_ENV, RUNNER))


def node_modules() -> Path:
    """The node_modules folder TensorFlow.js is loaded from (it may not exist: see `install_hint`)."""
    env = os.environ.get(NODE_MODULES_ENV)
    return Path(env) if env else RUNNER_DIR / "node_modules"


def install_hint() -> str:
    deps = json.loads((RUNNER_DIR / "package.json").read_text())["dependencies"]
    pinned = " ".join(f"{name}@{version}" for name, version in deps.items())
    return (f"run `npm ci --prefix {RUNNER_DIR}` (installs {pinned}), or set {NODE_MODULES_ENV} to a "
            "node_modules folder holding them")
