"""Installable in parts: the package works away from its source tree, and the `lite` install runs without torch.

- `.tflite` commands (predict, evaluate) import neither torch nor TensorFlow;
- a fresh venv with only `lit-garbage[lite]` (LiteRT, numpy, Pillow, scikit-learn, matplotlib) predicts what the
  full stack predicts, and evaluates to the same accuracy;
- the wheel installed (not editable) in a fresh venv finds its package data: it exports and verifies TFJS in Node
  and serves the browser demo. That venv takes the heavy stack (torch, TensorFlow) from this one through a .pth
  line, so only the package itself is installed fresh.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import urllib.request
from pathlib import Path

import pytest

from lit_garbage.commands.main import main as lit_garbage
from lit_garbage.inference.node_runtime import NODE_MODULES_ENV, node_modules

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "lightning", "timm", "torchmetrics", "tensorflow", "keras", "tf_keras", "onnx",
         "onnxruntime", "onnx2tf", "tensorflowjs")


def _bin(venv: Path, name: str) -> str:
    return str(venv / "bin" / name)


def _run(cmd, timeout=900, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs)
    assert proc.returncode == 0, f"{cmd[:4]} failed ({proc.returncode}):\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of the sources (no build files land in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for folder in ("lit_garbage", "references"):  # references/ beside the package, as in a checkout: left out
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("node_modules", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", src, "-w", out])
    (whl,) = out.glob("lit_garbage-*.whl")
    return whl


def test_the_wheel_carries_the_product_not_the_lab(wheel):
    """The lab (`references/`: benchmarks, recipe research) runs from a checkout; the wheel holds the package only."""
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("lit_garbage/commands/") for n in names)
    assert not [n for n in names if n.startswith(("references/", "lit_garbage/lab/"))]


def _predictions(path: Path) -> dict[str, list]:
    (run,) = json.loads(path.read_text())["models"].values()
    return {Path(p["path"]).name: p["top_k"] for p in run["predictions"]}


def test_tflite_commands_import_neither_torch_nor_tensorflow(tiny_export, real_smoke, tmp_path):
    blocker = textwrap.dedent(f"""
        import importlib.abc, sys
        HEAVY = {HEAVY!r}
        class Refuse(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in HEAVY:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, Refuse())
        from lit_garbage.commands.main import main
        code = main(sys.argv[1:])
        loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set(HEAVY))
        assert not loaded, loaded
        sys.exit(code)
    """)
    int8 = tiny_export["out"] / "model_int8.tflite"
    photos = sorted(real_smoke.rglob("*.jpg"))[:6]
    _run([sys.executable, "-c", blocker, "predict", "--model", int8, *photos, "--json", tmp_path / "p.json"])
    assert len(_predictions(tmp_path / "p.json")) == 6
    _run([sys.executable, "-c", blocker, "evaluate", "--model", int8, "--data.root", tiny_export["data"],
          "--out", tmp_path / "eval"])
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())
    # A checkpoint needs the train extra, and the command says so.
    proc = subprocess.run([sys.executable, "-c", blocker, "predict", "--model", str(tiny_export["ckpt"]),
                           str(photos[0])], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "pip install 'lit-garbage[train]'" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_lite_install_has_no_torch_and_predicts_like_the_full_stack(wheel, tiny_export, real_smoke, tmp_path):
    venv = tmp_path / "lite"
    _run([sys.executable, "-m", "venv", venv])
    _run([_bin(venv, "python"), "-m", "pip", "install", "-q", f"{wheel}[lite]"])
    for heavy in ("torch", "tensorflow"):
        proc = subprocess.run([_bin(venv, "python"), "-c", f"import {heavy}"], capture_output=True, text=True)
        assert proc.returncode != 0 and "No module named" in proc.stderr
    int8 = tiny_export["out"] / "model_int8.tflite"
    photos = sorted(real_smoke.rglob("*.jpg"))[::9][:20]
    args = ["predict", "--model", int8, *photos, "--top-k", "2", "--quiet", "--json"]
    _run([_bin(venv, "lit-garbage"), *args, tmp_path / "lite.json"], cwd=tmp_path)
    assert lit_garbage([str(a) for a in args] + [str(tmp_path / "full.json")]) == 0
    lite, full = _predictions(tmp_path / "lite.json"), _predictions(tmp_path / "full.json")
    assert len(lite) == 20 and lite.keys() == full.keys()
    for name in full:
        assert [t["label"] for t in lite[name]] == [t["label"] for t in full[name]], name
        assert max(abs(a["confidence"] - b["confidence"]) for a, b in zip(lite[name], full[name])) < 1e-6, name
    # evaluate: the run's test split, found through the export's metadata.json, scored the same
    evaluate = ["evaluate", "--model", int8, "--data.root", tiny_export["data"], "--out"]
    _run([_bin(venv, "lit-garbage"), *evaluate, tmp_path / "lite-eval"], cwd=tmp_path)
    assert lit_garbage([str(a) for a in evaluate] + [str(tmp_path / "full-eval")]) == 0
    scores = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("lite-eval", "full-eval")]
    assert scores[0]["splits"] == scores[1]["splits"]


@pytest.mark.slow
def test_installed_package_verifies_tfjs_and_serves_the_demo(wheel, tiny_export, tmp_path):
    venv = tmp_path / "installed"
    _run([sys.executable, "-m", "venv", venv])
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "heavy-stack.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([_bin(venv, "python"), "-m", "pip", "install", "-q", "--no-deps", wheel])
    where = _run([_bin(venv, "python"), "-c", "import lit_garbage; print(lit_garbage.__file__)"], cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout  # the installed copy, not the checkout
    env = {**os.environ, NODE_MODULES_ENV: str(node_modules()),
           "PATH": os.pathsep.join([str(venv / "bin"), str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    out = tmp_path / "export"
    _run([_bin(venv, "lit-garbage"), "export", "--model", tiny_export["ckpt"], "--formats", "tfjs", "--out", out],
         cwd=tmp_path, env=env)
    tfjs = next(b for b in json.loads((out / "verify.json").read_text())["backends"] if b["name"] == "tfjs")
    assert tfjs["status"] == "pass" and tfjs["top1_agreement"] == 1.0, tfjs
    server = subprocess.Popen([_bin(venv, "lit-garbage"), "serve", "--export", str(out), "--port", "0", "--quiet"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        url = line.split(" at ", 1)[1].split()[0]
        for page in ("", "app.js", "vendor/tfjs/tf.min.js", "model/tfjs/model.json", "model/labels.txt"):
            with urllib.request.urlopen(url + page, timeout=30) as response:
                assert response.status == 200 and response.read(), page
    finally:
        server.terminate()
        server.wait(timeout=30)
