"""Fashion-MNIST from its four IDX files (read and validated by numpy_ref.idx, no torchvision), batched the seed's
way.

The seed (d2l `load_data_fashion_mnist(batch_size=128, resize=224)`) turns each 28x28 uint8 image into a float
in [0, 1] and resizes it to 224x224 with bilinear interpolation. Here the images stay uint8 in memory (47 MB for
the training set, on the training device) and each batch is converted and resized when it is drawn:

    images (60000, 28, 28) uint8 --index--> (B, 28, 28) --/255--> (B, 1, 28, 28) float32 --bilinear--> (B, 1, 224, 224)

Where the files are looked for, in order: --data-dir (or FASHION_MNIST_DIR), ./data/fashion-mnist,
/usr/share/datasets/fashion-mnist (Debian's `dataset-fashion-mnist` package); each of the four files may be
gzipped (`.gz`) or raw.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

# The IDX reader and its checks are torch-free and shared with numpy_ref.walkthrough.
from numpy_ref.idx import CLASS_NAMES, DEFAULT_DIRS, HOW_TO_GET, DatasetError, load_split_arrays
from numpy_ref.idx import find_data_dir as _find_explicit_or_default

# ----------------------------------------------------------------------------------------------- the dataset

@dataclass
class FashionMNIST:
    """One split: uint8 images (N, 28, 28) and int64 labels (N,), both torch tensors on one device."""
    images: torch.Tensor
    labels: torch.Tensor
    split: str

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int | None) -> "FashionMNIST":
        """The first n examples (the files are already in random order); None keeps all."""
        if n is None:
            return self
        if n < 1:
            raise ValueError(f"limit for the {self.split} set must be >= 1, got {n}")
        return FashionMNIST(self.images[:n], self.labels[:n], self.split)

    def to(self, device: torch.device | str) -> "FashionMNIST":
        return FashionMNIST(self.images.to(device), self.labels.to(device), self.split)

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=len(CLASS_NAMES)).tolist()


def find_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The first folder holding all four files (numpy_ref.idx.find_data_dir); DatasetError saying how to get them
    when none does. Nothing is downloaded: `make` installs Debian's dataset-fashion-mnist (scripts/setup.sh)."""
    directory = _find_explicit_or_default(data_dir)
    if directory is None:
        raise DatasetError(f"Fashion-MNIST not found in {', '.join(map(str, DEFAULT_DIRS))}; {HOW_TO_GET}")
    return directory


def load_split(directory: str | os.PathLike, split: str) -> FashionMNIST:
    images, labels = load_split_arrays(directory, split)         # (N, 28, 28) uint8, (N,) int64, validated
    return FashionMNIST(torch.from_numpy(images.copy()), torch.from_numpy(labels), split)


def load_fashion_mnist(data_dir: str | os.PathLike | None = None) -> tuple[FashionMNIST, FashionMNIST]:
    """(train, test) with 60000 and 10000 examples, found as find_data_dir says."""
    directory = find_data_dir(data_dir)
    return load_split(directory, "train"), load_split(directory, "test")


# ----------------------------------------------------------------------------------------------- batches

def to_input(images: torch.Tensor, resize: int | None = 224) -> torch.Tensor:
    """uint8 (B, 28, 28) -> float32 (B, 1, R, R) in [0, 1], bilinear like the seed's Resize (upsampling)."""
    x = images.unsqueeze(1).to(torch.float32).div_(255)          # (B, 1, 28, 28)
    if resize is not None and resize != x.shape[-1]:
        x = F.interpolate(x, size=(resize, resize), mode="bilinear", align_corners=False)  # (B, 1, R, R)
    return x


# How the pixels reach the network. "unit": the seed's [0, 1] values (d2l's ToTensor). "mean-subtracted": the 2012
# paper's "(centered) raw RGB values of the pixels" (section 2): raw 0..255 values minus the mean training image.
PIXELS = ("unit", "mean-subtracted")


def pixel_mean(ds: FashionMNIST) -> torch.Tensor:
    """The mean training image, (28, 28) float32 in 0..255 (summed in float64): the paper subtracts "the mean activity
    over the training set from each pixel"."""
    return ds.images.to(torch.float64).mean(dim=0).to(torch.float32)   # (28, 28)


def subtract_mean(X: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """(B, 1, R, R) [0, 1] batch from to_input -> raw 0..255 values minus the mean image resized to R x R. Bilinear
    resizing is linear with weights summing to 1, so the resized mean image is the mean of the resized images: each
    of the R x R input pixels is centred over the training set."""
    mean_r = mean.to(X.device)[None, None]                                # (1, 1, 28, 28)
    if mean_r.shape[-1] != X.shape[-1]:
        mean_r = F.interpolate(mean_r, size=X.shape[-2:], mode="bilinear", align_corners=False)  # (1, 1, R, R)
    return X * 255 - mean_r                                               # (B, 1, R, R)


# ----------------------------------------------------------------------------------------------- sampling and sharding
# Every process (one, or each of torchrun's) draws the SAME seeded permutation of the epoch, cuts it into global
# batches of --batch-size and takes its contiguous shard of each: a global batch means the same on any number of them.

def epoch_order(n: int, seed: int, shuffle: bool) -> torch.Tensor:
    """The epoch's order of the n examples, identical on every rank: a permutation seeded by `seed` (pass
    seed * 1000 + epoch), so an epoch's order is reproducible."""
    if shuffle:
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed))   # (n,)
    return torch.arange(n)                                                        # (n,)


def shard(global_batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank `rank`'s contiguous part of a global batch; sizes differ by at most one (torch.tensor_split)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
    return global_batch.tensor_split(world_size)[rank]


def local_batches(n: int, batch_size: int, seed: int, shuffle: bool, rank: int = 0,
                  world_size: int = 1) -> Iterator[tuple[int, torch.Tensor]]:
    """(global batch size, this rank's indices) for each global batch of the epoch: ceil(n / batch_size) batches
    on every rank, some shards empty when a batch has fewer images than ranks."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = epoch_order(n, seed, shuffle)                      # (n,)
    for start in range(0, n, batch_size):
        glob = order[start:start + batch_size]                 # (B,)
        yield len(glob), shard(glob, rank, world_size)         # (B / world,)


def shard_range(n: int, rank: int, world_size: int) -> range:
    """Rank `rank`'s contiguous part of 0..n-1 (how the evaluation set is split)."""
    idx = shard(torch.arange(n), rank, world_size)             # (n / world,)
    return range(int(idx[0]), int(idx[-1]) + 1) if len(idx) else range(0)


# ----------------------------------------------------------------------------------------------- THE pipeline

def batches(ds: FashionMNIST, batch_size: int, resize: int | None = 224, shuffle: bool = False, seed: int = 0,
            rank: int = 0, world_size: int = 1, channels: int = 1,
            pixel_mean: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """What the model is fed, for training, evaluation and pictures alike: (X (b, C, R, R) float32, y (b,) int64) on
    the dataset's device, this rank's shard of each global batch (the last may be smaller). X is `to_input`'s [0, 1]
    pixels resized to R, minus the mean training image when one is given (the paper's pixels, `subtract_mean`), the
    grey channel repeated to `channels` (3 for the paper's network)."""
    for _, idx in local_batches(len(ds), batch_size, seed, shuffle, rank, world_size):
        idx = idx.to(ds.labels.device)                               # (b,)
        yield model_input(ds.images[idx], resize, channels, pixel_mean), ds.labels[idx]


def model_input(images: torch.Tensor, resize: int | None = 224, channels: int = 1,
                pixel_mean: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (b, 28, 28) -> float32 (b, C, R, R): the [0, 1] pixels resized (`to_input`), minus the mean training
    image for a --pixels mean-subtracted run (`subtract_mean`), the grey channel repeated to C (a view)."""
    X = to_input(images, resize)                                     # (b, 1, R, R) in [0, 1]
    if pixel_mean is not None:
        X = subtract_mean(X, pixel_mean)                             # (b, 1, R, R) 0..255, centred
    return X.expand(-1, channels, -1, -1) if channels != 1 else X


class FashionMNISTSource:
    """The training loop's view of Fashion-MNIST (uint8, already on the device), read the way
    imagefolder.ImageFolderSource is: `batches` of this rank's shard, shuffled per epoch for training."""

    def __init__(self, train_ds: FashionMNIST, test_ds: FashionMNIST, resize: int, channels: int, batch_size: int,
                 rank: int = 0, world_size: int = 1, pixel_mean: torch.Tensor | None = None):
        self.train, self.test, self.classes = train_ds, test_ds, list(CLASS_NAMES)
        self.pixel_mean = pixel_mean   # (28, 28) mean training image (--pixels mean-subtracted), or None
        self.resize, self.channels, self.batch_size = resize, channels, batch_size
        self.rank, self.world_size = rank, world_size
        self.notes: list[str] = []

    def __len__(self) -> int:
        return len(self.train)

    def _batches(self, ds: FashionMNIST, seed: int, shuffle: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return batches(ds, self.batch_size, self.resize, shuffle, seed, self.rank, self.world_size, self.channels,
                       self.pixel_mean)

    def train_batches(self, epoch_seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._batches(self.train, epoch_seed, shuffle=True)

    def test_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._batches(self.test, 0, shuffle=False)

    def take_skipped(self) -> list:
        return []     # nothing in memory is unreadable
