"""torch -> ONNX: the first link of the export chain (onnx2tf reads this file).

Exporter and opset, chosen for onnx2tf 1.28.8: torch's dynamo exporter (`dynamo=True`, the default of
torch 2.14; it needs `onnxscript`) at opset 18, the opset it emits natively (no down-conversion pass) and
one onnx2tf converts op for op for this network. `external_data=False` keeps weights inside the one
`.onnx` file, which onnx2tf, onnxsim and onnxruntime all load without a side file. The batch axis is
dynamic; height and width stay static (static shapes raise onnx2tf's success rate).

The graph is traced from a contiguous (NCHW) copy of the network whose head receives contiguous
features: a feature map with channels-last strides (a net kept in `channels_last` memory format for
training, or a backbone that permutes internally, such as ConvNeXt's LayerNorm2d) otherwise traces the
head's `flatten` as `as_strided`, i.e. Shape/Range/Gather/Reshape nodes on the dynamic batch that onnx2tf
cannot convert ("tf.range: Shape must be rank 0"). Memory formats change no number, only the graph; for a
contiguous MobileNetV2 both steps are no-ops.
"""

from __future__ import annotations

import copy
from pathlib import Path

import onnx
import torch

from lit_garbage.models.network import GarbageNet, Probabilities

OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"


def export_onnx(net: GarbageNet, image_size: int, path: str | Path) -> Path:
    """Write `Probabilities(net)` as one self-contained ONNX file and check it.

    Input `images`: float32 [N, 3, H, W] RGB in [0, 1]; output `probabilities`: float32 [N, C].
    The exporter writes the export's metadata into it later (`lit_garbage.export.metadata`).
    """
    path = Path(path)
    net = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
    net.head.register_forward_pre_hook(lambda _head, args: tuple(a.contiguous() for a in args))
    graph = Probabilities(net).eval()
    example = torch.rand(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with torch.no_grad():
        program = torch.onnx.export(
            graph,
            (example,),
            dynamo=True,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"images": {0: batch}},
            external_data=False,
            optimize=True,
            verbose=False,
        )
    model = program.model_proto
    _drop_debug_info(model)
    model.doc_string = "lit_garbage GarbageNet: RGB [0, 1] NCHW images -> softmax probabilities"
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


def _drop_debug_info(model: onnx.ModelProto) -> None:
    """The exporter's per-node debug records (`pkg.torch.onnx.stack_trace` and the like: hundreds of this machine's
    source paths) are not part of the model; a shipped file must not carry them."""
    graphs = [model.graph] + [f for f in model.functions]
    for graph in graphs:
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
    for info in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        del info.metadata_props[:]
    for init in model.graph.initializer:
        del init.metadata_props[:]
