"""Int8-ready fine-tuning: a trained checkpoint in, a checkpoint whose weights lie on TFLite's int8 grid out.

Post-training int8 loses answers on models whose BatchNorm-folded kernels have a wide per-channel range (a channel
with running_var ~ 0 is multiplied by up to 1/sqrt(eps)): the per-channel int8 grid is then too coarse for the
other weights of that channel. Rounding the weights onto the grid once (`grid.snap_to_int8_grid_`) makes
int8 weight quantisation exact, but moves the float model; a short fine-tune with the weights fake-quantised
(`Int8GridFinetune`) lets the network adapt to its own int8 weights first, and (`activations`, the default) to
its activations rounded with the ranges the converter's calibration will pick. The checkpoint written at the end
holds the snapped weights, so every exported format (ONNX, SavedModel, TFLite fp32 / fp16 / int8, TFJS) is built
from the very same int8-exact network, and int8 differs from float only by the activation quantisation.

BatchNorms run in inference mode during the fine-tune (`freeze_batchnorm`, default): the network trains as it is
exported, and the folded per-channel constants stay those of the checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import lightning.pytorch as pl
import torch
from torch import nn

from lit_garbage.checks import Rule, enforce, integer, non_negative, positive
from lit_garbage.files import replaced_atomically
from lit_garbage.int8.grid import (
    add_activation_fake_quant,
    add_weight_fake_quant,
    max_grid_error,
    remove_weight_fake_quant,
    snap_to_int8_grid_,
)

# Measured on the two real models (docs/results/2026-12-03-int8.md): see `lit-garbage int8-finetune --help`.
DEFAULT_EPOCHS = 1
DEFAULT_LR = 1e-4
DEFAULT_BACKBONE_LR_SCALE = 0.1
DEFAULT_ACTIVATIONS = True  # the int8 file agrees better with float than without (docs/results/2026-12-03-int8.md)
CALIBRATION_IMAGES = 100  # activation ranges for --activations: as many images as the export calibrates on
CHECKPOINT_KEY = "int8_finetune"  # what the fine-tune did, recorded in the checkpoint it writes

FINETUNE_RULES = (
    Rule("epochs", lambda v: integer(v) and v >= 0, "must be an integer >= 0 (0: snap only)"),
    Rule("lr", positive, "must be a positive number"),
    Rule("backbone_lr_scale", non_negative, "must be >= 0"),
)


class Int8GridFinetune(pl.Callback):
    """Trains the module's `net` under int8 weight fake quantisation; at the end of fit its weights are snapped.

    On fit start every Conv2d / Linear weight gets `Int8WeightFakeQuant`; on fit end the parametrizations are
    removed keeping the quantised values, so the module then holds weights exactly on the int8 grid. Meant for a
    Trainer without checkpointing (`int8_finetune`): a checkpoint saved mid-fit would hold parametrized keys.
    """

    def __init__(self, freeze_batchnorm: bool = True, activations: bool = DEFAULT_ACTIVATIONS) -> None:
        self.freeze_batchnorm, self.activations = freeze_batchnorm, activations
        self._hooks: list = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        add_weight_fake_quant(pl_module.net)
        if self.activations:  # activations rounded too, with ranges from validation images
            self._hooks = add_activation_fake_quant(pl_module.net, self._calibration(trainer, pl_module))

    @staticmethod
    def _calibration(trainer: pl.Trainer, pl_module: pl.LightningModule, images: int = CALIBRATION_IMAGES):
        """Up to `images` validation images (the eval transform, like the export's calibration images)."""
        seen = 0
        for x, _ in trainer.datamodule.val_dataloader():
            if seen >= images:
                break
            x = x[: images - seen].to(pl_module.device)
            seen += len(x)
            yield x

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        # Lightning and GarbageNet.train() put BatchNorms back into training mode: undone before every step.
        if self.freeze_batchnorm:
            for m in pl_module.net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        remove_weight_fake_quant(pl_module.net)
        snap_to_int8_grid_(pl_module.net)  # idempotent; also covers epochs == 0 (fit never started a batch)


@dataclass(frozen=True)
class FinetuneResult:
    out: Path
    epochs: int
    val_acc_before: float | None
    val_acc_after: float | None
    max_grid_error: float
    seconds: float


def _datamodule(ckpt: Mapping[str, Any], path: Path, data_root: str | Path | None, manifest: str | Path | None,
                batch_size: int | None, num_workers: int | None):
    from lit_garbage.data.datamodule import GarbageDataModule
    from lit_garbage.data.transforms import Augment
    from lit_garbage.runs import find_run_data

    dm = {k: v for k, v in (ckpt.get("datamodule_hyper_parameters") or {}).items() if not k.startswith("_")}
    found = find_run_data(path, checkpoint=True, datamodule=dm, data_root=data_root, manifest=manifest)
    if found.manifest is None or found.root is None:
        raise FileNotFoundError(f"no dataset / split manifest for {path} (looked at "
                                f"{', '.join(map(str, found.looked_at))}); pass --data.root and --data.manifest")
    aug = dm.get("augment")
    if isinstance(aug, Mapping):
        aug = dict(aug.get("init_args", aug))
        dm["augment"] = Augment(**{k: tuple(v) if isinstance(v, list) else v for k, v in aug.items()
                                   if k != "class_path"})
    if isinstance(dm.get("split"), list):
        dm["split"] = tuple(dm["split"])
    dm.update(root=str(found.root), manifest=str(found.manifest))
    if batch_size is not None:
        dm["batch_size"] = batch_size
    if num_workers is not None:
        dm["num_workers"] = num_workers
    return GarbageDataModule(**dm)


def int8_finetune(model: str | Path, out: str | Path, *, epochs: int = DEFAULT_EPOCHS, lr: float = DEFAULT_LR,
                  backbone_lr_scale: float = DEFAULT_BACKBONE_LR_SCALE, freeze_batchnorm: bool = True,
                  activations: bool = DEFAULT_ACTIVATIONS,
                  data_root: str | Path | None = None, manifest: str | Path | None = None,
                  batch_size: int | None = None, num_workers: int | None = None, validate: bool = True,
                  seed: int = 0, log: Callable[[str], None] = print,
                  trainer_kwargs: Mapping[str, Any] | None = None) -> FinetuneResult:
    """Fine-tune the checkpoint `model` for `epochs` under int8 weight fake quantisation, snap, write `out`.

    The run's own data (split, train augmentation) and loss; the run's optimiser with a cosine decay from `lr`
    (backbone: `lr * backbone_lr_scale`), every layer trainable; `activations`: the activations fake-quantised
    too while fine-tuning. `epochs=0`: snap only. The written checkpoint
    keeps the input's hyper-parameters and data settings (export and evaluate find the run's data through it) and
    records the fine-tune under `int8_finetune`.
    """
    from lit_garbage.safe_loading import load_torch_file
    from lit_garbage.training.checkpoints import classifier_from_checkpoint

    enforce(FINETUNE_RULES, epochs=epochs, lr=lr, backbone_lr_scale=backbone_lr_scale)
    t0 = time.perf_counter()
    model, out = Path(model), Path(out)
    ckpt = load_torch_file(model, map_location="cpu")
    module = classifier_from_checkpoint(ckpt, model)
    data = _datamodule(ckpt, model, data_root, manifest, batch_size, num_workers)
    pl.seed_everything(seed, verbose=False)
    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
             "enable_model_summary": False, "num_sanity_val_steps": 0, **(trainer_kwargs or {})}

    def val_acc() -> float | None:
        if not validate:
            return None
        return float(pl.Trainer(**quiet).validate(module, datamodule=data, verbose=False)[0]["val_acc"])

    before = val_acc()
    original = {k: module.hparams.get(k) for k in ("lr", "lr_schedule", "warmup_epochs", "backbone_lr_scale")}
    module.hparams.update(lr=lr, lr_schedule="cosine", warmup_epochs=0.0, backbone_lr_scale=backbone_lr_scale)
    for p in module.parameters():
        p.requires_grad_(True)
    if epochs > 0:
        pl.Trainer(max_epochs=epochs, limit_val_batches=0,
                   callbacks=[Int8GridFinetune(freeze_batchnorm, activations)], **quiet).fit(module, datamodule=data)
    else:
        snap_to_int8_grid_(module.net)
    module.hparams.update(original)  # the checkpoint describes the run's training; the fine-tune is recorded apart
    module.eval()
    error = max_grid_error(module.net)
    if error > 1e-3:
        raise RuntimeError(f"weights off the int8 grid after the fine-tune (max {error:.3g} steps)")
    after = val_acc()
    seconds = time.perf_counter() - t0
    settings = {"epochs": epochs, "lr": lr, "backbone_lr_scale": backbone_lr_scale,
                "freeze_batchnorm": freeze_batchnorm, "activations": activations, "seed": seed,
                "source": model.name}
    result = FinetuneResult(out, epochs, before, after, error, seconds)
    written = {k: v for k, v in ckpt.items() if k not in ("state_dict", "optimizer_states", "lr_schedulers",
                                                          "loops", "callbacks")}
    written["state_dict"] = module.state_dict()
    written[CHECKPOINT_KEY] = {**settings, "val_acc_before": before, "val_acc_after": after,
                               "seconds": round(seconds, 1)}
    with replaced_atomically(out) as tmp:
        torch.save(written, tmp)
    log(f"int8-ready checkpoint {out}: {epochs} epoch(s), val acc {_pct(before)} -> {_pct(after)}, "
        f"weights on the int8 grid (max error {error:.1e} steps), {seconds:.0f} s")
    return result


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"

