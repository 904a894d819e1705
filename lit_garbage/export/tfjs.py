"""SavedModel -> TensorFlow.js graph model (`model.json` + weight shards) with tensorflowjs's converter API.

The graph model keeps the SavedModel's `serving_default` signature: input `images` float32 [N, H, W, 3]
RGB in [0, 1], output class probabilities. It runs in browsers and in Node (see `lit_garbage/inference/tfjs/tfjs_predict.mjs`).

The converter's grappler passes can fold a per-channel bias whose values are all equal into a scalar
(MobileNetV3's squeeze-excitation conv with untrained, all-zero biases, plus its hard-sigmoid's +0.5) and
fuse that scalar (or a [1, 1, 1, C] one) into `_FusedConv2D` / `FusedDepthwiseConv2dNative` / `_FusedMatMul`;
the wasm backend refuses those ("FusedConv2D only supports rank-1 bias but got rank 0" / "rank 4"). `_expand_scalar_biases` gives each
such node its own rank-1 bias (same value per output channel); models without them (MobileNetV2) are
left byte for byte as the converter wrote them. `_unfuse_tensor_biases` undoes a converter rewrite that
fuses a residual Add into a bias-free convolution (see there).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np

from lit_garbage.export.tensorflow import SIGNATURE, ConversionError


def saved_model_to_tfjs(saved_model_dir: str | Path, out_dir: str | Path, verbose: bool = False) -> Path:
    # tensorflowjs imports tensorflow_decision_forests, whose import-time welcome banner imports IPython
    # (not installed) whenever stdout is not a terminal (pytest, CI logs, redirected output).
    os.environ.setdefault("TFDF_DISABLE_WELCOME_MESSAGE", "1")
    try:
        from tensorflowjs.converters import convert_tf_saved_model
    except ImportError as err:
        raise ConversionError(f"the tensorflowjs converter cannot be imported ({err}); "
                              "install the project's pinned stack (tensorflowjs==4.22.0)") from err
    out_dir = Path(out_dir)
    log = io.StringIO()
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(log)
    try:
        with quiet:
            convert_tf_saved_model(str(saved_model_dir), str(out_dir), signature_def=SIGNATURE,
                                   saved_model_tags="serve")
    except Exception as err:
        raise ConversionError(f"TFJS conversion of {saved_model_dir} failed: {err}") from err
    if not (out_dir / "model.json").is_file():
        raise ConversionError(f"the TFJS converter wrote no model.json into {out_dir}")
    _unfuse_tensor_biases(out_dir)
    _expand_scalar_biases(out_dir)
    return out_dir / "model.json"


_FUSED_WITH_BIAS = ("_FusedConv2D", "FusedDepthwiseConv2dNative", "_FusedMatMul")
_UNFUSED_OP = {"_FusedConv2D": "Conv2D", "FusedDepthwiseConv2dNative": "DepthwiseConv2dNative", "_FusedMatMul": "MatMul"}
_ACTIVATIONS = {"Relu", "Relu6", "Elu", "Sigmoid", "Tanh"}


def _unfuse_tensor_biases(out_dir: Path) -> int:
    """Split fused conv/matmul nodes whose "bias" is a computed tensor back into op + AddV2 (+ activation).

    When a convolution has no bias (a bias-free conv, or a folded BatchNorm whose shift is exactly 0, as in
    untrained layers) and a residual Add follows, the converter rewrites that Add as BiasAdd and fuses it:
    `_FusedConv2D(x, w, residual)` with a full feature map as "bias", which TFJS cannot run ("FusedConv2D
    only supports rank-1 bias but got rank 4"). Returns how many nodes were split.
    """
    model_json = out_dir / "model.json"
    model = json.loads(model_json.read_text())
    weights = {w["name"] for group in model["weightsManifest"] for w in group["weights"]}
    nodes = model["modelTopology"]["node"]
    added, changed = [], 0
    for node in nodes:
        attr = node.get("attr", {})
        fused = [base64.b64decode(v).decode() for v in attr.get("fused_ops", {}).get("list", {}).get("s", [])]
        data_inputs = [i for i in node.get("input", []) if not i.startswith("^")]
        if (node["op"] not in _FUSED_WITH_BIAS or len(data_inputs) != 3 or data_inputs[2].split(":")[0] in weights
                or not fused or fused[0] != "BiasAdd" or any(f not in _ACTIVATIONS for f in fused[1:])):
            continue
        name, bias = node["name"], data_inputs[2]
        node["name"], node["op"] = f"{name}/unfused", _UNFUSED_OP[node["op"]]
        node["input"] = data_inputs[:2] + [i for i in node["input"] if i.startswith("^")]
        for key in ("fused_ops", "num_args", "epsilon", "leakyrelu_alpha", "num_host_args"):
            attr.pop(key, None)
        dtype = {"T": attr["T"]} if "T" in attr else {}
        chain = [("AddV2", [node["name"], bias])] + [(act, []) for act in fused[1:]]
        previous = None
        for step, (op, inputs) in enumerate(chain):
            out = name if step == len(chain) - 1 else f"{name}/{op.lower()}_{step}"
            added.append({"name": out, "op": op, "input": inputs or [previous], "attr": dict(dtype)})
            previous = out
        changed += 1
    if changed:
        nodes.extend(added)
        model_json.write_text(json.dumps(model))
    return changed


def _output_channels(op: str, filter_shape: list[int], attr: dict) -> int:
    if op == "_FusedConv2D":  # HWIO
        return filter_shape[-1]
    if op == "FusedDepthwiseConv2dNative":  # [H, W, in, multiplier]
        return filter_shape[2] * filter_shape[3]
    return filter_shape[0] if attr.get("transpose_b", {}).get("b") else filter_shape[-1]  # MatMul


def _expand_scalar_biases(out_dir: Path) -> int:
    """Give fused conv/matmul nodes whose bias is not rank 1 (a scalar, or [1, 1, 1, C]) their own rank-1
    bias of the same values (see the module docstring); returns how many nodes changed."""
    from tensorflowjs.read_weights import read_weights
    from tensorflowjs.write_weights import write_weights

    model_json = out_dir / "model.json"
    model = json.loads(model_json.read_text())
    specs = {w["name"]: w for group in model["weightsManifest"] for w in group["weights"]}
    todo = []
    for node in model["modelTopology"]["node"]:
        if node["op"] not in _FUSED_WITH_BIAS or len(node.get("input", [])) < 3:
            continue
        filt, bias = (name.split(":")[0] for name in node["input"][1:3])
        if filt not in specs or bias not in specs or specs[bias].get("dtype") != "float32":
            continue
        shape, channels = specs[bias]["shape"], _output_channels(node["op"], specs[filt]["shape"], node.get("attr", {}))
        if shape != [channels] and int(np.prod(shape)) in (1, channels):
            todo.append((node, channels, bias))
    if not todo:
        return 0
    groups = read_weights(model["weightsManifest"], str(out_dir))
    values = {w["name"]: w["data"] for group in groups for w in group}
    extra = []
    for i, (node, channels, bias) in enumerate(todo):
        name = f"{bias}/rank1_{i}"
        data = np.broadcast_to(np.asarray(values[bias], dtype=np.float32).reshape(-1), [channels])
        extra.append({"name": name, "data": np.ascontiguousarray(data)})
        model["modelTopology"]["node"].append({  # weights bind to Const nodes of the same name
            "name": name, "op": "Const", "attr": {
                "value": {"tensor": {"dtype": "DT_FLOAT", "tensorShape": {"dim": [{"size": str(channels)}]}}},
                "dtype": {"type": "DT_FLOAT"}}})
        node["input"][2] = name
    groups[-1].extend(extra)
    for old in {p for group in model["weightsManifest"] for p in group["paths"]}:
        (out_dir / old).unlink()
    model["weightsManifest"] = write_weights(groups, str(out_dir), write_manifest=False)
    model_json.write_text(json.dumps(model))
    return len(todo)
