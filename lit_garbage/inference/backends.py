"""One way to run any model file: `load_backend(path).predict(images)`.

    backend = load_backend("runs/x/export/model_int8.tflite")
    probs = backend.predict(images)          # images: float32 NCHW RGB in [0, 1], shape (N, 3, S, S)
    backend.class_names, backend.image_size  # from the checkpoint, the export's metadata.json or the file itself

The kind is chosen from the path (the runtimes of `lit_garbage.formats`, which also name each kind's backend
class): a Lightning `.ckpt` or an export's `model.safetensors` (torch), `.onnx` (onnxruntime), a SavedModel folder
(TensorFlow), `.tflite` (LiteRT's `ai_edge_litert` interpreter) or a TFJS graph model (`model.json` or its
folder; run in Node with the wasm backend by `tfjs/tfjs_predict.mjs`).
Every backend takes the same NCHW input, so callers never deal with layouts; NHWC formats are transposed inside.

Class names and image size: a checkpoint holds them; an exported file takes them from the export's
metadata.json beside it, else from the metadata inside the file (`lit_garbage.artifacts.read_facts`), else
the names are class_0 .. class_N-1 and `names_source` says so (`has_class_names` is False).

Opening a file never runs its code (`lit_garbage.safe_loading`): checkpoints are read with `weights_only=True`, a
SavedModel's ops are checked against what this project's exports contain before TensorFlow loads it, a TFJS
model's weight files must lie in its folder; a refusal is an `UnsafeModelFileError` naming the file and what
was found.

Errors: `ModelFileError` for a file that is missing, corrupted or not a model of this project;
`BackendUnavailableError` when the runtime itself is missing (e.g. no `node`, no `npm ci`).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from lit_garbage.artifacts import MAX_CLASSES, FactsError, check_facts, locate_metadata, read_facts
from lit_garbage.formats import RUNTIMES, implementation, runtime_of
from lit_garbage.inference import node_runtime
from lit_garbage.safe_loading import (
    EXPORT_OPS,
    UnsafeFileError,
    check_saved_model,
    check_tfjs_weight_paths,
    load_torch_file,
)

KINDS = tuple(RUNTIMES)  # torch, onnx, saved_model, tflite, tfjs: the runtimes of `lit_garbage.formats`


class ModelFileError(ValueError):
    """The model file is missing, unreadable, corrupted or of the wrong kind."""


class UnsafeModelFileError(ModelFileError, UnsafeFileError):
    """The model file holds code that loading or running it would execute (or names files outside itself): refused
    before any runtime sees it; the message names the file and what was found."""


class BackendUnavailableError(RuntimeError):
    """The runtime a backend needs is not installed here (the model file itself may be fine)."""


class Backend(ABC):
    """A loaded model: NCHW float32 [0, 1] images in, softmax probabilities (N, C) out."""

    kind: str
    # Where class_names came from: "checkpoint", "metadata.json", "the model file's own metadata" or NO_NAMES
    # (then they are class_0 .. class_N-1).
    names_source: str = "checkpoint"

    def __init__(self, path: Path, class_names: list[str], image_size: int) -> None:
        self.path = path
        self.class_names = list(class_names)
        self.image_size = int(image_size)

    @property
    def has_class_names(self) -> bool:
        return self.names_source != NO_NAMES

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C) float32 for images (N, 3, S, S) float32 RGB in [0, 1]."""
        return self._predict(self._check(images))

    def timed_predict(self, images: np.ndarray, warmup: int = 1) -> tuple[np.ndarray, float]:
        """(probabilities, mean milliseconds per image), running one image at a time after `warmup` runs."""
        images = self._check(images)
        for _ in range(warmup):
            self._predict(images[:1])
        rows = []
        start = time.perf_counter()
        for i in range(len(images)):
            rows.append(self._predict(images[i:i + 1]))
        elapsed = time.perf_counter() - start
        return np.concatenate(rows), 1000.0 * elapsed / max(len(images), 1)

    def _check(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        expected = (3, self.image_size, self.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"{self.kind} model {self.path.name} expects images of shape (N, {', '.join(map(str, expected))}) "
                             f"(NCHW float32 RGB in [0, 1]), got {images.shape}")
        return np.ascontiguousarray(images, dtype=np.float32)

    @abstractmethod
    def _predict(self, images: np.ndarray) -> np.ndarray: ...

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path} {self.num_classes} classes, {self.image_size}px>"


def _nhwc(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1))


# ---------------------------------------------------------------- torch


def load_classifier(path: str | Path):
    """(GarbageClassifier in eval mode, checkpoint dict without weights) from a Lightning checkpoint.

    The file is read once and unpickled once, with `weights_only=True` (`lit_garbage.safe_loading`): a checkpoint
    holding Python objects is refused naming them. The model is rebuilt without the initial-weights options its
    hyper-parameters name (`lit_garbage.training.checkpoints`): loading a checkpoint opens no other file."""
    from lit_garbage.training.checkpoints import classifier_from_checkpoint

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"checkpoint not found: {path}")
    data = path.read_bytes()
    try:
        ckpt = load_torch_file(path, data)
    except UnsafeFileError as err:
        raise UnsafeModelFileError(str(err)) from None
    except Exception as err:  # RuntimeError (zip reader), EOFError, ...
        raise ModelFileError(f"{path} is not a readable PyTorch checkpoint (corrupted or truncated?): "
                             f"{type(err).__name__}: {str(err)[:200]}") from None
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or "class_names" not in hparams or "state_dict" not in ckpt:
        raise ModelFileError(f"{path} is a PyTorch file but not a lit_garbage GarbageClassifier checkpoint "
                             "(no 'state_dict' / 'hyper_parameters.class_names'); pass the model.ckpt of a "
                             "`lit-garbage fit` run")
    try:
        module = classifier_from_checkpoint(ckpt, path)
    except Exception as err:  # shape mismatches, unknown hyper-parameters
        raise ModelFileError(f"{path} does not match the GarbageClassifier model: "
                             f"{type(err).__name__}: {str(err)[:300]}") from None
    info = {k: v for k, v in ckpt.items() if k not in ("state_dict", "optimizer_states", "loops", "callbacks")}
    return module, info


def load_safetensors_classifier(path: str | Path):
    """(GarbageClassifier in eval mode, the facts its header carries) from an export's model.safetensors."""
    from lit_garbage.training.checkpoints import (
        CheckpointError,
        classifier_from_safetensors,
    )

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"weights file not found: {path}")
    try:
        return classifier_from_safetensors(path)
    except CheckpointError as err:
        raise ModelFileError(str(err)) from None
    except Exception as err:  # noqa: BLE001 - hyper-parameters the model refuses
        raise ModelFileError(f"{path} does not match the GarbageClassifier model: "
                             f"{type(err).__name__}: {str(err)[:300]}") from None


def torch_outputs(module) -> int | None:
    """The classifier's number of outputs (its last Linear layer), None if it has none."""
    import torch

    last = [m for m in module.net.modules() if isinstance(m, torch.nn.Linear)]
    return last[-1].out_features if last else None


class TorchBackend(Backend):
    kind = "torch"

    def __init__(self, path: Path, threads: int | None = None, module=None) -> None:
        """Load the checkpoint at `path`, or wrap an already loaded `module` (a GarbageClassifier) from it."""
        import torch

        from lit_garbage.models.network import Probabilities

        self.checkpoint = {}
        if module is None and Path(path).suffix.lower() == ".safetensors":
            module, _ = load_safetensors_classifier(path)
            self.names_source = "the model file's own metadata"
        elif module is None:
            module, self.checkpoint = load_classifier(path)
        try:
            names, size = check_facts(list(module.hparams.class_names), module.hparams.image_size,
                                      outputs=torch_outputs(module), source=f"{path}: its hyper-parameters")
        except FactsError as err:
            raise ModelFileError(str(err)) from None
        super().__init__(Path(path), names, size)
        self.module = module.eval()
        self.graph = Probabilities(module.net).eval()
        self._torch = torch
        if threads:
            torch.set_num_threads(threads)

    def _predict(self, images: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.graph(self._torch.from_numpy(images)).numpy()


# ---------------------------------------------------------------- exported formats


NO_NAMES = "none: the file carries no class names and no metadata.json lies beside it"


def _names_and_size(path: Path, kind: str, image_size: int | None, outputs: int):
    """(class names, image size, where the names came from): the export's metadata.json beside the file first,
    else the facts inside the file itself (`read_facts`: a file copied alone still knows them); checked once by
    `artifacts.check_facts` against the model's own input size and outputs, whatever the format."""
    found = locate_metadata(path)
    try:
        if found is not None:
            meta, source = found[0], "metadata.json"
            where = f"{found[1] / 'metadata.json'}"
        else:
            meta, source = read_facts(path) or {}, "the model file's own metadata"
            where = f"{path}: {source}"
        if not isinstance(meta, dict):
            meta = {}
        check_facts(None, image_size, source=f"{path}: the model's input shape")  # a forged static shape
        names, size = check_facts(meta.get("class_names"), meta.get("image_size"), outputs=outputs,
                                  input_size=image_size, source=where)
    except FactsError as err:
        raise ModelFileError(str(err)) from None
    size = size or image_size
    if size is None:
        raise ModelFileError(f"cannot tell the input size of {kind} model {path}: no metadata.json beside it, "
                             "none inside it and no static input shape")
    if names is None:
        return [f"class_{i}" for i in range(outputs)], int(size), NO_NAMES
    return names, int(size), source


def _outputs(path: Path, dim) -> int:
    """The model's number of classes, from its output shape's last axis."""
    if not isinstance(dim, (int, np.integer)) or not 2 <= int(dim) <= MAX_CLASSES:
        raise ModelFileError(f"{path}: the model's output has {dim} classes (expected a fixed number from 2 to "
                             f"{MAX_CLASSES:,})")
    return int(dim)


class OnnxBackend(Backend):
    kind = "onnx"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise ModelFileError(f"{path} is not a loadable ONNX model: {str(err)[:300]}") from None
        inp = self.session.get_inputs()[0]
        out = self.session.get_outputs()[0]
        if len(inp.shape) != 4 or inp.shape[1] != 3:
            raise ModelFileError(f"{path}: expected an NCHW RGB image input, found {inp.name} {inp.shape}")
        self.input_name = inp.name
        static = inp.shape[2] if isinstance(inp.shape[2], int) else None
        names, size, self.names_source = _names_and_size(path, self.kind, static, _outputs(path, out.shape[-1]))
        super().__init__(path, names, size)

    def _predict(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: images})[0]


class SavedModelBackend(Backend):
    kind = "saved_model"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import tensorflow as tf

        if threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
            except RuntimeError:
                pass  # already initialised
        try:  # read as data first: a SavedModel is a program, run only if it does nothing but tensor maths
            check_saved_model(path, allowed=EXPORT_OPS)
        except UnsafeFileError as err:
            raise UnsafeModelFileError(str(err)) from None
        except ValueError as err:
            raise ModelFileError(str(err)) from None
        try:
            loaded = tf.saved_model.load(str(path))
            fn = loaded.signatures["serving_default"]
        except KeyError:
            raise ModelFileError(f"{path} has no 'serving_default' signature") from None
        except Exception as err:
            raise ModelFileError(f"{path} is not a loadable TensorFlow SavedModel: {str(err)[:300]}") from None
        self._loaded, self._fn, self._tf = loaded, fn, tf
        (self.input_name, spec), = fn.structured_input_signature[1].items()
        if spec.shape.rank != 4 or spec.shape[-1] != 3:
            raise ModelFileError(f"{path}: expected an NHWC RGB image input, found {self.input_name} {spec.shape}")
        out_spec = next(iter(fn.structured_outputs.values()))
        names, size, self.names_source = _names_and_size(path, self.kind, spec.shape[1],
                                                         _outputs(path, out_spec.shape[-1]))
        super().__init__(path, names, size)

    def _predict(self, images: np.ndarray) -> np.ndarray:
        out = self._fn(**{self.input_name: self._tf.constant(_nhwc(images))})
        return next(iter(out.values())).numpy()


class TFLiteBackend(Backend):
    """LiteRT interpreter; handles the dynamic batch axis and int8/uint8 input/output tensors."""

    kind = "tflite"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads or os.cpu_count() or 1)
            self.interpreter.allocate_tensors()
        except Exception as err:
            raise ModelFileError(f"{path} is not a loadable TFLite model: {str(err)[:300]}") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        shape = self.input["shape"]
        if len(shape) != 4 or shape[-1] != 3:
            raise ModelFileError(f"{path}: expected an NHWC RGB image input, found {shape}")
        self._batch = int(shape[0])
        names, size, self.names_source = _names_and_size(path, self.kind, int(shape[1]),
                                                         _outputs(path, int(self.output["shape"][-1])))
        super().__init__(path, names, size)

    def _predict(self, images: np.ndarray) -> np.ndarray:
        x = _nhwc(images)
        if len(x) != self._batch:
            self.interpreter.resize_tensor_input(self.input["index"], list(x.shape))
            self.interpreter.allocate_tensors()
            self._batch = len(x)
            self.output = self.interpreter.get_output_details()[0]
        dtype = self.input["dtype"]
        if dtype != np.float32:  # integer input: quantise with the tensor's own scale / zero point
            scale, zero = self.input["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])
        if self.output["dtype"] != np.float32:
            scale, zero = self.output["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32, copy=False)


MAX_MODEL_JSON_BYTES = 64 * 2**20  # the graph only (weights are in shards): ~100 KB for MobileNetV2


def tfjs_facts(model_json: Path) -> tuple[list[str], int, str]:
    """(class names, image size, where the names came from) of a TFJS graph model, read as data and checked as
    every backend checks them (`_names_and_size`); the demo server validates an export with it too."""
    try:
        if model_json.stat().st_size > MAX_MODEL_JSON_BYTES:
            raise ValueError(f"over {MAX_MODEL_JSON_BYTES // 2**20} MiB")
        spec = json.loads(model_json.read_text())
        inputs = spec["signature"]["inputs"] if "signature" in spec else spec["userDefinedMetadata"]["signature"]["inputs"]
        (in_spec,) = inputs.values()
        dims = [int(d["size"]) for d in in_spec["tensorShape"]["dim"]]
        outputs = spec.get("signature", {}).get("outputs") or spec["userDefinedMetadata"]["signature"]["outputs"]
        out_dims = [int(d["size"]) for d in next(iter(outputs.values()))["tensorShape"]["dim"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, StopIteration) as err:
        raise ModelFileError(f"{model_json} is not a TFJS graph model with an image signature "
                             f"({type(err).__name__}: {str(err)[:200]})") from None
    if len(dims) != 4 or dims[-1] != 3:
        raise ModelFileError(f"{model_json}: expected an NHWC RGB image input, found {dims}")
    try:  # the runner checks the same before it reads a byte
        check_tfjs_weight_paths(model_json, spec)
    except UnsafeFileError as err:
        raise UnsafeModelFileError(str(err)) from None
    static = dims[1] if dims[1] > 0 else None
    return _names_and_size(model_json, "tfjs", static, _outputs(model_json, out_dims[-1]))


def _runner_cause(stderr: str) -> str:
    """The runner's own error in one line (Node prints the message, then a stack trace)."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip() and not ln.strip().startswith("at ")]
    errors = [ln for ln in lines if "Error" in ln or ln.lower().startswith("error")]
    return ((errors or lines or ["no message"])[-1])[:300]


class TFJSBackend(Backend):
    """The TFJS graph model run by `node tfjs/tfjs_predict.mjs` (wasm backend) in a subprocess."""

    kind = "tfjs"

    def __init__(self, path: Path, threads: int | None = None, node: str | None = None) -> None:
        model_json = path / "model.json" if path.is_dir() else path
        names, size, self.names_source = tfjs_facts(model_json)
        super().__init__(model_json, names, size)
        self.node = node or node_runtime.node_executable()
        self.runner = node_runtime.runner()
        self.node_modules = node_runtime.node_modules()
        self.last_latency_ms: float | None = None
        self.last_metadata: dict | None = None
        self.check_runtime()

    def check_runtime(self) -> None:
        if not self.node:
            raise BackendUnavailableError("`node` was not found on PATH; TFJS models run in Node.js 18+ "
                                          f"(install Node, then {node_runtime.install_hint()})")
        if not self.runner.is_file():
            raise BackendUnavailableError(f"the TFJS runner {self.runner} is missing (set {node_runtime.RUNNER_ENV})")
        wasm = self.node_modules / "@tensorflow" / "tfjs-backend-wasm"
        if not wasm.is_dir():
            raise BackendUnavailableError(f"{wasm} is missing: {node_runtime.install_hint()}")

    def _run(self, images: np.ndarray, warmup: int) -> tuple[np.ndarray, float]:
        x = _nhwc(images)
        try:
            tmp_dir = tempfile.TemporaryDirectory(prefix="lit-garbage-tfjs-")
        except OSError as err:
            raise BackendUnavailableError(f"cannot make a temporary folder for the TFJS runner in "
                                          f"{tempfile.gettempdir()}: {err.strerror or err} (set TMPDIR)") from None
        with tmp_dir as tmp:
            inp, out = Path(tmp) / "images.f32", Path(tmp) / "result.json"
            try:
                x.astype("<f4").tofile(inp)
            except OSError as err:  # a full TMPDIR: a line, not a traceback
                raise BackendUnavailableError(f"cannot write the images for the TFJS runner in {tmp}: "
                                              f"{err.strerror or err} (free space, or set TMPDIR)") from None
            cmd = [self.node, str(self.runner), "--node-modules", str(self.node_modules), "--model", str(self.path),
                   "--input", str(inp),
                   "--shape", ",".join(map(str, x.shape)), "--output", str(out), "--warmup", str(warmup)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            except FileNotFoundError:
                raise BackendUnavailableError(f"cannot execute node at {self.node}") from None
            except subprocess.TimeoutExpired:
                raise ModelFileError(f"{self.path}: the TFJS runner did not finish in 600 s") from None
            if proc.returncode != 0:
                raise ModelFileError(f"{self.path}: the TFJS runner failed: {_runner_cause(proc.stderr)}")
            try:
                result = json.loads(out.read_text())
                probs = np.asarray(result["probabilities"], dtype=np.float32).reshape(result["shape"])
                self.last_latency_ms = float(result["latency_ms_per_image"])
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise ModelFileError(f"{self.path}: the TFJS runner gave no usable result "
                                     f"({type(err).__name__}: {str(err)[:200]})") from None
        if probs.shape != (len(x), self.num_classes):
            raise ModelFileError(f"{self.path}: the model gave outputs of shape {probs.shape} for {len(x)} images "
                                 f"of {self.num_classes} classes (model.json's signature does not match its graph)")
        self.last_metadata = result.get("metadata")  # GraphModel.metadata as tfjs loaded it
        return probs, self.last_latency_ms

    def _predict(self, images: np.ndarray) -> np.ndarray:
        return self._run(images, warmup=0)[0]

    def timed_predict(self, images: np.ndarray, warmup: int = 1) -> tuple[np.ndarray, float]:
        # Timed inside Node (per image, batch 1), so process start-up and file transfer are not counted.
        return self._run(self._check(images), warmup=warmup)


# ---------------------------------------------------------------- dispatch


def detect_kind(path: str | Path) -> str:
    """Which backend a path needs: torch, onnx, saved_model, tflite or tfjs."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if not path.is_dir() and not path.is_file():  # a runtime opening a FIFO waits forever, /dev/zero never ends
        raise ModelFileError(f"{path} is not a regular file (a FIFO, device or socket); pass the model file itself")
    runtime = runtime_of(path)
    if runtime is not None:
        return runtime.kind
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder but neither a SavedModel (saved_model.pb) nor a TFJS model (model.json)")
    raise ModelFileError(f"unknown model file type: {path} (expected .ckpt, an export's model.safetensors, .onnx, "
                         ".tflite, a SavedModel folder or a TFJS model.json)")


class FlipTTA(Backend):
    """Test-time augmentation: the mean of the probabilities of each image and of its mirror image.

    Wraps any backend (same input contract); costs two model calls per image. Training flips images
    horizontally, so the mirror image is as likely an input as the original.
    """

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner.path, inner.class_names, inner.image_size)
        self.inner = inner
        self.kind = inner.kind
        self.names_source = inner.names_source

    def __getattr__(self, name: str):  # backend-specific attributes (e.g. the torch checkpoint)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _predict(self, images: np.ndarray) -> np.ndarray:
        mirrored = np.ascontiguousarray(images[..., ::-1])
        return (self.inner._predict(images) + self.inner._predict(mirrored)) / 2


def load_backend(path: str | Path, kind: str | None = None, threads: int | None = None, tta: bool = False) -> Backend:
    """Load any model file of this project; `kind` overrides the detection from the path; `tta` wraps it
    in `FlipTTA`."""
    path = Path(path)
    kind = kind or detect_kind(path)
    if kind not in RUNTIMES:
        raise ValueError(f"unknown backend kind '{kind}', expected one of {', '.join(KINDS)}")
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if not path.is_dir() and not path.is_file():
        raise ModelFileError(f"{path} is not a regular file (a FIFO, device or socket); pass the model file itself")
    runtime = RUNTIMES[kind]
    if path.name in runtime.folder_files:  # a SavedModel's saved_model.pb: the model is its folder
        path = path.parent
    backend = implementation(runtime.backend)(path, threads=threads)
    return FlipTTA(backend) if tta else backend
