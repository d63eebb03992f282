"""Batches on the training device, from memory or streamed from files, behind one interface.

Two paths, the same output:

    in memory (synthetic, CIFAR-10, any data set that fits): uint8 images ``(N, 3, S', S')`` decoded once
        and kept on the training device; each batch is an index into them; cropping and every other
        augmentation runs on the device, so the accelerator never waits for JPEG decoding
    streamed (ImageNet): a ``DataLoader`` whose (persistent) workers decode and random-resized-crop each file
        on the CPU; the uint8 batch goes to the device, where the rest of the augmentation runs; on CUDA the
        next batch's copy and augmentation run on a side stream while the model computes the current one

Sharding for several processes (DDP): training batches are slices of one global batch (the same
permutation on every rank, seeded by ``seed + epoch``), so W processes with batch B see exactly the
images one process with batch W x B sees; evaluation gives rank r the images r, r + W, r + 2W, ...
On the in-memory path an epoch's indices move to the device once, not once per batch.
"""

from __future__ import annotations

import math
import os
import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, Sampler, Subset

from vitlocal.data.augment import (
    Augment,
    color_jitter,
    hflip,
    mixup_cutmix,
    normalize,
    rand_augment,
    random_erasing,
    random_resized_crop,
    smooth_one_hot,
)
from vitlocal.data.images import EvalTransform, ImageFiles, TrainTransform, collate, decode_all, warn_skipped
from vitlocal.data.sources import (
    CIFAR10,
    IMAGENET100,
    IMAGENETTE,
    FileList,
    ImageTensors,
    download,
    extract,
    imagenet_subset,
    parse_source,
    read_cifar10_binary,
    scan_folder,
)
from vitlocal.data.synthetic import synthetic_images

__all__ = [
    "SYNTHETIC_SIZE",
    "IN_MEMORY_BYTES",
    "Batches",
    "TensorBatches",
    "FileBatches",
    "Data",
    "load_split",
    "build_data",
]

SYNTHETIC_SIZE = {"train": 5_000, "val": 1_000}
IN_MEMORY_BYTES = 8 * 2**30  # decode a file data set into memory when its uint8 pixels take at most this


class Batches:
    """Batches ``(x, target)`` on ``device``, one epoch per iteration.

    Training (``augment`` given): ``x`` ``(B, 3, S, S)`` normalised and augmented, ``target`` ``(B, K)``
    soft (smoothed, mixed). Evaluation: ``x`` normalised, ``target`` ``(B,)`` labels. ``B`` is the batch
    of this process. Random draws come from generators seeded by (seed, epoch, rank).
    """

    def __init__(
        self, img_size: int, num_classes: int, augment: Augment | None, device: torch.device, seed: int, rank: int
    ) -> None:
        self.img_size, self.num_classes, self.augment = img_size, num_classes, augment
        self.device, self.seed, self.rank = device, seed, rank
        self.epoch, self.skipped = 0, 0  # skipped: unreadable images of this split (see the subclasses)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _finish(
        self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator, rng: random.Random, crop: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``(B, 3, H, W)`` + labels -> the model's input and target (see the class docstring)."""
        x, y = x.to(self.device, non_blocking=True).float(), y.to(self.device, non_blocking=True)
        a = self.augment
        if a is None:
            return normalize(x), y
        if crop and a.crop_scale is not None:
            x = random_resized_crop(x, self.img_size, a.crop_scale, a.crop_ratio, g)
        if a.hflip:
            x = hflip(x, a.hflip, g)
        if a.randaugment is not None:
            x = rand_augment(x, *a.randaugment, generator=g)
        elif a.color_jitter:  # quirk: timm uses colour jitter only when there is no auto-augment policy
            x = color_jitter(x, a.color_jitter, g)
        x = normalize(x)
        if a.erase:
            x = random_erasing(x, a.erase, g)
        target = smooth_one_hot(y, self.num_classes, a.smoothing)
        x, target, _ = mixup_cutmix(x, target, a.mixup, a.cutmix, a.switch_prob, rng)
        return x, target

    def _generators(self) -> tuple[torch.Generator, random.Random]:
        key = (self.seed * 1_000_003 + self.epoch) * 1009 + self.rank
        return torch.Generator(self.device).manual_seed(key), random.Random(key)

    def _ahead(
        self, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``batches``, one ahead on CUDA: the next batch's copy and augmentation are queued on a side stream
        before the current one is handed out, so they overlap the model's step. Elsewhere ``batches`` as is."""
        if self.device.type != "cuda":
            yield from batches
            return
        main, side = torch.cuda.current_stream(self.device), torch.cuda.Stream(self.device)

        def prepare() -> tuple[torch.Tensor, torch.Tensor] | None:
            side.wait_stream(main)  # after the work queued so far: nothing the side stream reads is being written
            with torch.cuda.stream(side):
                return next(batches, None)

        upcoming = prepare()
        while upcoming is not None:
            main.wait_stream(side)
            for t in upcoming:
                t.record_stream(main)  # memory made on the side stream, used on the main one
            current, upcoming = upcoming, prepare()
            yield current


class TensorBatches(Batches):
    """The in-memory path: ``images`` ``(N, 3, H, W)`` uint8 moved to ``device`` once.

    Training batches drop the last incomplete global batch; evaluation keeps every image.
    """

    def __init__(self, data: ImageTensors, batch_size: int, *, world: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.images, self.labels = data.images.to(self.device), data.labels.to(self.device)
        self.batch_size, self.world = batch_size, world

    def _order(self) -> torch.Tensor:
        """This process's image indices for the epoch, on the device, in batch order."""
        n, b = len(self.labels), self.batch_size
        if self.augment is None:
            return torch.arange(self.rank, n, self.world, device=self.device)
        # drawn on the CPU, so that the order is the same on every device type (a GPU run sees the images in
        # the CPU run's order), then moved once per epoch: a global batch is (world, b), this rank takes its row
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        glob = b * self.world
        mine = order[: n // glob * glob].view(-1, self.world, b)[:, self.rank]
        return mine.reshape(-1).to(self.device)

    def __len__(self) -> int:
        n, b = len(self.labels), self.batch_size
        if self.augment is not None:
            return n // (b * self.world)
        return math.ceil(len(range(self.rank, n, self.world)) / b)

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g, rng = self._generators()
        for index in self._order().split(self.batch_size):
            yield self._finish(self.images[index], self.labels[index], g, rng, crop=True)


class _SeededCrops(Sampler):
    """A ``DistributedSampler``'s indices, each paired with the seed of its random crop, from (seed, epoch, index).

    The crops are then the same whichever worker decodes them and however many workers there are, and persistent
    worker processes (which keep the random state they started with) still resume exactly.
    """

    def __init__(self, sampler: DistributedSampler, seed: int) -> None:
        self.sampler, self.seed, self.epoch = sampler, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)  # or every epoch repeats the same order (pytorch #31771)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        key = (self.seed * 1_000_003 + self.epoch) << 32
        return ((i, (key + i) % 2**64) for i in self.sampler)


class FileBatches(Batches):
    """The streaming path: a ``DataLoader`` decodes (and, for training, random-resized-crops) on CPU workers.

    Unreadable files are skipped, reported once, and counted in ``skipped`` for each pass over the data: as
    on the in-memory path, ``skipped`` is the number of unreadable images of this split an epoch met.
    """

    def __init__(
        self, files: FileList, batch_size: int, *, world: int = 1, workers: int = 0, crop_pct: float, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        a, size = self.augment, self.img_size
        train = a is not None
        if train and a.crop_scale is not None:
            transform = TrainTransform(size, a.crop_scale, a.crop_ratio)
        else:
            transform = EvalTransform(size, crop_pct)
        dataset = ImageFiles(files, transform)
        if train:
            shuffle = DistributedSampler(
                dataset, num_replicas=world, rank=self.rank, shuffle=True, seed=self.seed, drop_last=True
            )
            # a seed per image only where there is a random crop to draw: EvalTransform draws nothing
            self.sampler = _SeededCrops(shuffle, self.seed) if isinstance(transform, TrainTransform) else shuffle
        else:
            dataset, self.sampler = Subset(dataset, range(self.rank, len(dataset), world)), None
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            drop_last=train,
            persistent_workers=workers > 0,  # started once, not every epoch
        )
        self.warned = False

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def num_images(self) -> int:
        return len(self.loader.dataset)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._ahead(self._batches())

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g, rng = self._generators()
        self.skipped = 0
        for x, y, skipped in self.loader:
            if skipped:
                if not self.warned:
                    warn_skipped(skipped, len(skipped))
                    self.warned = True
                self.skipped += len(skipped)
            if len(y):  # a batch of unreadable images only is dropped
                yield self._finish(x, y, g, rng, crop=False)


@dataclass
class Data:
    """The two splits of a source as `Batches`, and the class names."""

    train: Batches
    val: Batches
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _folder(path: str | Path) -> Path:
    """A folder as is; an archive extracted (once) into the cache."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; check the path in --data")
    return path if path.is_dir() else extract(path)


def load_split(
    source: str, split: str, img_size: int = 32, seed: int = 0, limit: int | None = None
) -> FileList | ImageTensors:
    """The ``split`` ("train" or "val") of a source string (see `vitlocal.data.sources`), as files or pixels;
    synthetic images are generated at ``img_size``, at most ``limit`` of them."""
    name, path = parse_source(source)
    if name == "synthetic":
        n = min(SYNTHETIC_SIZE[split], limit or SYNTHETIC_SIZE[split])
        return synthetic_images(n, img_size, split=split, seed=seed)
    if name == "cifar10":
        root = extract(download(CIFAR10)) if path is None else _folder(path)
        binary = next(root.rglob("batches.meta.txt"), None) is not None
        return read_cifar10_binary(root, split) if binary else scan_folder(root, split)
    if name == "imagenette":
        return scan_folder(extract(download(IMAGENETTE)) if path is None else _folder(path), split)
    if name == "imagenet100":
        return imagenet_subset(path, IMAGENET100, split=split)
    return scan_folder(_folder(path), split)  # imagenet or any folder


def _limit(split: FileList | ImageTensors, limit: int | None) -> FileList | ImageTensors:
    """At most ``limit`` items, evenly spaced (so that every class keeps a share)."""
    n = len(split.samples) if isinstance(split, FileList) else len(split.labels)
    if limit is None or limit >= n:
        return split
    keep = torch.linspace(0, n - 1, limit).round().long()
    if isinstance(split, FileList):
        return FileList([split.samples[i] for i in keep.tolist()], split.classes)
    return ImageTensors(split.images[keep], split.labels[keep], split.classes)


def _resize(data: ImageTensors, size: int) -> ImageTensors:
    """Pixels resized to ``size x size`` (bicubic, antialiased) when they are not that size already."""
    if data.images.shape[-1] == size and data.images.shape[-2] == size:
        return data
    images = F.interpolate(data.images.float(), size=(size, size), mode="bicubic", antialias=True)
    return ImageTensors(images.round().clamp(0, 255).to(torch.uint8), data.labels, data.classes)


def build_data(
    source: str,
    img_size: int,
    batch_size: int,
    *,
    augment: Augment | None = None,
    crop_pct: float = 0.875,
    device: str | torch.device = "cpu",
    seed: int = 0,
    rank: int = 0,
    world: int = 1,
    workers: int | None = None,
    in_memory: bool | None = None,
    limit: tuple[int | None, int | None] = (None, None),
) -> Data:
    """Training and validation batches of ``source`` for one process.

    ``batch_size`` is this process's batch; ``augment`` the training augmentation (``None``: none, the
    training images are prepared like the validation ones); ``in_memory`` chooses the path (``None``:
    in memory when the uint8 pixels take at most `IN_MEMORY_BYTES`); ``limit`` caps the number of
    (train, val) images, evenly spaced; ``workers`` defaults to the CPU cores this process may use, shared
    among the ``world`` processes (no fixed cap: a fast GPU eats more decoded JPEGs per second than 8 cores make).
    """
    device = torch.device(device)
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        workers = cores // world
    common = dict(img_size=img_size, device=device, seed=seed, rank=rank)
    splits = {
        s: _limit(load_split(source, s, img_size, seed, n), n) for s, n in zip(("train", "val"), limit, strict=True)
    }
    crop = augment is not None and augment.crop_scale is not None
    store = {"train": int(img_size / crop_pct) if crop else img_size, "val": img_size}
    if in_memory is None:
        files = {s: split for s, split in splits.items() if isinstance(split, FileList)}
        in_memory = sum(len(split.samples) * 3 * store[s] ** 2 for s, split in files.items()) <= IN_MEMORY_BYTES

    batches = {}
    for name, split in splits.items():
        aug, skipped = augment if name == "train" else None, 0
        if isinstance(split, FileList) and in_memory:
            # train: a square at the larger size, cropped on the device; val: the final eval crop
            train_crop = name == "train" and crop
            split, skipped = decode_all(split, EvalTransform(store[name], 1.0 if train_crop else crop_pct), workers)
        if isinstance(split, ImageTensors):
            if not (name == "train" and crop):
                split = _resize(split, img_size)
            batches[name] = TensorBatches(
                split, batch_size, world=world, num_classes=len(split.classes), augment=aug, **common
            )
            batches[name].skipped = skipped
        else:
            batches[name] = FileBatches(
                split,
                batch_size,
                world=world,
                workers=workers,
                crop_pct=crop_pct,
                num_classes=len(split.classes),
                augment=aug,
                **common,
            )
    classes = splits["train"].classes
    if classes != splits["val"].classes:
        only = sorted(set(classes) ^ set(splits["val"].classes))
        raise ValueError(
            f"--data {source}: the train and val splits have different class folders (in one split only: "
            f"{only[:5]}); give both splits the same class folders"
        )
    if len(classes) < 2:
        warnings.warn(
            f"--data {source} has one class ({classes[0]}): every prediction is right; give it two or more class "
            f"folders",
            stacklevel=2,
        )
    return Data(batches["train"], batches["val"], classes)
