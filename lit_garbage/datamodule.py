"""`GarbageDataModule`: an ImageFolder root, its split manifest, class weights and loaders."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Sequence

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from lit_garbage.manifest import SPLITS, Manifest, Record, load_or_build_manifest
from lit_garbage.transforms import Augment, eval_transform, load_rgb, train_transform


class ManifestDataset(Dataset):
    """(image tensor, class index) for the records of one split."""

    def __init__(self, root: str | Path, records: Sequence[Record], class_names: Sequence[str],
                 transform: Callable) -> None:
        self.root = Path(root)
        self.records = list(records)
        self.class_to_idx = {name: i for i, name in enumerate(class_names)}
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        r = self.records[i]
        return self.transform(load_rgb(self.root / r.path)), self.class_to_idx[r.label]


class GarbageDataModule(pl.LightningDataModule):
    """Any folder of class folders (the Kaggle "Garbage Classification v2" layout works as it is).

    Args:
        root: dataset folder with one sub-folder per class.
        manifest: split manifest CSV; reused when it exists, written when it does not
            (`scripts/fit.py` puts it in the run directory).
        image_size: square input size the images are resized to.
        batch_size: per-device batch size.
        num_workers: DataLoader worker processes.
        split: train/val/test fractions (stratified).
        split_seed: seed of the stratified split.
        augment: train-time augmentation (the seed's ImageDataGenerator settings).
    """

    def __init__(
        self,
        root: str,
        manifest: str | None = None,
        image_size: int = 224,
        batch_size: int = 32,
        num_workers: int = 2,
        split: tuple[float, float, float] = (0.7, 0.15, 0.15),
        split_seed: int = 42,
        augment: Augment = Augment(),
    ) -> None:
        super().__init__()
        if image_size < 32:
            raise ValueError(f"data.image_size must be at least 32, got {image_size}")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        self.save_hyperparameters()
        self.root = Path(root)
        self.manifest_path = manifest
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.split = tuple(split)
        self.split_seed = split_seed
        self.augment = augment

    @functools.cached_property
    def manifest(self) -> Manifest:
        return load_or_build_manifest(self.root, self.manifest_path, self.split, self.split_seed)

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.class_names)

    @property
    def class_weights(self) -> list[float]:
        return self.manifest.class_weights()

    def dataset(self, split: str, train: bool | None = None) -> ManifestDataset:
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}', expected one of {SPLITS}")
        augment = split == "train" if train is None else train
        tf = train_transform(self.image_size, self.augment) if augment else eval_transform(self.image_size)
        return ManifestDataset(self.root, self.manifest.split(split), self.class_names, tf)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
