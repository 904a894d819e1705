"""The LightningModule: the seed's loss, optimiser and metrics around `GarbageNet`."""

from __future__ import annotations

import math
from typing import Sequence

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from lit_garbage.checks import Rule, enforce, fraction, non_negative, one_of, optional, positive, probability
from lit_garbage.data.images import DEFAULT_IMAGE_SIZE
from lit_garbage.models.network import GarbageNet


def keras_weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                                 class_weights: torch.Tensor | None, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy with Keras `class_weight` semantics: per-sample weights, mean over the batch.

    `F.cross_entropy(weight=w)` divides by the sum of the weights instead of the batch size, which
    changes the effective learning rate from batch to batch; Keras divides by the batch size.
    """
    losses = F.cross_entropy(logits.float(), target, reduction="none", label_smoothing=label_smoothing)
    if class_weights is not None:
        losses = losses * class_weights[target]
    return losses.mean()


def soft_target_cross_entropy(logits: torch.Tensor, soft: torch.Tensor,
                              class_weights: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy against soft targets (mixup / cutmix), Keras `class_weight` semantics: each sample weighs
    its targets' mix of the class weights (lambda * w[a] + (1 - lambda) * w[b]), mean over the batch."""
    losses = -(soft * F.log_softmax(logits.float(), dim=1)).sum(dim=1)
    if class_weights is not None:
        losses = losses * (soft @ class_weights)
    return losses.mean()


class KerasAdam(torch.optim.Adam):
    """Keras's Adam, the seed's optimiser: epsilon 1e-7, added to sqrt(v) *before* the bias correction.

    torch adds eps after it: Keras's step is torch's with eps_t = eps / sqrt(1 - beta2^t) (3.2e-6 at the
    first step, 5e-7 at the 40th, then -> eps). With a fixed eps, weights whose gradients are ~1e-6 (deep in a
    fine-tuned backbone) move several times further than under Keras in the first epochs.
    """

    def __init__(self, params, lr: float = 1e-3, eps: float = 1e-7, **kwargs) -> None:
        super().__init__(params, lr=lr, eps=eps, **kwargs)
        for group in self.param_groups:
            group.setdefault("keras_eps", eps)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            done = next((self.state[p]["step"] for p in group["params"] if "step" in self.state.get(p, {})), 0)
            t = float(done) + 1
            group["eps"] = group["keras_eps"] / math.sqrt(1 - group["betas"][1] ** t)
        return super().step(closure)


def backbone_stages(backbone: torch.nn.Module, layer_decay: float | None) -> list[tuple[list, float]]:
    """The backbone's parameters with their learning-rate scale: one group at 1.0 without `layer_decay`; with
    it, timm's coarse parameter groups (MobileNetV2: the stem, each of the 7 block stages, the last conv), the
    last at 1.0 and each earlier one `layer_decay` times the one after it."""
    params = list(backbone.parameters())
    if layer_decay is None or layer_decay == 1.0 or not hasattr(backbone, "group_matcher"):
        return [(params, 1.0)]
    from timm.models import group_parameters

    layer_of = group_parameters(backbone, backbone.group_matcher(coarse=True))  # layer index -> parameter names
    named = dict(backbone.named_parameters())
    order = sorted(layer_of)
    top = order[-1]
    return [([named[n] for n in layer_of[i]], layer_decay ** (top - i)) for i in order]


OPTIMIZERS = {"adam": KerasAdam, "adamw": torch.optim.AdamW}
LR_SCHEDULES = ("constant", "cosine")

MODEL_RULES = (
    Rule("model.lr", positive, "must be a positive number"),
    Rule("model.l2", non_negative, "must be >= 0"),
    Rule("model.dropout", fraction, "must be in [0, 1)"),
    Rule("model.optimizer", one_of(*OPTIMIZERS), f"must be one of {', '.join(OPTIMIZERS)}"),
    Rule("model.lr_schedule", one_of(*LR_SCHEDULES), f"must be one of {', '.join(LR_SCHEDULES)}"),
    Rule("model.weight_decay", non_negative, "must be >= 0"),
    Rule("model.backbone_lr_scale", non_negative, "must be >= 0"),
    Rule("model.warmup_epochs", non_negative, "must be >= 0"),
    Rule("model.label_smoothing", fraction, "must be in [0, 1)"),
    Rule("model.mixup", non_negative, "must be >= 0 (the Beta distribution's alpha; 0: off)"),
    Rule("model.cutmix", non_negative, "must be >= 0 (the Beta distribution's alpha; 0: off)"),
    Rule("model.mixup_prob", probability, "must be a probability in [0, 1]"),
    Rule("model.drop_path", fraction, "must be in [0, 1)"),
    Rule("model.layer_decay", optional(lambda v: positive(v) and v <= 1), "must be in (0, 1] or null (off)"),
)


class GarbageClassifier(pl.LightningModule):
    """Trains `GarbageNet`; class names, image size and normalisation travel in its hyper-parameters.

    The defaults are the seed's (Adam 5e-4, constant rate, plain class-weighted cross-entropy). Options
    beyond it: `optimizer` adamw with `weight_decay` (not applied to biases and norm weights),
    `backbone_lr_scale` (the backbone's rate as a fraction of `lr`: discriminative fine-tuning),
    `lr_schedule` cosine decay to 0 over the run after `warmup_epochs` of linear warm-up (per step),
    `label_smoothing`, and `bn_momentum` (the backbone's BatchNorm momentum, torch convention; default:
    Keras's under `keras_compat`, which a Keras-faithful training step needs, else the backbone's own).
    `mixup` / `cutmix` (alpha of their Beta distributions, 0: off) mix the training batches with timm's `Mixup`
    (one of the two per batch when both are on, `mixup_prob`: the share of batches mixed; label smoothing goes
    into the mixed targets); `drop_path` is timm's stochastic depth rate of the backbone's blocks;
    `layer_decay` (layer-wise learning-rate decay) scales each backbone stage's rate by decay^(stages above it),
    on top of `backbone_lr_scale`.
    `compile` runs training through `torch.compile` (same numbers up to float rounding; it pays for long runs
    only: docs/results/2026-11-26-speed.md).
    """

    def __init__(
        self,
        class_names: Sequence[str],
        image_size: int = DEFAULT_IMAGE_SIZE,
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
        channels_last: bool = True,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        backbone_lr_scale: float = 1.0,
        lr_schedule: str = "constant",
        warmup_epochs: float = 0.0,
        label_smoothing: float = 0.0,
        bn_momentum: float | None = None,
        compile: bool = False,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        mixup_prob: float = 1.0,
        drop_path: float = 0.0,
        layer_decay: float | None = None,
    ) -> None:
        super().__init__()
        enforce(MODEL_RULES, lr=lr, l2=l2, dropout=dropout, optimizer=optimizer, lr_schedule=lr_schedule,
                weight_decay=weight_decay, backbone_lr_scale=backbone_lr_scale, warmup_epochs=warmup_epochs,
                label_smoothing=label_smoothing, mixup=mixup, cutmix=cutmix, mixup_prob=mixup_prob,
                drop_path=drop_path, layer_decay=layer_decay)
        self.save_hyperparameters()
        self.class_names = list(class_names)
        self.net = GarbageNet(len(self.class_names), backbone=backbone, pretrained=pretrained,
                              weights=weights, dropout=dropout, keras_compat=keras_compat, mean=mean, std=std,
                              bn_momentum=bn_momentum, drop_path=drop_path)
        if channels_last:
            # NHWC kernels (oneDNN on CPU, tensor cores on GPU): 1.3-1.4x faster MobileNetV2 training steps
            # on CPU, same numbers up to float rounding. The exported graph does not depend on it.
            self.net.to(memory_format=torch.channels_last)
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
        self.mixer = None
        if (mixup > 0 or cutmix > 0) and mixup_prob > 0:
            from timm.data import Mixup

            self.mixer = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=mixup_prob, mode="batch",
                               label_smoothing=label_smoothing, num_classes=n)

    def setup(self, stage: str) -> None:
        # Only for fitting: export, evaluation and prediction load the checkpoint into an eager model.
        if stage == "fit" and self.hparams.get("compile"):
            self.net.compile()

    def on_train_start(self) -> None:
        # Lightning trains a module in the mode it was handed (an imported model comes in eval mode);
        # `train()` also puts the frozen BatchNorms back into inference mode (`GarbageNet.train`).
        self.train()

    @property
    def normalisation(self) -> dict[str, list[float]]:
        return {"mean": self.net.mean.flatten().tolist(), "std": self.net.std.flatten().tolist()}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    def l2_penalty(self) -> torch.Tensor:
        """Keras `kernel_regularizer=l2(l2)` on the Dense(128) kernel only (not its bias)."""
        return self.hparams.l2 * self.net.head.fc1.weight.pow(2).sum()

    def _step(self, batch, stage: str, metric: MulticlassAccuracy) -> torch.Tensor:
        images, target = batch
        # Keras weights the training loss only; validation/test report the plain loss.
        weights = self.class_weights if stage == "train" else None
        # timm's Mixup pairs image i with image n-1-i: a batch of odd size (an epoch's last) goes unmixed.
        if stage == "train" and self.mixer is not None and len(target) % 2 == 0:
            images, soft = self.mixer(images, target)
            logits = self(images)
            loss = soft_target_cross_entropy(logits, soft, weights) + self.l2_penalty()
        else:
            logits = self(images)
            smoothing = self.hparams.label_smoothing if stage == "train" else 0.0
            # Keras adds the regularisation term to every reported loss, val_loss included.
            loss = keras_weighted_cross_entropy(logits, target, weights, smoothing) + self.l2_penalty()
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
        return self(images).softmax(dim=1)

    def configure_optimizers(self):
        hp = self.hparams
        lr, decay = hp.lr, hp.weight_decay
        groups = []
        parts = [(params, hp.backbone_lr_scale * scale) for params, scale in backbone_stages(self.net.backbone,
                                                                                             hp.get("layer_decay"))]
        for params, scale in [*parts, (list(self.net.head.parameters()), 1.0)]:
            # Parameters frozen now may be unfrozen later (BaseFinetuning adds them then); biases and
            # norm weights get no weight decay (the usual convention, as timm's param_groups_weight_decay).
            params = [p for p in params if p.requires_grad]
            for no_decay in (False, True):
                chosen = [p for p in params if (p.ndim <= 1) == no_decay]
                if chosen:
                    groups.append({"params": chosen, "lr": lr * scale, "weight_decay": 0.0 if no_decay else decay})
        optimizer = OPTIMIZERS[hp.optimizer](groups, lr=lr)
        if hp.lr_schedule == "constant" and not hp.warmup_epochs:
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(total - 1, int(round(hp.warmup_epochs * total / max(1, self.trainer.max_epochs or 1))))
        cosine = hp.lr_schedule == "cosine"

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            if not cosine:
                return 1.0
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
