"""`GarbageDataModule`: an ImageFolder root, its split manifest, class weights and loaders."""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from lit_garbage.checks import Rule, enforce, integer, one_of, optional
from lit_garbage.data.batch_augment import BatchAugment, device_augment_blockers
from lit_garbage.data.image_cache import CachedSplit, ImageCache, resolve_cache_dir
from lit_garbage.data.images import DEFAULT_IMAGE_SIZE, MIN_IMAGE_SIZE, load_rgb, shown
from lit_garbage.data.manifest import (
    SPLIT_RULE,
    SPLITS,
    DatasetError,
    Manifest,
    Record,
    check_files,
    check_fractions,
    load_or_build_manifest,
    read_exclude_list,
)
from lit_garbage.data.transforms import (
    Augment,
    eval_transform,
    resize_uint8,
    train_transform,
)

# data.num_workers: null gives one DataLoader worker per CPU core this process may use, at most this many (more
# workers than cores only compete for them, and DataLoader warns about it).
MAX_AUTO_WORKERS = 8
AUGMENT_ON = ("auto", "cpu", "device")  # data.augment_on: where the train-time augmentation runs
CLASS_WEIGHT = ("balanced", "none")  # data.class_weight: the loss's class weights (Keras class_weight)
SAMPLERS = ("shuffle", "balanced")  # data.sampler: how the training images are drawn each epoch
DATA_RULES = (
    Rule("data.root", lambda v: isinstance(v, str) and v.strip() != "", "must be the dataset folder"),
    Rule("data.image_size", lambda v: integer(v) and v >= MIN_IMAGE_SIZE, f"must be an integer >= {MIN_IMAGE_SIZE}"),
    Rule("data.batch_size", lambda v: integer(v) and v >= 1, "must be >= 1"),
    Rule("data.num_workers", optional(lambda v: integer(v) and v >= 0),
         f"must be >= 0, or null (one per usable CPU core, at most {MAX_AUTO_WORKERS})"),
    Rule("data.augment_on", one_of(*AUGMENT_ON), f"must be one of {', '.join(AUGMENT_ON)}"),
    Rule("data.class_weight", one_of(*CLASS_WEIGHT), f"must be one of {', '.join(CLASS_WEIGHT)}"),
    Rule("data.sampler", one_of(*SAMPLERS), f"must be one of {', '.join(SAMPLERS)}"),
    SPLIT_RULE,
    Rule("data.near_duplicate_distance", optional(lambda v: integer(v) and 0 <= v <= 32),
         "must be in [0, 32] (bits of a 64-bit perceptual hash) or null"),
)


def auto_workers() -> int:
    """`data.num_workers: null`: one worker per CPU core this process may use (a container's or taskset's limit
    included), at most MAX_AUTO_WORKERS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, MAX_AUTO_WORKERS))


class UnreadableImagesError(RuntimeError):
    """Too many files listed in the manifest can no longer be read: the dataset changed under the run."""


class ManifestDataset(Dataset):
    """(image tensor, class index) for the records of one split.

    Every record was decoded once by the scan. A file that became unreadable since (deleted,
    overwritten, disk error) does not kill the DataLoader worker mid-epoch: it is reported once
    (a warning naming the file) and replaced by the next readable image *of the same class* in the
    split, so batch shapes and class balance hold. If more than `max_unreadable` files (default:
    1 % of the split, at least 5) fail in one process, the dataset has changed too much to continue
    silently and `UnreadableImagesError` stops the run with a clear message (resume after fixing it).

    With `cache` (a `CachedSplit` of these records), record i comes from the decoded-image cache as a uint8
    CHW tensor already at the model's size; records the cache could not decode are read from the file.

    `excluded` (path -> reason): records never read, e.g. files whose content changed since the scan
    (`manifest.check_files`); like unreadable files, another image of the same class takes their place.
    """

    def __init__(self, root: str | Path, records: Sequence[Record], class_names: Sequence[str],
                 transform: Callable, max_unreadable: int | None = None, cache: CachedSplit | None = None,
                 excluded: dict[str, str] | None = None) -> None:
        if cache is not None and len(cache) != len(records):
            raise ValueError(f"image cache holds {len(cache)} images for {len(records)} records")
        self.cache = cache
        self.root = Path(root)
        self.records = list(records)
        self.class_to_idx = {name: i for i, name in enumerate(class_names)}
        self.transform = transform
        self.max_unreadable = max(5, len(self.records) // 100) if max_unreadable is None else max_unreadable
        self.unreadable: dict[str, str] = {}  # path -> reason, per process (each worker has its own)
        self.excluded = dict(excluded or {})
        self._by_label: dict[str, list[int]] = {}
        for i, r in enumerate(self.records):
            self._by_label.setdefault(r.label, []).append(i)

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, i: int):
        r = self.records[i]
        if r.path in self.unreadable or r.path in self.excluded:
            return None
        if self.cache is not None:
            cached = self.cache.get(i)
            if cached is not None:
                return cached
        try:
            return load_rgb(self.root / r.path)
        except Exception as err:  # noqa: BLE001 - any decoder failure of one file must not end the epoch
            self.unreadable[r.path] = f"{type(err).__name__}: {err}"
            warnings.warn(f"cannot read {shown(self.root / r.path)} any more ({err}); it was readable when the "
                          "dataset was scanned. Using another image of the same class in its place. "
                          "Restore the file, or start a new run to re-scan the dataset.", stacklevel=2)
            if len(self.unreadable) > self.max_unreadable:
                raise UnreadableImagesError(
                    f"{len(self.unreadable)} images listed in the split manifest can no longer be read under "
                    f"{self.root} (e.g. {', '.join(list(self.unreadable)[:3])}): the dataset changed after the "
                    "scan. Restore the files and continue with --resume true, or start a new run directory "
                    "to re-scan the dataset.") from None
            return None

    def __getitem__(self, i: int):
        r = self.records[i]
        image = self._load(i)
        if image is None:
            same = self._by_label[r.label]
            start = same.index(i)
            for j in same[start + 1:] + same[:start]:
                image = self._load(j)
                if image is not None:
                    break
            else:
                raise UnreadableImagesError(f"no image of class {r.label!r} under {self.root} can be read any "
                                            "more; restore the files or re-scan the dataset in a new run.")
        return self.transform(image), self.class_to_idx[r.label]


class EpochShuffleSampler(RandomSampler):
    """A random order that depends only on (seed, epoch), not on the global random generator.

    So a run resumed at epoch k sees the same batches as an uninterrupted one. Lightning calls
    `set_epoch` before every epoch; in DDP it swaps this (a RandomSampler) for its DistributedSampler,
    which is seeded per epoch in the same way. `resume_at(epoch, done)`: the next pass is that epoch's
    order without its first `done` samples (a run stopped mid-epoch continues with the batch it would have
    trained next).
    """

    def __init__(self, data_source, seed: int) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, done: int) -> None:
        self.epoch, self._skip = epoch, done

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed * 100_003 + self.epoch)
        skip, self._skip = self._skip, 0
        yield from torch.randperm(len(self.data_source), generator=g).tolist()[skip:]


class ResumableLoader(DataLoader):
    """The train loader, resumable mid-epoch (Lightning's `state_dict` / `load_state_dict` protocol).

    Its state is (epoch, batches the epoch has trained), read from the trainer when a checkpoint is written;
    Lightning restores it only when a run restarts inside an epoch (an interrupted run saves one at the next
    batch boundary, `callbacks.RunCheckpoint`), and the sampler then skips the batches already trained. Exact with
    `num_workers: 0`, like every resume (the workers' own augmentation streams restart).
    """

    def __init__(self, *args, trained_batches: Callable[[], int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._trained_batches = trained_batches

    def state_dict(self) -> dict:
        sampler = self.sampler
        return {"epoch": int(getattr(sampler, "epoch", 0)), "batches": int(self._trained_batches())}

    def load_state_dict(self, state: dict) -> None:
        if not state.get("batches"):
            return
        if isinstance(self.sampler, EpochShuffleSampler):
            self.sampler.resume_at(int(state["epoch"]), int(state["batches"]) * int(self.batch_size))
        else:  # DDP's DistributedSampler: it cannot skip, so the epoch's remaining steps start from its first batch
            rank_zero_warn(f"resuming inside epoch {state['epoch']} with a distributed sampler: the rest of the epoch "
                           "starts again from its first batches (the samples differ from an uninterrupted run)")


class ClassBalancedSampler(EpochShuffleSampler):
    """As many draws per epoch as there are images, each class equally likely (with replacement within a
    class); like `EpochShuffleSampler`, the draws depend only on (seed, epoch)."""

    def __init__(self, data_source, labels: Sequence[str], seed: int) -> None:
        super().__init__(data_source, seed)
        counts: dict[str, int] = {}
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
        self.weights = torch.tensor([1.0 / counts[label] for label in labels], dtype=torch.float64)

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed * 100_003 + self.epoch)
        yield from torch.multinomial(self.weights, len(self.weights), replacement=True, generator=g).tolist()


class GarbageDataModule(pl.LightningDataModule):
    """Any folder of class folders (the Kaggle "Garbage Classification v2" layout works as it is).

    Args:
        root: dataset folder with one sub-folder per class.
        manifest: split manifest CSV; reused when it exists, written when it does not
            (`scripts/fit.py` puts it in the run directory).
        image_size: square input size the images are resized to.
        batch_size: per-device batch size.
        num_workers: DataLoader worker processes; null (default): one per CPU core this process may use
            (`os.sched_getaffinity`), at most 8.
        split: train/val/test fractions (stratified).
        split_seed: seed of the stratified split.
        augment: train-time augmentation (the seed's ImageDataGenerator settings).
        dedupe: keep one image per duplicate group (exact or near) before splitting. Without it,
            every duplicate group still lands in a single split, so no test image has a twin in train.
        near_duplicate_distance: perceptual-hash distance (bits of 64) at or below which two images
            are near duplicates (resized / re-encoded copies are 0-2 apart); null: exact duplicates only.
        cache: decoded-image cache (`lit_garbage.data.image_cache`): every image decoded and resized once into a
            uint8 file per split, memory-mapped by the workers and reused across epochs and runs; the
            transforms then start from the cached pixels (numerically identical results). `auto` (default):
            in `image_cache/` next to the manifest file (the run directory under fit.py; `.image_cache/`
            when that folder is inside the dataset root, so it is never scanned as a class), when a manifest
            path is given and the cache fits in half the free disk space, else no cache; a folder path: the
            cache lives there (shareable between runs: entries are keyed by manifest content and image size);
            `none`: decode every file every epoch. Costs 3 x image_size^2 bytes per image on disk
            (150 KB at 224 px). Not used for training with `augment.crop_scale` (the crop needs the full image).
        augment_on: where the train-time augmentation runs. `cpu`: per image in the DataLoader workers;
            `device`: per batch on the training device after the transfer (`lit_garbage.data.batch_augment`: the
            workers only hand over uint8 pixels, so a GPU is not starved by a few CPU cores); `auto` (default):
            `device` when training on an accelerator and the augment options allow it, else `cpu`.
        class_weight: `balanced` (the seed's Keras `class_weight`: n / (classes x count) from the train split,
            weighting the training loss) or `none`.
        sampler: `shuffle` (every training image once per epoch, the seed's) or `balanced` (as many draws, each
            class equally likely: small classes repeat, large ones are subsampled); with `balanced`, set
            `class_weight: none`, or the small classes are favoured twice.
        exclude: a file listing photos to leave out of every split (paths relative to `root`, one per line, or a
            CSV with a `path` column such as `lit-garbage audit`'s label_issues.csv). The split is made as without
            it, then the listed photos are dropped; no file is moved or deleted.
    """

    def __init__(
        self,
        root: str,
        manifest: str | None = None,
        image_size: int = DEFAULT_IMAGE_SIZE,
        batch_size: int = 32,
        num_workers: int | None = None,
        split: tuple[float, float, float] = (0.7, 0.15, 0.15),
        split_seed: int = 42,
        augment: Augment = Augment(),
        dedupe: bool = False,
        near_duplicate_distance: int | None = 4,
        cache: str | None = "auto",
        augment_on: str = "auto",
        class_weight: str = "balanced",
        sampler: str = "shuffle",
        exclude: str | None = None,
    ) -> None:
        super().__init__()
        enforce(DATA_RULES, image_size=image_size, batch_size=batch_size, num_workers=num_workers,
                augment_on=augment_on, near_duplicate_distance=near_duplicate_distance, class_weight=class_weight,
                sampler=sampler)
        check_fractions(split)  # a DatasetError, as when the manifest is built
        if augment_on == "device" and augment.enabled:
            BatchAugment(augment)  # refuses, up front, the options that need the CPU
        self.save_hyperparameters()
        # Checkpoints are read as tensors and plain data only (weights_only): a data module built in Python
        # (not by the CLI, whose hyper-parameters are already its config) keeps its options that way too.
        for key, value in self.hparams.items():
            if dataclasses.is_dataclass(value):
                self.hparams[key] = dataclasses.asdict(value)
            elif isinstance(value, os.PathLike):
                self.hparams[key] = os.fspath(value)
        # Recorded absolute: `evaluate` / `export` of this run work from any working folder, not only this one.
        for key in ("root", "manifest"):
            if self.hparams.get(key):
                self.hparams[key] = os.path.abspath(self.hparams[key])
        self.root = Path(root)
        self.manifest_path = manifest
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = auto_workers() if num_workers is None else num_workers
        self.split = tuple(split)
        self.split_seed = split_seed
        self.augment = augment
        self.dedupe = dedupe
        # fit.py seeds (seed_everything) before building this; the loaders' own generators start here.
        self.loader_seed = torch.initial_seed() % 2**31
        self.near_duplicate_distance = near_duplicate_distance
        self.cache = cache
        self.augment_on = augment_on
        self.class_weight = class_weight
        self.sampler = sampler
        self.exclude = exclude
        self.batch_augment: BatchAugment | None = None  # set by train_dataloader() when augmenting on the device
        self._cached_splits: dict[str, CachedSplit | None] = {}
        self.changed_files: dict[str, str] = {}  # path -> how it differs from the reused manifest

    @functools.cached_property
    def manifest(self) -> Manifest:
        """The split manifest: built by the scan, or reused; a reused one is checked against the files first."""
        reused = self.manifest_path is not None and Path(self.manifest_path).is_file()
        manifest = load_or_build_manifest(self.root, self.manifest_path, self.split, self.split_seed,
                                          dedupe=self.dedupe, near_duplicate_distance=self.near_duplicate_distance,
                                          verbose=True,
                                          exclude=read_exclude_list(self.exclude) if self.exclude else frozenset())
        if reused:
            name = Path(self.manifest_path).name
            check = check_files(self.root, manifest.records)
            if check.too_many:
                raise DatasetError(check.error(self.root, name))
            for message in check.warnings(self.root, name):
                rank_zero_warn(f"{message}: another image of the same class is read in its place", stacklevel=2)
            self.changed_files = check.changed
        return manifest

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.class_names)

    @property
    def class_weights(self) -> list[float] | None:
        return self.manifest.class_weights() if self.class_weight == "balanced" else None

    @functools.cached_property
    def image_cache(self) -> ImageCache | None:
        folder = resolve_cache_dir(self.cache, self.manifest_path, self.image_size, len(self.manifest.records),
                                   root=self.root)
        return None if folder is None else ImageCache(folder, self.root, self.manifest.records, self.image_size)

    def cached_split(self, split: str) -> CachedSplit | None:
        """The split's decoded-image cache (built on first use), or None without a cache."""
        if split not in self._cached_splits:
            cache = self.image_cache
            try:
                self._cached_splits[split] = None if cache is None else cache.split(split, self.num_workers)
            except OSError as err:  # e.g. a read-only run directory: decode as before instead of failing
                warnings.warn(f"cannot write the decoded-image cache under {cache.dir} ({err}); reading the image "
                              "files every epoch instead (set data.cache to a writable folder, or none)", stacklevel=2)
                self._cached_splits[split] = None
        return self._cached_splits[split]

    def prepare_data(self) -> None:
        # Lightning calls this on one process per node (local rank 0) and makes the other ranks wait:
        # the cache is built once; `dataset()` on every rank then only opens it. (Each build is atomic,
        # so a rank that still finds a split missing builds an identical file.)
        cache = self.image_cache
        if cache is not None:
            for split in SPLITS:
                if not cache.is_complete(split):
                    self.cached_split(split)

    def augments_on_device(self) -> bool:
        """Whether the train batches are augmented on the training device (see `augment_on`)."""
        if self.augment_on == "cpu" or not self.augment.enabled:
            return False
        if self.augment_on == "device":
            return True
        trainer = self.trainer
        return (trainer is not None and trainer.strategy.root_device.type != "cpu"
                and not device_augment_blockers(self.augment))

    def dataset(self, split: str, train: bool | None = None, on_device: bool = False) -> ManifestDataset:
        """One split's images; `on_device`: train images as uint8 pixels, for `BatchAugment` after the transfer."""
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}', expected one of {SPLITS}")
        augment = split == "train" if train is None else train
        if augment and on_device:
            tf = resize_uint8(self.image_size)
        else:
            tf = train_transform(self.image_size, self.augment) if augment else eval_transform(self.image_size)
        # A random resized crop cuts from the full-resolution image: cached pixels (already at image_size)
        # would give a blurrier crop, so that transform reads the files.
        crops = augment and self.augment.enabled and getattr(self.augment, "crop_scale", None) is not None
        return ManifestDataset(self.root, self.manifest.split(split), self.class_names, tf,
                               cache=None if crops else self.cached_split(split), excluded=self.changed_files)

    def _trained_batches(self) -> int:
        trainer = self.trainer
        return 0 if trainer is None else int(trainer.fit_loop.epoch_loop.batch_progress.current.completed)

    def _loader(self, split: str, shuffle: bool, on_device: bool = False) -> DataLoader:
        dataset = self.dataset(split, on_device=on_device)
        kwargs = dict(
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            # Own generator: creating an iterator (workers' base seed) leaves the global one alone.
            generator=torch.Generator().manual_seed(self.loader_seed),
        )
        if shuffle:
            sampler = (ClassBalancedSampler(dataset, [r.label for r in dataset.records], self.loader_seed)
                       if self.sampler == "balanced" else EpochShuffleSampler(dataset, self.loader_seed))
            return ResumableLoader(dataset, sampler=sampler, trained_batches=self._trained_batches, **kwargs)
        return DataLoader(dataset, **kwargs)

    def train_dataloader(self) -> DataLoader:
        on_device = self.augments_on_device()
        self.batch_augment = BatchAugment(self.augment) if on_device else None
        return self._loader("train", shuffle=True, on_device=on_device)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        # Only train batches come as uint8 (and only when augmenting on the device).
        images, labels = batch
        if self.batch_augment is not None and images.dtype == torch.uint8:
            return self.batch_augment(images), labels
        return batch

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
