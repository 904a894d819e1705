"""What the reliability tests share: real subprocess runs of `lit-garbage fit`, bounded runs, forged checkpoint
state and a tiny real ONNX export."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tests.conftest import REPO
from tests.forged_files import call_main, edit_checkpoint, model_checkpoint_state  # noqa: F401 - shared with the safety tests


def env(**extra) -> dict:
    """The environment of a child run: one thread (bit-exact CPU kernels), quiet TensorFlow, this checkout first."""
    e = {k: v for k, v in os.environ.items() if k not in ("LIT_GARBAGE_RUN_DIR", "LIT_GARBAGE_RESUME_FROM")}
    e.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0", TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=os.pathsep.join([str(REPO), e.get("PYTHONPATH", "")]))
    e.update(extra)
    return e


def fit_cmd(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / "fit.py"), *map(str, args)]


def _default_sigint() -> None:
    # A child of a non-interactive shell's background job inherits SIGINT = SIG_IGN (Python then installs no
    # KeyboardInterrupt handler): give the child the disposition a user's terminal gives it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen(cmd: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, env=kw.pop("env", env()), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="backslashreplace",
                            preexec_fn=kw.pop("preexec_fn", _default_sigint), **kw)


def wait_for(condition, proc: subprocess.Popen | None = None, timeout: float = 300) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc is not None and proc.poll() is not None:
            return condition()
        time.sleep(0.05)
    return False


def rss_mb(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) // 1024
    except (OSError, IndexError, ValueError):
        return 0


def run_bounded(cmd: list[str], seconds: float, max_rss_mb: int = 2000) -> tuple[int | None, str, str]:
    """Run `cmd`; kill it after `seconds` or above `max_rss_mb` resident memory.
    Returns (exit code or None when killed, why it was killed or "", output)."""
    proc = popen(cmd)
    deadline = time.monotonic() + seconds
    why = ""
    while proc.poll() is None:
        if time.monotonic() > deadline:
            why = f"still running after {seconds:.0f} s"
        elif rss_mb(proc.pid) > max_rss_mb:
            why = f"resident memory above {max_rss_mb} MB"
        if why:
            proc.kill()
            break
        time.sleep(0.2)
    out, _ = proc.communicate()
    return (None if why else proc.returncode), why, out


def add_non_utf8_photo(root: Path, name: bytes, folder: str = "battery") -> str:
    """A new photo under ROOT/folder whose file name is the bytes `name` (not UTF-8); returns its path as str.

    It is a class photo with one pixel changed, a photo of its own rather than an exact copy."""
    from PIL import Image

    src = sorted((root / folder).iterdir())[0]
    dst = os.path.join(os.fsencode(root / folder), name)
    with Image.open(src) as im:
        im = im.convert("RGB")
        im.putpixel((0, 0), (255, 0, 255))
        im.save(dst, format="JPEG", quality=95)
    return os.fsdecode(dst)


def can_mount() -> bool:
    """Whether this process may make a private mount namespace (`unshare -m`: root, or user namespaces)."""
    if shutil.which("unshare") is None:
        return False
    for cmd in (["unshare", "-m", "true"], ["unshare", "-rm", "true"]):
        if subprocess.run(cmd, capture_output=True).returncode == 0:
            return True
    return False


def in_mount_namespace(shell: str, **kw) -> subprocess.CompletedProcess:
    """Run a shell script in a private mount namespace (its mounts vanish with it)."""
    flags = "-m" if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0 else "-rm"
    return subprocess.run(["unshare", flags, "sh", "-c", shell], cwd=REPO, env=kw.pop("env", env()),
                          capture_output=True, text=True, errors="backslashreplace", **kw)


def tiny_onnx_export(folder: Path, class_names: list[str], image_size: int, checkpoint: Path, manifest: Path) -> Path:
    """An export folder as `lit-garbage export` leaves it (model.onnx + metadata.json + labels.txt), with a small
    real ONNX classifier instead of MobileNetV2 so that building it takes no time."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from lit_garbage.artifacts import build_metadata, write_metadata
    from lit_garbage.files import sha256_file

    folder.mkdir(parents=True)
    n = len(class_names)
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(3, n)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, image_size, image_size])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", n])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    # As exports made before metadata.json recorded the dataset root: the root comes from the checkpoint it names.
    meta = build_metadata(class_names=class_names, image_size=image_size, normalisation={"mean": [0] * 3, "std": [1] * 3},
                          formats=["onnx"], checkpoint=checkpoint, checkpoint_sha256=sha256_file(checkpoint),
                          manifest=manifest,
                          manifest_sha256=None, training=None, calibration=None, backbone="tiny")
    write_metadata(folder, meta)
    return folder / "model.onnx"
