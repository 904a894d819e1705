"""Int8-ready fine-tuning: weights end on TFLite's per-channel int8 grid, BatchNorm folding keeps them there, and
the checkpoint written is a normal one (hyper-parameters, data settings) with the fine-tune recorded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from lit_garbage.int8.grid import (
    activation_points,
    add_activation_fake_quant,
    add_weight_fake_quant,
    grid_error,
    max_grid_error,
    quantized_layers,
    remove_weight_fake_quant,
    snap_to_int8_grid_,
)
from lit_garbage.models.network import GarbageNet

REPO = Path(__file__).resolve().parents[2]
SIZE = 32


def conv_bn_pairs(net: GarbageNet) -> list[tuple[nn.Conv2d, nn.modules.batchnorm._BatchNorm]]:
    """(conv, the BatchNorm that reads its output) in execution order: what a converter folds."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, _i, _o: order.append(mod)) for m in net.modules()
             if isinstance(m, (nn.Conv2d, nn.modules.batchnorm._BatchNorm))]
    with torch.no_grad():
        net.eval()(torch.rand(1, 3, SIZE, SIZE))
    for h in hooks:
        h.remove()
    return [(a, b) for a, b in zip(order, order[1:])
            if isinstance(a, nn.Conv2d) and isinstance(b, nn.modules.batchnorm._BatchNorm)]


def folded_weight(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    w, _ = fuse_conv_bn_weights(conv.weight.detach(), conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                bn.weight.detach(), bn.bias.detach())
    return w


def wide_batchnorm_net() -> GarbageNet:
    """A tiny net whose BatchNorms have the trouble of real models: some channels' running_var ~ 0."""
    torch.manual_seed(0)
    net = GarbageNet(4, pretrained=False)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            var = torch.rand_like(m.running_var) + 0.1
            var[:: 5] = 0.0  # gain 1 / sqrt(eps) on every fifth channel
            m.running_var.copy_(var)
            m.weight.data.uniform_(-2.0, 2.0)
    return net


def test_snapped_weights_lie_on_the_int8_grid_before_and_after_batchnorm_folding():
    net = wide_batchnorm_net()
    pairs = conv_bn_pairs(net)
    assert len(pairs) >= 50  # every backbone conv is followed by its BatchNorm
    assert max(grid_error(folded_weight(c, b)) for c, b in pairs) > 0.3  # float weights: far from the grid
    snap_to_int8_grid_(net)
    assert max_grid_error(net) < 1e-4
    assert max(grid_error(folded_weight(c, b)) for c, b in pairs) < 1e-3  # folded: still exactly representable


def test_fake_quant_trains_the_float_weights_and_removal_leaves_the_quantised_ones():
    net = wide_batchnorm_net()
    n = add_weight_fake_quant(net)
    assert n == len(quantized_layers(net)) and n > 50
    conv = net.backbone.conv_stem
    original = conv.parametrizations.weight.original
    before = original.detach().clone()
    assert grid_error(conv.weight) < 1e-4 and grid_error(original) > 0.1  # the forward sees int8 weights
    loss = net.train()(torch.rand(2, 3, SIZE, SIZE)).square().sum()
    loss.backward()
    assert original.grad is not None and original.grad.abs().sum() > 0  # straight-through gradient
    with torch.no_grad():
        original.sub_(0.01 * original.grad)
    quantised = conv.weight.detach().clone()
    remove_weight_fake_quant(net)
    assert not (conv.weight.detach() == before).all()
    torch.testing.assert_close(conv.weight.detach(), quantised, rtol=0, atol=0)
    assert max_grid_error(net) < 1e-4
    assert set(net.state_dict()) == set(GarbageNet(4, pretrained=False).state_dict())  # plain keys again


def test_activation_fake_quant_rounds_the_int8_tensors_and_leaves_no_trace():
    net = GarbageNet(4, pretrained=False).eval()
    points = activation_points(net)
    names = [n for n, _ in points]
    # The converter's int8 tensors: a convolution fused into its BatchNorm (activation included) or its
    # activation has no tensor of its own; MobileNetV2's 10 residual ADDs and the head's ops have.
    assert "backbone.conv_stem" not in names and "backbone.bn1" in names and "backbone.bn1.act" not in names
    assert "head.depthwise" in names and "head.pointwise" not in names and "head.act" in names
    assert sum(bool(getattr(m, "has_skip", False)) for _, m in points) == 10
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        before = net(x)
    keys = set(net.state_dict())
    handles = add_activation_fake_quant(net, [torch.rand(4, 3, SIZE, SIZE)])
    seen = {}
    for name, m in points[:3] + points[-3:]:  # registered after the fake-quant hooks: sees their output
        handles.append(m.register_forward_hook(lambda mod, a, out, name=name: seen.__setitem__(name, out.detach())))
    net.train()
    for m in net.modules():  # as the fine-tune runs them: inference-mode BatchNorms
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    loss = net(x).square().sum()
    loss.backward()
    assert net.backbone.conv_stem.weight.grad.abs().sum() > 0  # straight-through gradients
    for name, out in seen.items():
        assert out.unique().numel() <= 256, name  # one int8 grid per tensor
    for h in handles:
        h.remove()
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), before)  # the hooks are gone, the weights untouched
    assert set(net.state_dict()) == keys  # the observers never enter the checkpoint


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict:
    """A pretrained=False model trained a few epochs on four synthetic classes at 32 px."""
    from lit_garbage.data.synthetic import generate
    from lit_garbage.training import cli

    base = tmp_path_factory.mktemp("int8-finetune")
    data = base / "data"
    generate(data, per_class=30, size=SIZE, seed=0)
    for extra in data.iterdir():
        if extra.name not in ("battery", "biological", "cardboard", "clothes"):
            shutil.rmtree(extra)
    run = base / "run"
    results = cli.main(args=[
        "--config", str(REPO / "configs" / "demo.yaml"), "--data.root", str(data), "--run_dir", str(run),
        "--data.image_size", str(SIZE), "--data.batch_size", "16", "--data.num_workers", "0",
        "--data.augment.enabled", "false", "--model.lr", "0.005", "--model.dropout", "0.0",
        "--trainer.max_epochs", "8", "--seed_everything", "1", "--early_stopping.patience", "30",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    ])
    return {"data": data, "run": run, "ckpt": run / "model.ckpt", "results": results, "base": base}


@pytest.mark.slow
def test_int8_finetune_writes_a_checkpoint_on_the_grid_that_keeps_the_run(tiny_run):
    from lit_garbage.inference.backends import load_classifier
    from lit_garbage.int8.finetune import CHECKPOINT_KEY, int8_finetune
    from lit_garbage.safe_loading import load_torch_file

    out = tiny_run["base"] / "int8" / "model.ckpt"
    result = int8_finetune(tiny_run["ckpt"], out, epochs=1, lr=1e-3, num_workers=0, log=lambda s: None,
                           activations=True, trainer_kwargs={"accelerator": "cpu"})
    assert result.max_grid_error < 1e-3 and result.val_acc_before is not None and result.val_acc_after is not None
    source, written = load_torch_file(tiny_run["ckpt"]), load_torch_file(out)
    assert written["hyper_parameters"] == source["hyper_parameters"]  # lr etc. of the run, not of the fine-tune
    assert written["datamodule_hyper_parameters"] == source["datamodule_hyper_parameters"]
    assert written[CHECKPOINT_KEY]["epochs"] == 1 and written[CHECKPOINT_KEY]["lr"] == 1e-3
    assert written[CHECKPOINT_KEY]["activations"] is True
    assert set(written["state_dict"]) == set(source["state_dict"])  # no observer or parametrization keys
    for key, value in source["state_dict"].items():
        if "running_" in key:  # BatchNorms ran in inference mode: the folded constants are the run's
            torch.testing.assert_close(written["state_dict"][key], value, rtol=0, atol=0)
    changed = [k for k, v in source["state_dict"].items() if k.endswith("weight")
               and not torch.equal(written["state_dict"][k], v)]
    assert len(changed) > 50  # every layer trained (and snapped)
    module, _ = load_classifier(out)
    assert max_grid_error(module.net) < 1e-3
    pairs = conv_bn_pairs(module.net)
    assert max(grid_error(folded_weight(c, b)) for c, b in pairs) < 1e-3
    # the checkpoint carries the run's data: the normal commands find the split through it
    snapped = int8_finetune(tiny_run["ckpt"], tiny_run["base"] / "snap.ckpt", epochs=0, validate=False,
                            log=lambda s: None)
    assert snapped.epochs == 0 and snapped.max_grid_error < 1e-3


@pytest.mark.slow
def test_int8_finetune_command_refuses_bad_options(tiny_run, tmp_path, capsys):
    from lit_garbage.commands.main import main

    assert main(["int8-finetune", "--model", str(tiny_run["ckpt"]), "--out", str(tmp_path / "x.ckpt"),
                 "--epochs", "-1"]) == 2
    assert "epochs" in capsys.readouterr().err
    assert main(["int8-finetune", "--model", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "x.ckpt")]) == 2
    assert not (tmp_path / "x.ckpt").exists()


def _tflite_kernels(path: Path) -> list[tuple[str, "object"]]:
    """(op name, kernel with the output channel first) of every conv / depthwise conv / dense op of a .tflite."""
    import numpy as np
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    graph, names = model.subgraphs[0], {3: "CONV_2D", 4: "DEPTHWISE_CONV_2D", 9: "FULLY_CONNECTED"}
    kernels = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        kind = names.get(max(code.builtinCode, code.deprecatedBuiltinCode))
        if kind is None:
            continue
        tensor = graph.tensors[op.inputs[1]]
        data = model.buffers[tensor.buffer].data
        if data is None:
            continue
        w = np.frombuffer(bytes(data), dtype=np.float32).reshape(tensor.shape)
        kernels.append((kind, np.moveaxis(w, 3, 0) if kind == "DEPTHWISE_CONV_2D" else w))
    return kernels


def _probabilities(path: Path, images) -> "object":
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    rows = []
    for image in images:
        it.set_tensor(inp["index"], image[None])
        it.invoke()
        rows.append(it.get_tensor(out["index"])[0].copy())
    return np.stack(rows)


@pytest.mark.slow
def test_integer_export_of_the_finetuned_checkpoint_keeps_float_weights_and_agrees_better(tiny_run):
    import numpy as np

    from lit_garbage.data.images import load_rgb, model_input
    from lit_garbage.export.config import ExportConfig, Int8Options
    from lit_garbage.export.exporter import Exporter
    from lit_garbage.int8.finetune import int8_finetune

    ready = tiny_run["base"] / "ready" / "model.ckpt"
    int8_finetune(tiny_run["ckpt"], ready, epochs=1, lr=1e-3, num_workers=0, validate=False, log=lambda s: None)
    files = {}
    for name, ckpt in (("plain", tiny_run["ckpt"]), ("ready", ready)):
        out = tiny_run["base"] / f"export-{name}"
        exporter = Exporter(ExportConfig(model=ckpt, out=out, formats=["tflite", "int8", "int16x8"], verify=False,
                                         int8=Int8Options(calib_images=40), tflite_metadata=False), log=lambda s: None)
        exporter.run()
        assert exporter.weights_on_int8_grid == (name == "ready")  # what the export's failure hint checks
        files[name] = out
    # The float32 TFLite (BatchNorms folded by the converters) holds kernels on the int8 grid: int8 rounding is exact
    for name, expect_on_grid in (("plain", False), ("ready", True)):
        kernels = _tflite_kernels(files[name] / "model_float32.tflite")
        assert len(kernels) >= 50
        errors = [grid_error(torch.from_numpy(w.copy())) for _, w in kernels]
        assert (max(errors) < 1e-3) == expect_on_grid, (name, max(errors))
    images = np.stack([model_input(load_rgb(p), SIZE).transpose(1, 2, 0)
                       for p in sorted(tiny_run["data"].rglob("*.jpg"))]).astype(np.float32)
    assert len(images) >= 100
    gap = {}
    for name, out in files.items():
        p_float = _probabilities(out / "model_float32.tflite", images)
        p_int16x8 = _probabilities(out / "model_int16x8.tflite", images)
        gap[name] = float(np.abs(p_int16x8 - p_float).mean())
    # int16 activations leave the weights' rounding as the integer file's error: exact for the fine-tuned
    # checkpoint. (Its int8 file differs from float by the activations' int8 rounding too, which on this tiny
    # model is as large as the weights' part; the real models' int8 gains are in docs/results/2026-12-03-int8.md.)
    assert gap["ready"] < 0.2 * gap["plain"], gap  # measured 0.00025 against 0.0056
