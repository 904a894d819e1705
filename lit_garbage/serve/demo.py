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
import json
import mimetypes
import os
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


MAX_PART_BYTES = 255  # a longer path part names no file (NAME_MAX): 404 before any file-system call


def check_layout(export: Path, web: Path = WEB_DIR, node_modules: Path | None = None) -> dict[str, Path]:
    """The export's files the page may fetch (URL path under /model/ -> file), after checking the export as
    `predict` does; raise DemoError naming the first missing or inconsistent piece."""
    node_modules = node_runtime.node_modules() if node_modules is None else node_modules
    if not export.is_dir():
        raise DemoError(f"export folder {export} " + ("is not a folder" if export.exists() else "does not exist")
                        + " (make one with lit-garbage export)")
    tfjs = export / "tfjs"
    if tfjs.is_symlink():  # served files are the export's own, never another folder's
        raise DemoError(f"{tfjs} is a link to {os.readlink(tfjs)}; the demo serves only the export's own files: "
                        "copy the folder in, or export the tfjs format again")
    if not (tfjs / "model.json").is_file():
        raise DemoError(f"{export} has no tfjs/model.json: export the tfjs format "
                        f"(lit-garbage export --model RUN/model.ckpt --formats tfjs)")
    try:  # the page must only ever fetch the export's own files, and they must agree with each other
        from lit_garbage.inference.backends import ModelFileError, tfjs_facts

        names, _size, _source = tfjs_facts(tfjs / "model.json")
        spec = json.loads((tfjs / "model.json").read_text())
        check_tfjs_weight_paths(tfjs / "model.json", spec)
    except (UnsafeFileError, ModelFileError) as err:
        raise DemoError(str(err)) from None
    except (OSError, ValueError) as err:
        raise DemoError(f"{tfjs / 'model.json'} is not readable: {err}") from None
    if not (export / LABELS_FILE).is_file() and not (export / METADATA_FILE).is_file():
        raise DemoError(f"{export} has neither labels.txt nor metadata.json")
    if (export / LABELS_FILE).is_file():
        try:
            labels = (export / LABELS_FILE).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise DemoError(f"{export / LABELS_FILE} is not readable as text: {err}") from None
        if labels != names:
            raise DemoError(f"{export / LABELS_FILE} lists {len(labels)} labels, the model's metadata "
                            f"{len(names)} names for {len(names)} outputs: export again")
    files = {f"tfjs/{n}": tfjs / n for n in ["model.json", *_weight_files(spec)]}
    files.update({n: export / n for n in MODEL_FILES if (export / n).is_file()})
    for url, path in files.items():
        if path.is_symlink() or not path.is_file():
            raise DemoError(f"{path} is {'a link' if path.is_symlink() else 'missing'}; the demo serves only the "
                            "export's own files: export again")
    if not (web / "index.html").is_file():
        raise DemoError(f"the demo page {web / 'index.html'} is missing")
    for parts in VENDOR.values():
        if not node_modules.joinpath(*parts).is_dir():
            raise DemoError(f"{node_modules.joinpath(*parts)} is missing: {node_runtime.install_hint()}")
    return files


def _weight_files(spec) -> list[str]:
    return [p for group in spec.get("weightsManifest") or [] for p in group.get("paths") or []]


def url_parts(raw: str) -> list[str] | None:
    """The request path's parts, decoded once, or None when it can name no served file: `..`, `.`, dotfiles,
    empty parts (doubled separators), backslashes, NUL, undecodable bytes, parts over 255 bytes."""
    try:
        path = unquote(urlsplit(raw).path, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return None
    if not path.startswith("/") or "\\" in path or "\x00" in path:
        return None
    parts = path[1:].split("/")
    if parts == [""]:
        return []
    if any(not p or p.startswith(".") or len(p.encode("utf-8", "surrogateescape")) > MAX_PART_BYTES
           for p in parts):
        return None
    return parts


class DemoHandler(SimpleHTTPRequestHandler):
    """Maps the URL prefixes above onto their files; nothing else is reachable."""

    server_version = "lit-garbage-demo"

    def __init__(self, *args, export: Path, web: Path, node_modules: Path, quiet: bool,
                 model_files: dict[str, Path], **kwargs) -> None:
        self.export, self.web, self.node_modules, self.quiet = export, web, node_modules, quiet
        self.model_files = model_files
        super().__init__(*args, directory=str(web), **kwargs)

    def translate_path(self, path: str) -> str:
        """The file for a request path, or "" (404): resolved once, from allow-lists and fixed folders only."""
        parts = url_parts(path)
        if parts is None:
            return ""
        if parts in ([], ["index.html"]):
            return str(self.web / "index.html")
        if parts[0] == "model":  # the export: its own allow-listed files, nothing else in its folder
            found = self.model_files.get("/".join(parts[1:]))
            return str(found) if found else ""
        if parts[0] == "vendor" and len(parts) > 2 and parts[1] in VENDOR:
            base = self.node_modules.joinpath(*VENDOR[parts[1]])
            rest = parts[2:]
        elif len(parts) == 1:
            base, rest = self.web, parts
        else:
            return ""
        try:
            target = base.joinpath(*rest).resolve()
            if not target.is_relative_to(base.resolve()) or not target.is_file():  # symlinks out of the folder
                return ""
        except (OSError, RuntimeError, ValueError):  # link loops, names the file system refuses
            return ""
        return str(target)

    def handle(self) -> None:
        try:
            super().handle()
        except ConnectionError:  # the client hung up mid-reply: nothing to answer, nothing to log
            self.close_connection = True

    def send_head(self):
        try:
            path = self.translate_path(self.path)
            if not path:
                self.send_error(HTTPStatus.NOT_FOUND, "not part of the demo")
                return None
            return super().send_head()
        except ConnectionError:
            raise
        except (OSError, RuntimeError, ValueError):  # whatever a request makes of the file system: a reply
            self.send_error(HTTPStatus.BAD_REQUEST, "bad request path")
            return None

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
    if not (isinstance(port, int) and 0 <= port <= 65535):
        raise DemoError(f"--port must be from 0 to 65535 (0: any free port), got {port}")
    export = Path(export).resolve()
    node_modules = node_runtime.node_modules() if node_modules is None else node_modules
    files = check_layout(export, web, node_modules)
    handler = functools.partial(DemoHandler, export=export, web=web.resolve(), node_modules=node_modules.resolve(),
                                quiet=quiet, model_files=files)
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
