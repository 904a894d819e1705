"""Opening a model file never runs its code: each kind of file is checked here, as data, before a loader sees it.

- PyTorch checkpoints and state dicts: `load_torch_file` is `torch.load(weights_only=True)`, always passed
  explicitly, so the environment (`TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`) cannot turn it off. A file that holds
  other Python objects is refused, naming the file and the globals it would import
  (`torch.serialization.get_unsafe_globals_in_checkpoint`). A checkpoint of this project holds only tensors
  and plain data, so no allow-list is needed. `read_state_dict` reads a weights file: `.safetensors` (tensors
  only, by design) or a torch file through `load_torch_file`.
- TensorFlow SavedModels: a SavedModel is a TensorFlow program. `check_saved_model` reads `saved_model.pb` as
  a protobuf and refuses ops that touch files, run Python, print or talk to other processes, before TensorFlow
  loads it. With `allowed` (the SavedModel backend passes `EXPORT_OPS`, the ops this project's exports
  contain) every op the signatures reach must be one of them.
- TensorFlow.js graph models: `check_tfjs_weight_paths`: every weight shard `model.json` names lies inside the
  model's folder (no `../`, no absolute path, no URL, no link out of it).
- Keras files: `lit_garbage.models.keras_backbone.check_keras_file` reads the architecture JSON and refuses
  Lambda layers and any class that is not a built-in Keras layer.

`UnsafeFileError` is what every refusal raises; the message names the file and what was found in it. Imports
are lazy: the torch-free `lite` install imports this module too.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping


class UnsafeFileError(ValueError):
    """The file holds code (or names files outside itself) that opening or running it would execute or read;
    refused. The message names the file and what was found in it."""


def inside(path: str | Path, folder: str | Path) -> bool:
    """Whether `path` lies inside `folder` once `..` and links are resolved (a URL or an empty path never does)."""
    if not path or not folder or "://" in str(path):
        return False
    try:
        return Path(path).resolve().is_relative_to(Path(folder).resolve())
    except (OSError, ValueError, RuntimeError):
        return False


# ---------------------------------------------------------------- PyTorch files


def unsafe_globals(source: str | Path | bytes) -> list[str]:
    """The globals a torch file's pickle would import beyond what `weights_only` allows ([] if none or unreadable).
    Read statically: nothing is unpickled."""
    import torch

    try:
        f = io.BytesIO(source) if isinstance(source, bytes) else str(source)
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(f))
    except Exception:  # noqa: BLE001 - not a zip checkpoint (or damaged): the loader's own error says so
        return []


def load_torch_file(path: str | Path, data: bytes | None = None, map_location: Any = "cpu") -> Any:
    """`torch.load(weights_only=True)` of `path` (or of its bytes `data`, read once by the caller).

    Raises `UnsafeFileError` naming the file and the offending globals when the pickle holds anything but
    tensors and plain data; other errors (a damaged or truncated file) are torch's own.
    """
    import pickle

    import torch

    try:
        return torch.load(io.BytesIO(data) if data is not None else path, map_location=map_location,
                          weights_only=True)
    except pickle.UnpicklingError as err:
        names = (unsafe_globals(data if data is not None else path)
                 or re.findall(r"GLOBAL (\S+) was not an allowed global", str(err)) or ["an object weights_only refuses"])
        raise UnsafeFileError(
            f"{path} holds Python objects that loading it would run ({', '.join(names)}); refused: a checkpoint of "
            "this project holds only tensors and plain data (share weights as .safetensors)") from None


# timm's order (`timm.models.load_state_dict`): the EMA weights first, then the plain ones.
_STATE_DICT_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")


def read_state_dict(path: str | Path) -> dict:
    """The tensors of a weights file: `.safetensors`, or a torch file (a plain state dict, a Lightning checkpoint,
    a timm checkpoint) read with `load_torch_file`; DDP's `module.` prefixes removed, as timm does."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:  # noqa: BLE001 - SafetensorError, OSError, ...
            raise ValueError(f"{path} is not a readable safetensors file: {type(err).__name__}: {err}") from None
    obj = load_torch_file(path)
    if isinstance(obj, Mapping):
        for key in _STATE_DICT_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds no state dict (a {type(obj).__name__})")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


# ---------------------------------------------------------------- TensorFlow SavedModels

# Every op of this project's SavedModels (onnx2tf output for MobileNetV2 / V3, EfficientNet, ResNet, ConvNeXt,
# read from real exports), plus the pure tensor maths those graphs can come to hold. None of them reads or
# writes anything but tensors.
EXPORT_OPS = frozenset({
    "Abs", "Add", "AddN", "AddV2", "ArgMax", "AvgPool", "BatchMatMulV2", "BiasAdd", "Cast", "Ceil", "ClipByValue",
    "ConcatV2", "Const", "Conv2D", "Cos", "DepthwiseConv2dNative", "Einsum", "Elu", "Equal", "Erf", "Exp",
    "ExpandDims", "Fill", "Floor", "FloorDiv", "FloorMod", "FusedBatchNormV3", "GatherV2", "Greater",
    "GreaterEqual", "Identity", "IdentityN", "LeakyRelu", "Less", "LessEqual", "Log", "LogicalAnd", "LogicalNot",
    "LogicalOr", "MatMul", "Max", "MaxPool", "Maximum", "Mean", "Min", "Minimum", "MirrorPad", "Mul", "Neg",
    "NoOp", "OnesLike", "Pack", "Pad", "PadV2", "PartitionedCall", "Placeholder", "Pow", "Prod", "Range",
    "RealDiv", "Reciprocal", "Relu", "Relu6", "Reshape", "ResizeBilinear", "ResizeNearestNeighbor", "Round",
    "Rsqrt", "Select", "SelectV2", "Selu", "Shape", "Sigmoid", "Sign", "Sin", "Size", "Slice", "Softmax",
    "Softplus", "Split", "SplitV", "Sqrt", "Square", "SquaredDifference", "Squeeze", "StatefulPartitionedCall",
    "StopGradient", "StridedSlice", "Sub", "Sum", "Tanh", "Tile", "Transpose", "Unpack", "ZerosLike",
})
# The saver's own ops: every SavedModel has them in its save / restore functions, which loading and predicting
# never call. Reached from a signature they would write or read files, so they are refused there.
SAVER_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename", "StringJoin",
                       "StaticRegexFullMatch"})
# Ops that read or write files, run Python, print or log, map memory, or talk to other processes / machines.
_DENIED_OP = re.compile(r"File|Summary|Reader|Dataset|Iterator|PyFunc|Print|Debug|Rpc|Send|Recv|Collective|Queue"
                        r"|Record|ImmutableConst|Save|Restore|Checkpoint|Table|Barrier|Stage|Accumulator|Mutex")


def _read_saved_model(folder: Path):
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    pb, pbtxt = folder / "saved_model.pb", folder / "saved_model.pbtxt"
    try:
        if pb.is_file():
            sm.ParseFromString(pb.read_bytes())
        else:
            from google.protobuf import text_format

            text_format.Parse(pbtxt.read_text(), sm)
    except Exception as err:  # noqa: BLE001 - DecodeError, ParseError, OSError
        raise ValueError(f"{folder} is not a readable SavedModel: {type(err).__name__}: {str(err)[:200]}") from None
    return sm


def _called(node, functions: Mapping[str, Any]) -> set[str]:
    """Names of the library functions a node calls (as its op, or through function-valued attributes)."""
    out = {node.op} if node.op in functions else set()
    for attr in node.attr.values():
        if attr.HasField("func"):
            out.add(attr.func.name)
        out.update(f.name for f in attr.list.func)
    return out & set(functions)


def saved_model_ops(folder: str | Path) -> dict[str, list[tuple[str, str, bool]]]:
    """op type -> [(node name, where, reached from a signature)], for every node of every graph and function."""
    sm = _read_saved_model(Path(folder))
    found: dict[str, list[tuple[str, str, bool]]] = {}
    for mg in sm.meta_graphs:
        graph = mg.graph_def
        functions = {f.signature.name: f for f in graph.library.function}
        nodes = {n.name: n for n in graph.node}
        # From every signature (serving_default, __saved_model_init_op, ...) back through the graph's inputs
        # and into every function those nodes call.
        todo = [t.name.split(":")[0].lstrip("^") for sig in mg.signature_def.values()
                for t in [*sig.outputs.values(), *sig.inputs.values()]]
        seen_nodes: set[str] = set()
        reached_functions: set[str] = set()
        pending_functions: list[str] = []
        while todo:
            name = todo.pop()
            if name in seen_nodes or name not in nodes:
                continue
            seen_nodes.add(name)
            node = nodes[name]
            todo.extend(i.split(":")[0].lstrip("^") for i in node.input)
            pending_functions.extend(_called(node, functions))
        while pending_functions:
            fname = pending_functions.pop()
            if fname in reached_functions:
                continue
            reached_functions.add(fname)
            for node in functions[fname].node_def:
                pending_functions.extend(_called(node, functions))
        for node in graph.node:
            found.setdefault(node.op, []).append((node.name, "the graph", node.name in seen_nodes))
        for fname, fn in functions.items():
            for node in fn.node_def:
                found.setdefault(node.op, []).append((node.name, f"function {fname}", fname in reached_functions))
    return found


def check_saved_model(folder: str | Path, allowed: Iterable[str] | None = None) -> None:
    """Refuse (`UnsafeFileError`) a SavedModel that would do more than compute tensors, before TensorFlow loads it.

    Refused anywhere in the file: ops that touch files, run Python, print, or talk to other processes. Refused
    when a signature reaches them: the saver's ops. With `allowed`: any op a signature reaches that is not in
    it, and any other op outside it and the saver's. A file that cannot be parsed raises ValueError.
    """
    folder = Path(folder)
    allowed = frozenset(allowed) if allowed is not None else None
    for op, where in sorted(saved_model_ops(folder).items()):
        reached = [w for w in where if w[2]]
        node, place, _ = reached[0] if reached else where[0]
        at = f"a {op} op (node {node!r} in {place})"
        if op in SAVER_OPS:
            if reached:
                raise UnsafeFileError(f"{folder}: its serving signature runs {at}, which reads or writes files; "
                                      "refused: a SavedModel is a TensorFlow program, and this one does more than "
                                      "classify images")
            continue
        if _DENIED_OP.search(op):
            raise UnsafeFileError(f"{folder} holds {at}, an op that reads or writes files, runs Python code, prints "
                                  "or talks to other processes; refused: a SavedModel is a TensorFlow program, and "
                                  "this one does more than classify images")
        if allowed is not None and op not in allowed:
            raise UnsafeFileError(f"{folder} holds {at}, an op this project's exports never contain; refused: a "
                                  "SavedModel is a TensorFlow program, and this one is not an export of this "
                                  "project (export the model again, or convert it to ONNX / TFLite)")


# ---------------------------------------------------------------- TensorFlow.js graph models


def check_tfjs_weight_paths(model_json: str | Path, spec: Mapping[str, Any] | None = None) -> None:
    """Refuse (`UnsafeFileError`) a model.json whose weightsManifest names a file outside the model's folder."""
    model_json = Path(model_json)
    if spec is None:
        spec = json.loads(model_json.read_text())
    folder = model_json.resolve().parent
    for group in (spec.get("weightsManifest") or []) if isinstance(spec, Mapping) else []:
        for p in (group.get("paths") or []) if isinstance(group, Mapping) else []:
            parts = re.split(r"[\\/]", p) if isinstance(p, str) else [".."]
            if (not isinstance(p, str) or not p or p.startswith(("/", "\\")) or ".." in parts or ":" in p
                    or not inside(folder / p, folder)):
                raise UnsafeFileError(f"{model_json}: its weightsManifest names {p!r}, which is not a file inside the "
                                      f"model's folder {folder}; refused (a TFJS model reads its weights from its "
                                      "own folder only)")
