"""Recipe files that say only what differs: an overlay names the recipe it changes with `base:`.

    # configs/improved.yaml
    base: seed.yaml          # every value of configs/seed.yaml (a path relative to this file) ...
    model:
      label_smoothing: 0.1   # ... then these changes

`lit-garbage fit --config configs/improved.yaml` reads it as `--config configs/seed.yaml --config <the overlay
without its base: line>` (LightningCLI's repeated `--config`: later files change the values of earlier ones, and
nested sections merge key by key; a list, such as `trainer.callbacks`, is replaced whole). A base may itself have a
base. The resolved config a run saves (RUN/config.yaml) and `--print_config` hold every value and no `base:`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import yaml

BASE_KEY = "base"
CONFIG_FLAGS = ("--config", "-c")
MAX_DEPTH = 8  # bases of bases, at most: deeper is a cycle


class ConfigFileError(ValueError):
    """An overlay whose base cannot be read (missing, not a mapping, a cycle)."""


def _read(path: Path) -> dict | None:
    """The YAML mapping in `path`, or None for anything else (jsonargparse then reports what it is)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def config_chain(path: str | Path, _seen: tuple[Path, ...] = ()) -> list[Path]:
    """The files a config file is made of, base first: [seed.yaml, improved.yaml] for improved.yaml."""
    path = Path(path)
    data = _read(path) if path.is_file() else None
    base = None if data is None else data.get(BASE_KEY)
    if base is None:
        return [path]
    if not isinstance(base, str) or not base.strip():
        raise ConfigFileError(f"{path}: `{BASE_KEY}:` must name one config file (relative to {path.parent})")
    here = path.resolve()
    if here in _seen or len(_seen) >= MAX_DEPTH:
        raise ConfigFileError(f"{path}: `{BASE_KEY}:` files name each other in a cycle")
    base_path = path.parent / base
    if not base_path.is_file():
        raise ConfigFileError(f"{path}: its {BASE_KEY} {base_path} is not a file")
    return [*config_chain(base_path, (*_seen, here)), path]


def overlay_text(path: str | Path) -> str:
    """The content of a config file without its `base:` key, as YAML (what it changes in its base)."""
    data = _read(Path(path)) or {}
    return yaml.safe_dump({k: v for k, v in data.items() if k != BASE_KEY}, sort_keys=False)


def expand_bases(args: Sequence[str]) -> list[str]:
    """Command-line arguments with every `--config FILE` whose file has a `base:` replaced by its chain: the bases
    as files, then the overlay's own values (jsonargparse reads a `--config` value that is not a file as YAML)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        flag, value = None, None
        if arg in CONFIG_FLAGS and i + 1 < len(args):
            flag, value, i = arg, args[i + 1], i + 2
        elif arg.startswith("--config="):
            flag, value, i = "--config", arg.split("=", 1)[1], i + 1
        else:
            out.append(arg)
            i += 1
            continue
        chain = config_chain(value) if Path(value).is_file() else []
        if len(chain) < 2:  # a plain file, or YAML given on the command line
            out += [flag, value]
            continue
        out += [flag, str(chain[0])]  # the base of all: a whole recipe, read as the file it is
        for part in chain[1:]:
            out += [flag, overlay_text(part)]
    return out
