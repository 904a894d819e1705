"""The LightningModule: the seed's loss, optimiser and metrics around `GarbageNet`."""

from __future__ import annotations

from typing import Sequence

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from lit_garbage.model import GarbageNet


def keras_weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                                 class_weights: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy with Keras `class_weight` semantics: per-sample weights, mean over the batch.

    `F.cross_entropy(weight=w)` divides by the sum of the weights instead of the batch size, which
    changes the effective learning rate from batch to batch; Keras divides by the batch size.
    """
    losses = F.cross_entropy(logits.float(), target, reduction="none")
    if class_weights is not None:
        losses = losses * class_weights[target]
    return losses.mean()


class GarbageClassifier(pl.LightningModule):
    """Trains `GarbageNet`; class names, image size and normalisation travel in its hyper-parameters."""

    def __init__(
        self,
        class_names: Sequence[str],
        image_size: int = 224,
        class_weights: Sequence[float] | None = None,
        backbone: str = "mobilenetv2_100",
        pretrained: bool = False,
        weights: str | None = None,
        dropout: float = 0.5,
        lr: float = 5e-4,
        l2: float = 1e-4,
        keras_compat: bool | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if lr <= 0:
            raise ValueError(f"model.lr must be positive, got {lr}")
        if l2 < 0:
            raise ValueError(f"model.l2 must be >= 0, got {l2}")
        if not 0 <= dropout < 1:
            raise ValueError(f"model.dropout must be in [0, 1), got {dropout}")
        self.save_hyperparameters()
        self.class_names = list(class_names)
        self.net = GarbageNet(len(self.class_names), backbone=backbone, pretrained=pretrained,
                              weights=weights, dropout=dropout, keras_compat=keras_compat, mean=mean, std=std)
        # Pretrained weights are only needed once: a checkpoint already holds them. What they implied
        # (Keras padding / BN eps, input normalisation) is recorded explicitly instead.
        self.hparams.pretrained = False
        self.hparams.weights = None
        self.hparams.keras_compat = self.net.keras_compat
        if self.net.keras_compat:
            self.hparams.mean = self.net.mean.flatten().tolist()
            self.hparams.std = self.net.std.flatten().tolist()
        cw = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        if cw is not None and cw.numel() != len(self.class_names):
            raise ValueError(f"{cw.numel()} class weights for {len(self.class_names)} classes")
        self.register_buffer("class_weights", cw)
        n = len(self.class_names)
        self.train_acc = MulticlassAccuracy(n, average="micro")
        self.val_acc = MulticlassAccuracy(n, average="micro")
        self.test_acc = MulticlassAccuracy(n, average="micro")

    @property
    def normalisation(self) -> dict[str, list[float]]:
        return {"mean": self.net.mean.flatten().tolist(), "std": self.net.std.flatten().tolist()}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def l2_penalty(self) -> torch.Tensor:
        """Keras `kernel_regularizer=l2(l2)` on the Dense(128) kernel only (not its bias)."""
        return self.hparams.l2 * self.net.head.fc1.weight.pow(2).sum()

    def _step(self, batch, stage: str, metric: MulticlassAccuracy) -> torch.Tensor:
        images, target = batch
        logits = self(images)
        # Keras weights the training loss only; validation/test report the plain loss.
        weights = self.class_weights if stage == "train" else None
        # Keras adds the regularisation term to every reported loss, val_loss included.
        loss = keras_weighted_cross_entropy(logits, target, weights) + self.l2_penalty()
        metric(logits, target)
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, prog_bar=True, on_step=on_step, on_epoch=True, sync_dist=True,
                 batch_size=len(target))
        self.log(f"{stage}_acc", metric, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(target))
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", self.train_acc)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val", self.val_acc)

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test", self.test_acc)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.net.probabilities(images)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.hparams.lr)
