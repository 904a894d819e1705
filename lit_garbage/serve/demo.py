"""The browser demo (web/) for an export, served locally (`lit-garbage serve`).

    python scripts/serve_demo.py --export runs/demo/export        # then open http://127.0.0.1:8000/

The page runs the exported TensorFlow.js model entirely in the browser; this server only hands out
static files, from three places and nowhere else:

    /                      web/ (index.html, app.js, style.css)
    /model/...             the export: tfjs/model.json + weight shards, labels.txt, metadata.json
    /vendor/tfjs/...       node_modules/@tensorflow/tfjs/dist (no CDN: works offline)
    /vendor/tfjs-backend-wasm/...   node_modules/@tensorflow/tfjs-backend-wasm/dist

Stdlib only (http.server). It binds 127.0.0.1 by default; it is a local demo server, not a
production web server.
"""

from __future__ import annotations

import functools
import mimetypes
import threading
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from lit_garbage.artifacts import LABELS_FILE, METADATA_FILE
from lit_garbage.inference import node_runtime
from lit_garbage.safe_loading import UnsafeFileError, check_tfjs_weight_paths

WEB_DIR = Path(__file__).resolve().parent / "web"  # package data: the page travels with the package
VENDOR = {
    "tfjs": ("@tensorflow", "tfjs", "dist"),
    "tfjs-backend-wasm": ("@tensorflow", "tfjs-backend-wasm", "dist"),
}
MODEL_FILES = (LABELS_FILE, METADATA_FILE)  # plus everything under tfjs/


mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("application/json", ".json")
mimetypes.add_type("application/octet-stream", ".bin")


class DemoError(RuntimeError):
    """The export or the page's files are not where the demo needs them."""


def check_layout(export: Path, web: Path = WEB_DIR, node_modules: Path | None = None) -> None:
    """Raise DemoError naming the first missing piece (export files, web/ page, node_modules)."""
    node_modules = node_runtime.node_modules() if node_modules is None else node_modules
    if not export.is_dir():
        raise DemoError(f"export folder {export} does not exist (make one with lit-garbage export)")
    if not (export / "tfjs" / "model.json").is_file():
        raise DemoError(f"{export} has no tfjs/model.json: export the tfjs format "
                        f"(lit-garbage export --model RUN/model.ckpt --formats tfjs)")
    try:  # the page must only ever fetch the export's own files
        check_tfjs_weight_paths(export / "tfjs" / "model.json")
    except UnsafeFileError as err:
        raise DemoError(str(err)) from None
    except (OSError, ValueError) as err:
        raise DemoError(f"{export / 'tfjs' / 'model.json'} is not readable: {err}") from None
    if not (export / "labels.txt").is_file() and not (export / "metadata.json").is_file():
        raise DemoError(f"{export} has neither labels.txt nor metadata.json")
    if not (web / "index.html").is_file():
        raise DemoError(f"the demo page {web / 'index.html'} is missing")
    for parts in VENDOR.values():
        if not node_modules.joinpath(*parts).is_dir():
            raise DemoError(f"{node_modules.joinpath(*parts)} is missing: {node_runtime.install_hint()}")


class DemoHandler(SimpleHTTPRequestHandler):
    """Maps the URL prefixes above onto their folders; nothing outside them is reachable."""

    server_version = "lit-garbage-demo"

    def __init__(self, *args, export: Path, web: Path, node_modules: Path, quiet: bool, **kwargs) -> None:
        self.export, self.web, self.node_modules, self.quiet = export, web, node_modules, quiet
        super().__init__(*args, directory=str(web), **kwargs)

    def translate_path(self, path: str) -> str:
        rel = unquote(urlsplit(path).path).lstrip("/")
        if rel in ("", "index.html"):
            base, rest = self.web, "index.html"
        elif rel.startswith("model/"):
            rest = rel[len("model/"):]
            if rest not in MODEL_FILES and not rest.startswith("tfjs/"):
                return ""
            base = self.export
        elif rel.startswith("vendor/"):
            name, _, rest = rel[len("vendor/"):].partition("/")
            if name not in VENDOR:
                return ""
            base = self.node_modules.joinpath(*VENDOR[name])
        else:
            base, rest = self.web, rel
        target = (base / rest).resolve()
        if not target.is_relative_to(base.resolve()):  # "..", symlinks out of the folder
            return ""
        return str(target)

    def send_head(self):
        path = self.translate_path(self.path)
        if not path or Path(path).is_dir():
            self.send_error(HTTPStatus.NOT_FOUND, "not part of the demo")
            return None
        return super().send_head()

    def end_headers(self) -> None:
        # Cross-origin isolation lets the wasm backend use threads (SharedArrayBuffer); nothing is cross-origin here.
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:
        if not self.quiet:
            super().log_message(format, *args)


def make_server(export: str | Path, host: str = "127.0.0.1", port: int = 8000, quiet: bool = False,
                web: Path = WEB_DIR, node_modules: Path | None = None) -> ThreadingHTTPServer:
    """A ready (bound, not yet serving) server for `export`; port 0 picks a free port (see server_address)."""
    export = Path(export).resolve()
    node_modules = node_runtime.node_modules() if node_modules is None else node_modules
    check_layout(export, web, node_modules)
    handler = functools.partial(DemoHandler, export=export, web=web.resolve(), node_modules=node_modules.resolve(),
                                quiet=quiet)
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_in_thread(export: str | Path, host: str = "127.0.0.1", port: int = 0, quiet: bool = True
                    ) -> tuple[ThreadingHTTPServer, str]:
    """(server, base URL) serving in a daemon thread: for tests and notebooks. Stop with server.shutdown()."""
    server = make_server(export, host, port, quiet)
    threading.Thread(target=server.serve_forever, name="lit-garbage-demo", daemon=True).start()
    h, p = server.server_address[:2]
    return server, f"http://{h}:{p}/"
