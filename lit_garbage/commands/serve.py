"""`lit-garbage serve` (alias `scripts/serve_demo.py`): the browser demo of an export, served locally.

Exit status: 0 stopped with Ctrl-C; 2 the export or the page's files are missing, or the port is taken.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lit_garbage.checks import Rule
from lit_garbage.commands.options import option_problems, whole
from lit_garbage.serve.demo import DemoError, make_server

EPILOG = """examples:
  # serve the demo for an export on http://127.0.0.1:8000/
  lit-garbage serve --export runs/demo/export

  # another port, reachable from other machines on the network (phones: the camera needs https or localhost)
  lit-garbage serve --export runs/demo/export --port 8080 --host 0.0.0.0

  # pick a free port and print the address
  lit-garbage serve --export runs/demo/export --port 0

The export must hold tfjs/model.json (run scripts/export_all.py with the tfjs format) and labels.txt /
metadata.json. The page loads TensorFlow.js from node_modules (`npm ci --prefix lit_garbage/inference/tfjs` once; `make` does).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lit-garbage serve",
        description="Serve the browser demo: drop or pick a photo (or use the camera) and see the top 3 garbage "
                    "classes, computed in the browser by the exported TensorFlow.js model.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", required=True, type=Path, metavar="DIR",
                   help="export folder holding tfjs/model.json, labels.txt and metadata.json")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--quiet", action="store_true", help="no request log")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    broken = option_problems(args, (Rule("--port", *whole(0, 65535)),))
    if broken:
        print(f"error: {broken[0]} (0: any free port)", file=sys.stderr)
        return 2
    try:
        server = make_server(args.export, args.host, args.port, args.quiet)
    except DemoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port}: {err.strerror or err}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    print(f"serving the demo for {args.export.resolve()} at http://{shown}:{port}/  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
