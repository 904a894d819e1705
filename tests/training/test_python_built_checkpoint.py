"""A model trained from Python (data module and model built by hand, not by the CLI) writes a checkpoint that
this project's own safe loader reads: every hyper-parameter is plain data (an `Augment` as its fields, a `Path`
as a string), so `weights_only` loading, export and evaluation accept it.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl

from lit_garbage.data.datamodule import GarbageDataModule
from lit_garbage.data.transforms import Augment
from lit_garbage.safe_loading import load_torch_file, unsafe_globals
from lit_garbage.training.module import GarbageClassifier


def test_checkpoint_of_a_python_built_run_is_plain_data(synthetic_root, tmp_path):
    dm = GarbageDataModule(root=Path(synthetic_root), image_size=32, batch_size=8, num_workers=0,
                           augment=Augment(rotation=5.0), cache=None, manifest=tmp_path / "split.csv")
    dm.setup("fit")
    model = GarbageClassifier(class_names=dm.class_names, image_size=32, pretrained=False)
    trainer = pl.Trainer(max_steps=1, limit_val_batches=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    ckpt = tmp_path / "python.ckpt"
    trainer.save_checkpoint(ckpt)

    assert unsafe_globals(ckpt) == []
    loaded = load_torch_file(ckpt)
    data = loaded["datamodule_hyper_parameters"]
    assert data["augment"]["rotation"] == 5.0 and data["root"] == str(synthetic_root)

    from lit_garbage.inference.backends import load_classifier
    module, _ = load_classifier(ckpt)
    assert list(module.hparams.class_names) == list(dm.class_names)
