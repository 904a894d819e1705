"""Hostile requests to the demo server, and hostile exports given to `serve`.

The server only ever hands out the export's own allow-listed files (never the weights, verify.json, a user's
file or a dotfile beside them), answers every malformed request with a 4xx and no traceback, and refuses at
start an export whose files disagree or a port that cannot be. A hand-made TFJS export (model.json with its
signature, one shard) and a stand-in node_modules keep these tests to milliseconds.
"""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path

import pytest

from lit_garbage.commands import serve as sv
from lit_garbage.serve.demo import DemoError, make_server

CLASSES = ["glass", "metal", "paper"]


def fake_export(root: Path, classes=CLASSES, outputs: int | None = None, size: int = 64) -> Path:
    export = root / "export"
    tfjs = export / "tfjs"
    tfjs.mkdir(parents=True)
    dims = lambda *d: {"dim": [{"size": str(x)} for x in d]}  # noqa: E731
    spec = {"format": "graph-model", "modelTopology": {"node": []},
            "weightsManifest": [{"paths": ["group1-shard1of1.bin"], "weights": []}],
            "signature": {"inputs": {"images:0": {"name": "images:0", "dtype": "DT_FLOAT",
                                                  "tensorShape": dims(-1, size, size, 3)}},
                          "outputs": {"Identity:0": {"name": "Identity:0", "dtype": "DT_FLOAT",
                                                     "tensorShape": dims(-1, outputs or len(classes))}}}}
    (tfjs / "model.json").write_text(json.dumps(spec))
    (tfjs / "group1-shard1of1.bin").write_bytes(b"\0" * 16)
    (export / "metadata.json").write_text(json.dumps({"class_names": classes, "image_size": size}))
    (export / "labels.txt").write_text("".join(f"{c}\n" for c in classes))
    (export / "model.safetensors").write_bytes(b"weights: never served")
    (export / "verify.json").write_text("{}")
    (export / "notes.txt").write_text("a user's file")
    (tfjs / ".hidden").write_text("a dotfile")
    return export


@pytest.fixture
def node_modules(tmp_path) -> Path:
    nm = tmp_path / "node_modules"
    for name in ("tfjs", "tfjs-backend-wasm"):
        (nm / "@tensorflow" / name / "dist").mkdir(parents=True)
    (nm / "@tensorflow" / "tfjs" / "dist" / "tf.min.js").write_text("// tfjs")
    (nm / "@tensorflow" / "tfjs" / "package.json").write_text("{}")
    os.symlink("loop", nm / "@tensorflow" / "tfjs" / "dist" / "loop")  # a link loop
    return nm


def _get(server, path: str) -> tuple[int, bytes]:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.putrequest("GET", path, skip_host=False, skip_accept_encoding=True)
    conn.endheaders()
    response = conn.getresponse()
    return response.status, response.read()


@pytest.fixture
def served(tmp_path, node_modules):
    import threading

    server = make_server(fake_export(tmp_path), port=0, quiet=True, node_modules=node_modules)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


ALLOWED = ["/", "/index.html", "/app.js", "/model/tfjs/model.json", "/model/tfjs/group1-shard1of1.bin",
           "/model/labels.txt", "/model/metadata.json", "/vendor/tfjs/tf.min.js"]
REFUSED = [
    "/model/tfjs/../model.safetensors", "/model/tfjs/%2e%2e/model.safetensors", "/model/tfjs/%2E%2E/model.safetensors",
    "/model/tfjs/%2e%2e%2fmodel.safetensors", "/model/tfjs/..%2fmodel.safetensors", "/model/tfjs/%252e%252e/x",
    "/model/tfjs/..\\model.safetensors", "/model/tfjs/%5c..%5cmodel.safetensors", "/model/tfjs\\../model.safetensors",
    "/model//model.safetensors", "/model/tfjs//model.json", "/model/./tfjs/model.json",
    "/model/model.safetensors", "/model/verify.json", "/model/notes.txt", "/model/tfjs/.hidden",
    "/model/tfjs/%2ehidden", "/model/tfjs/", "/model/tfjs", "/model/", "/vendor/tfjs/../package.json",
    "/vendor/tfjs/%2e%2e/package.json", "/vendor/other/x.js", "/../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
    "/model/tfjs/model.json%00", "/model/%ff", "/vendor/tfjs/loop", "/vendor/tfjs/loop/x",
    "/model/tfjs/" + "a" * 300, "/" + "b" * 300, "/vendor/tfjs/" + "c" * 300 + "/x.js", "/" + "%e2%82%ac" * 90,
]


def test_the_server_serves_only_the_exports_own_files(served, capfd):
    for path in ALLOWED:
        assert _get(served, path)[0] == 200, path
    for path in REFUSED:
        status, body = _get(served, path)
        assert 400 <= status < 500, f"{path}: {status}"
        assert b"never served" not in body and b"a user's file" not in body and b"dotfile" not in body, path
    # Raw requests: an absolute URI, bytes that are not UTF-8, a TLS hello, and clients that hang up mid-reply.
    import socket

    host, port = served.server_address[:2]
    for raw in (b"GET http://x/model/tfjs/../model.safetensors HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /model/tfjs/\xff\xfe HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x00\xa5\x01\x00\r\n\r\n"):
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(raw)
            reply = sock.recv(200)
            assert b"never served" not in reply and (b" 404 " in reply or b"400" in reply), (raw, reply)
    for _ in range(5):
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # close = reset
            sock.sendall(b"GET /model/tfjs/model.json HTTP/1.1\r\n\r\n")
    import time

    time.sleep(0.3)
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-2000:]


def test_serve_checks_the_export_and_its_options_before_listening(tmp_path, node_modules, capsys, monkeypatch):
    monkeypatch.setenv("LIT_GARBAGE_NODE_MODULES", str(node_modules))
    # Metadata and model disagree (3 names, 10 outputs): predict refuses it, so does serve.
    with pytest.raises(DemoError, match="3 class names for a model with 10 outputs"):
        make_server(fake_export(tmp_path / "a", outputs=10), port=0, node_modules=node_modules)
    # labels.txt (the page's fallback) disagreeing with metadata.json.
    export = fake_export(tmp_path / "b")
    (export / "labels.txt").write_text("glass\nmetal\npaper\nextra\n")
    with pytest.raises(DemoError, match="labels.txt lists 4 labels"):
        make_server(export, port=0, node_modules=node_modules)
    # Names that are not text, an absurd image size: the same checks as every backend.
    with pytest.raises(DemoError, match="class name 1"):
        make_server(fake_export(tmp_path / "c", classes=["a", 7, "c"]), port=0, node_modules=node_modules)
    with pytest.raises(DemoError, match="image_size"):
        make_server(fake_export(tmp_path / "d", size=100000), port=0, node_modules=node_modules)
    # tfjs/ a link to another folder: refused at start, not a 404 later.
    linked = fake_export(tmp_path / "e")
    os.rename(linked / "tfjs", tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", linked / "tfjs")
    with pytest.raises(DemoError, match="is a link"):
        make_server(linked, port=0, node_modules=node_modules)
    good = fake_export(tmp_path / "f")
    for port in ("99999", "-1", "65536"):
        assert sv.main(["--export", str(good), "--port", port]) == 2
        err = capsys.readouterr().err
        assert "--port must be an integer from 0 to 65,535" in err and "Traceback" not in err and err.count("\n") == 1, err
