"""Training callbacks: partial fine-tuning and Keras-style restore of the best weights."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BaseFinetuning, ModelCheckpoint

from lit_garbage.model import weighted_layers


class FreezeBackbone(BaseFinetuning):
    """Freeze the backbone except its last `trainable_layers` weighted layers (None: train it all).

    Keras counts every layer (conv, batch norm, activation, add, pad); only convolutions and batch
    norms hold weights, and those map one-to-one onto timm's modules. The seed's "last 30 Keras
    layers" of MobileNetV2 hold 21 weighted layers (block_13_project_BN .. Conv_1_bn), so the seed
    config says `trainable_layers: 21`; tests/test_model.py checks the trainable parameter count
    against a Keras MobileNetV2 with its last 30 layers unfrozen. Frozen batch norms run in
    inference mode (`GarbageNet.train`), as Keras does for `trainable=False`.
    """

    def __init__(self, trainable_layers: int | None = None) -> None:
        super().__init__()
        if trainable_layers is not None and trainable_layers < 0:
            raise ValueError(f"freeze.trainable_layers must be >= 0 or null (all), got {trainable_layers}")
        self.trainable_layers = trainable_layers

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        apply_partial_freeze(pl_module.net.backbone, self.trainable_layers)

    def finetune_function(self, pl_module, current_epoch, optimizer) -> None:
        """The seed keeps the same layers trainable for the whole run."""


def apply_partial_freeze(backbone: torch.nn.Module, trainable_layers: int | None) -> None:
    if trainable_layers is None:
        BaseFinetuning.make_trainable(backbone)
        return
    layers = [m for _, m in weighted_layers(backbone)]
    if trainable_layers > len(layers):
        raise ValueError(f"freeze.trainable_layers={trainable_layers} but the backbone has {len(layers)} weighted layers")
    cut = len(layers) - trainable_layers
    BaseFinetuning.freeze(layers[:cut], train_bn=False)
    BaseFinetuning.make_trainable(layers[cut:])


class RestoreBestWeights(pl.Callback):
    """At the end of fit, load the best checkpoint's weights (Keras `restore_best_weights=True`)."""

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ckpt = trainer.checkpoint_callback
        if not isinstance(ckpt, ModelCheckpoint) or not ckpt.best_model_path:
            return
        state = torch.load(ckpt.best_model_path, map_location=pl_module.device, weights_only=False)
        pl_module.load_state_dict(state["state_dict"])
