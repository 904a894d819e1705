"""`lit-garbage serve` (alias `scripts/serve_demo.py`): the browser demo of an export, served locally.

Exit status: 0 stopped with Ctrl-C; 2 the export or the page's files are missing, or the port is taken.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from lit_garbage.checks import Rule, whole
from lit_garbage.serve.demo import DemoError, make_server

EPILOG = """examples:
  # serve the demo for an export on http://127.0.0.1:8000/
  lit-garbage serve --export runs/demo/export

  # another port, reachable from other machines on the network (phones: the camera needs https or localhost)
  lit-garbage serve --export runs/demo/export --port 8080 --host 0.0.0.0

  # pick a free port and print the address
  lit-garbage serve --export runs/demo/export --port 0

  # the options as a file (--print_config writes one)
  lit-garbage serve --config serve.yaml

The export must hold tfjs/model.json (run scripts/export_all.py with the tfjs format) and labels.txt /
metadata.json. The page loads TensorFlow.js from node_modules (`npm ci --prefix lit_garbage/inference/tfjs` once; `make` does).
"""


@dataclass
class ServeConfig:
    """what to serve, where"""

    export: Path
    """export folder holding tfjs/model.json, labels.txt and metadata.json"""
    port: int = 8000
    """port (0: any free port)"""
    host: str = "127.0.0.1"
    """address to bind (127.0.0.1: this machine only)"""
    quiet: bool = False
    """no request log"""


SERVE_RULES = (Rule("port", *whole(0, 65535), hint=lambda v: " (0: any free port)"),)


def build_parser():
    from lit_garbage.commands.parsing import config_parser

    return config_parser(
        ServeConfig, prog="lit-garbage serve",
        description="Serve the browser demo: drop or pick a photo (or use the camera) and see the top 3 garbage\n"
                    "classes, computed in the browser by the exported TensorFlow.js model.",
        epilog=EPILOG)


def main(argv: list[str] | None = None) -> int:
    from lit_garbage.commands.parsing import config_problems, make_config

    parser = build_parser()
    args = parser.parse_args(argv)
    broken = config_problems(parser, argv, args, SERVE_RULES)
    if broken:
        print(f"error: {broken[0]}", file=sys.stderr)
        return 2
    config = make_config(parser, args, ServeConfig)
    try:
        server = make_server(config.export, config.host, config.port, config.quiet)
    except DemoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: cannot listen on {config.host}:{config.port}: {err.strerror or err}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    print(f"serving the demo for {config.export.resolve()} at http://{shown}:{port}/  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
