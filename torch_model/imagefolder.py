"""Images sorted into class folders (ImageNet's layout), decoded with Pillow in DataLoader worker processes.

    DATA/train/CLASS/*.jpg|*.jpeg|*.png     one sub-folder per class (sorted names -> labels 0, 1, ...)
    DATA/val/CLASS/...                      optional; without it a seeded 10% of train/ is held out (stated)
    DATA/CLASS/...                          also accepted: the folder itself is the training set (seeded split)

One image's way through the pipeline (never the whole set in memory; only the paths are):

    path --Decode(RGB)--> PIL (H, W, 3) --ResizeShortSide(256)--> (256, >=256) --RandomCrop(227)--> (227, 227)
         --HorizontalFlip(0.5)--> --to_uint8_tensor--> (3, 227, 227) uint8     [in a worker process]
    collate: (B, 3, 227, 227) uint8 --to_input (on the training device)--> /255, -mean, /std --> float32

That is the paper's training augmentation (short side 256, a random crop of the model's input size, a horizontal
flip); evaluation takes the centre crop instead. d2l's variant gets grey images with the short side resized to
--resize and centre-cropped square (d2l's Resize on Fashion-MNIST's square images, generalised to photos).

Randomness: each image's crop and flip come from its own `random.Random(sample_seed(epoch_seed, index))`, so an
epoch's augmentation is the same for any number of workers or processes and after a resume.
A corrupt or unreadable image is returned as a hole that `collate` drops and reports (the caller counts it).
"""
from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")   # compared lower-case: ImageNet's .JPEG counts
VAL_FRACTION = 0.1        # held out of train/ (seeded) when there is no val/ beside it
STATS_SAMPLE = 1000       # images (seeded sample of the training set) behind the per-channel mean and std
PAPER_SHORT_SIDE = 256    # the paper: "rescaled the image such that the shorter side was of length 256"
# Pillow's ways of failing on a bad file: OSError (truncated, unidentified: UnidentifiedImageError), SyntaxError and
# ValueError (broken headers in some plugins), DecompressionBombError (absurd sizes), EOFError (cut-off frames).
UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


# ----------------------------------------------------------------------------------------------- the folder

@dataclass
class FolderScan:
    """(path, label) for every image under a folder's class sub-folders, labels from the sorted class names."""
    root: Path
    classes: list[str]
    samples: list[tuple[str, int]]
    ignored: int = 0          # files with another extension (counted, not read)

    def __len__(self) -> int:
        return len(self.samples)

    def class_counts(self) -> list[int]:
        counts = [0] * len(self.classes)
        for _, label in self.samples:
            counts[label] += 1
        return counts


class _Walk:
    """Where a scan has been: every real directory of one class walked once (a symlink back up the tree, `ln -s ..
    CLASS/loop`, is not followed round again), every real file of the whole scan taken once, under the first path
    that reached it. Identity is (st_dev, st_ino), so two links to one file or folder are one."""

    def __init__(self):
        self.files: dict[tuple[int, int], tuple[str, str]] = {}   # file identity -> (class, path it was taken as)
        self.dirs: set[tuple[int, int]] = set()                    # this class's walked directories

    def image_files(self, folder: Path, name: str) -> tuple[list[str], int]:
        """Images under `folder` (recursively: a folder's own files sorted, then its sub-folders' in order) and
        the number of other files. Raises ValueError naming a folder that cannot be listed, or a file that is
        reached under two classes."""
        self.dirs = set()
        images: list[str] = []
        ignored = self._walk(str(folder), name, images, f"class folder {name!r}")
        return images, ignored

    def _walk(self, folder: str, name: str, images: list[str], what: str) -> int:
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in self.dirs:
                return 0                                    # already walked in this class (a link loop)
            self.dirs.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise ValueError(f"{folder}: {what} cannot be read ({type(exc).__name__}: {exc.strerror or exc}); fix "
                             f"its permissions or move it out of the data folder") from None
        ignored, subdirs = 0, []
        for entry in entries:
            if _is_dir(entry):
                subdirs.append(entry.path)
            elif entry.name.startswith("."):
                continue
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                if self._take(entry, name):
                    images.append(entry.path)
            else:
                ignored += 1
        for sub in subdirs:
            ignored += self._walk(sub, name, images, f"a folder of class {name!r}")
        return ignored

    def _take(self, entry: os.DirEntry, name: str) -> bool:
        """True the first time a real file is met; False when this class already has it (a second link);
        ValueError when another class has it."""
        try:
            st = entry.stat()
        except OSError:
            return True                                     # a broken link: kept, reported unreadable when read
        key = (st.st_dev, st.st_ino)
        if key not in self.files:
            self.files[key] = (name, entry.path)
            return True
        other, first = self.files[key]
        if other != name:
            raise ValueError(f"{entry.path}: the same file as {first}, so it would be labelled both {other!r} and "
                             f"{name!r} (a link between class folders?); each image must sit under one class")
        return False


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()                               # follows links: a linked folder is walked
    except OSError:
        return False


def scan_folder(root: str | os.PathLike, classes: Sequence[str] | None = None) -> FolderScan:
    """Scan root/CLASS/... . With `classes` (the training set's), root's class folders must be among them and keep
    their labels (a validation folder may lack a class). Raises ValueError naming the folder when there is nothing
    to learn from: no class folders, no images, only files of unknown extensions, a single class."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root}: is a file, not a folder (expected one sub-folder of images per class)")
    if not root.is_dir():
        raise ValueError(f"{root}: no such folder (expected one sub-folder of images per class)")
    try:
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        raise ValueError(f"{root}: cannot be read ({type(exc).__name__}: {exc.strerror or exc})") from None
    known = ", ".join(IMAGE_EXTENSIONS)
    if not found:
        raise ValueError(f"{root}: no class sub-folders (expected {root}/CLASS/IMAGE with {known} images)")
    if classes is not None:
        unknown = [c for c in found if c not in classes]
        if unknown:
            raise ValueError(f"{root}: class folder(s) {', '.join(unknown[:5])} not among the training set's "
                             f"{len(classes)} classes")
    names = list(classes) if classes is not None else found
    label_of = {name: i for i, name in enumerate(names)}
    samples: list[tuple[str, int]] = []
    ignored, empty = 0, []
    walk = _Walk()
    for name in found:
        images, other = walk.image_files(root / name, name)
        ignored += other
        if not images:
            empty.append(name)
        samples.extend((path, label_of[name]) for path in images)
    if not samples:
        what = f"{ignored} file(s), none with an image extension ({known})" if ignored else f"no images ({known})"
        raise ValueError(f"{root}: {what} in its {len(found)} class folder(s)")
    if classes is None:
        if empty:
            raise ValueError(f"{root}: class folder(s) {', '.join(empty[:5])} hold no images ({known})")
        if len(found) < 2:
            raise ValueError(f"{root}: a single class ({found[0]}); a classifier needs at least two class folders")
    return FolderScan(root, names, samples, ignored)


@dataclass
class Splits:
    train: FolderScan
    val: FolderScan
    how: str                  # one sentence for the run's log: where the evaluation images come from


def find_splits(data_dir: str | os.PathLike, seed: int = 0, val_fraction: float = VAL_FRACTION) -> Splits:
    """DATA/train (+ DATA/val if present), or DATA itself; without a val/ folder a seeded `val_fraction` of the
    training images (a random permutation by `seed`, at least one image) is held out for evaluation."""
    data_dir = Path(data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise ValueError(f"--data-dir {data_dir}: is a file, not a folder (expected one sub-folder of images per "
                         f"class, or train/ and val/ folders of them)")
    if not data_dir.is_dir():
        raise ValueError(f"--data-dir {data_dir}: no such folder")
    train_dir = data_dir / "train" if (data_dir / "train").is_dir() else data_dir
    train = scan_folder(train_dir)
    val_dir = data_dir / "val"
    if train_dir != data_dir and val_dir.is_dir():
        val = scan_folder(val_dir, classes=train.classes)
        return Splits(train, val, f"training images from {train_dir}, evaluation images from {val_dir}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n = len(train)
    n_val = max(1, round(val_fraction * n))
    if n_val >= n:
        raise ValueError(f"{train_dir}: {n} image(s) are too few to hold {val_fraction:.0%} out for evaluation")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    held = set(order[:n_val])
    val = FolderScan(train.root, train.classes, [s for i, s in enumerate(train.samples) if i in held])
    kept = FolderScan(train.root, train.classes, [s for i, s in enumerate(train.samples) if i not in held],
                      train.ignored)
    return Splits(kept, val, f"no {val_dir}: {n_val} of the {n} images in {train_dir} ({val_fraction:.0%}, "
                             f"seed {seed}) held out for evaluation")


# ----------------------------------------------------------------------------------------------- transforms
# Each is a small named step: __call__(img, rng) with `rng` a random.Random (only the random ones use it).

@dataclass(frozen=True)
class Decode:
    """Open a file and convert it to `mode` ("RGB" or "L"). With `short_side`, a JPEG is decoded straight at the
    smallest of its DCT scales (1/2, 1/4, 1/8) that still keeps the short side >= short_side (Pillow's draft mode:
    a 4x smaller decode for a 1000-pixel photo headed for 256), before any resize.

    A 16-bit grey PNG (Pillow's modes I;16, I;16B, I;16L; or I holding 0..65535) is scaled to 8 bits first,
    v8 = round(v16 / 257) (65535 -> 255, the same brightness): Pillow's own convert() clips those values at 255,
    which turns almost every pixel white. An I image with values outside 0..65535 is refused (ValueError naming
    the file, reported as an unreadable image). 16-bit RGB PNGs are already 8-bit when Pillow opens them."""
    mode: str
    short_side: int | None = None

    def __call__(self, path: str, rng: random.Random | None = None) -> Image.Image:
        with Image.open(path) as img:
            if self.short_side is not None and img.format == "JPEG":
                w, h = img.size
                scale = self.short_side / min(w, h)
                img.draft(self.mode, (math.ceil(w * scale), math.ceil(h * scale)))
            if img.mode.startswith("I"):
                return _grey16_to_8(img, path).convert(self.mode)
            return img.convert(self.mode)   # convert() loads the pixels: a corrupt file fails here, inside `with`


def _grey16_to_8(img: Image.Image, path: str) -> Image.Image:
    """Pillow's 16/32-bit integer grey image -> 8-bit "L": round(v / 257), so 0..65535 maps onto 0..255."""
    v = np.asarray(img).astype(np.int64)                        # (H, W)
    if v.size and (v.min() < 0 or v.max() > 65535):
        raise ValueError(f"{path}: a {img.mode} image with values {v.min()}..{v.max()}, outside 16 bits "
                         f"(0..65535); save it as 8- or 16-bit PNG")
    return Image.fromarray(((v + 128) // 257).astype(np.uint8), mode="L")     # (H, W) uint8


@dataclass(frozen=True)
class ResizeShortSide:
    """Scale (bilinear, antialiased) so that the shorter side is `size`, keeping the aspect ratio;
    the long side is rounded like torchvision's Resize(int): int(size * long / short)."""
    size: int

    def __call__(self, img: Image.Image, rng: random.Random | None = None) -> Image.Image:
        w, h = img.size
        if min(w, h) == self.size:
            return img
        if w <= h:
            new = (self.size, int(self.size * h / w))
        else:
            new = (int(self.size * w / h), self.size)
        return img.resize(new, Image.BILINEAR)


def _check_fits(img: Image.Image, size: int, what: str) -> None:
    if min(img.size) < size:
        raise ValueError(f"{what}({size}) of a {img.size[0]}x{img.size[1]} image: resize its short side first")


@dataclass(frozen=True)
class RandomCrop:
    """A size x size window at a uniformly random position (top and left drawn from rng)."""
    size: int

    def __call__(self, img: Image.Image, rng: random.Random) -> Image.Image:
        _check_fits(img, self.size, "RandomCrop")
        w, h = img.size
        top, left = rng.randint(0, h - self.size), rng.randint(0, w - self.size)
        return img.crop((left, top, left + self.size, top + self.size))


@dataclass(frozen=True)
class CenterCrop:
    """The size x size window in the middle; an odd margin puts the extra pixel after, as torchvision's does
    (top = round((H - size) / 2))."""
    size: int

    def __call__(self, img: Image.Image, rng: random.Random | None = None) -> Image.Image:
        _check_fits(img, self.size, "CenterCrop")
        w, h = img.size
        top, left = int(round((h - self.size) / 2)), int(round((w - self.size) / 2))
        return img.crop((left, top, left + self.size, top + self.size))


@dataclass(frozen=True)
class HorizontalFlip:
    """Mirror left-right with probability p (one rng.random() draw per image)."""
    p: float = 0.5

    def __call__(self, img: Image.Image, rng: random.Random) -> Image.Image:
        return img.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < self.p else img


def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """PIL (H, W[, C]) -> uint8 tensor (C, H, W); kept as bytes until the batch reaches its device (4x less to
    move between processes than float32)."""
    array = np.asarray(img, dtype=np.uint8)                     # (H, W, C) or (H, W)
    if array.ndim == 2:
        array = array[:, :, None]                               # (H, W, 1)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())    # (C, H, W)


@dataclass(frozen=True)
class Pipeline:
    """Decode, then each step in order, then to_uint8_tensor. Deterministic for a given rng."""
    steps: tuple

    def __call__(self, path: str, rng: random.Random) -> torch.Tensor:
        img = path
        for step in self.steps:
            img = step(img, rng)
        return to_uint8_tensor(img)

    def __str__(self) -> str:
        return " -> ".join(f"{type(s).__name__}({', '.join(repr(v) for v in vars(s).values())})"
                           for s in self.steps)


def train_pipeline(variant: str, size: int) -> Pipeline:
    """paper: RGB, short side 256 (or `size` if larger), random size x size crop, horizontal flip.
    d2l: grey, short side `size`, centre crop (d2l trains Fashion-MNIST without augmentation)."""
    if variant == "paper":
        short = max(PAPER_SHORT_SIDE, size)
        return Pipeline((Decode("RGB", short), ResizeShortSide(short), RandomCrop(size), HorizontalFlip(0.5)))
    if variant == "d2l":
        return eval_pipeline(variant, size)
    raise ValueError(f"variant must be d2l or paper, got {variant!r}")


def eval_pipeline(variant: str, size: int) -> Pipeline:
    """paper: RGB, short side 256 (or `size`), centre crop. d2l: grey, short side `size`, centre crop."""
    if variant == "paper":
        short = max(PAPER_SHORT_SIDE, size)
        return Pipeline((Decode("RGB", short), ResizeShortSide(short), CenterCrop(size)))
    if variant == "d2l":
        return Pipeline((Decode("L", size), ResizeShortSide(size), CenterCrop(size)))
    raise ValueError(f"variant must be d2l or paper, got {variant!r}")


def sample_seed(epoch_seed: int, index: int) -> int:
    """The seed of one image's augmentation in one epoch: a fixed mix of the two (splitmix64's constants), the
    same in every worker and process."""
    z = (epoch_seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) % (1 << 64)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % (1 << 64)
    return z ^ (z >> 31)


# ----------------------------------------------------------------------------------------------- dataset, batches

class Batch(NamedTuple):
    images: torch.Tensor          # (B, C, S, S) uint8, B = the readable images of the batch
    labels: torch.Tensor          # (B,) int64
    skipped: list                 # [(path, reason)] of the images that could not be read


class ImageFolderDataset(torch.utils.data.Dataset):
    """Map-style dataset over a FolderScan. Item keys are `index` or `(index, sample_seed)` (what
    EpochBatchSampler yields); an unreadable file gives (None, label, path, reason), which `collate` drops."""

    def __init__(self, scan: FolderScan, pipeline: Pipeline, channels: int, size: int):
        self.scan, self.pipeline = scan, pipeline
        self.shape = (channels, size, size)

    def __len__(self) -> int:
        return len(self.scan)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, key)
        path, label = self.scan.samples[index]
        try:
            return self.pipeline(path, random.Random(seed)), label, None, None
        except UNREADABLE as exc:
            return None, label, path, f"{type(exc).__name__}: {exc}"

    def collate(self, items: list) -> Batch:
        good = [(x, label) for x, label, _, _ in items if x is not None]
        skipped = [(path, reason) for x, _, path, reason in items if x is None]
        if good:   # numpy's single-threaded copy: torch.stack's threads stall a busy machine's main process
            images = torch.from_numpy(np.stack([x.numpy() for x, _ in good]))   # (B, C, S, S) uint8
        else:
            images = torch.empty((0, *self.shape), dtype=torch.uint8)      # (0, C, S, S)
        labels = torch.tensor([label for _, label in good], dtype=torch.int64)  # (B,)
        return Batch(images, labels, skipped)


class EpochBatchSampler(torch.utils.data.Sampler):
    """Yields, for each global batch of the epoch's seeded permutation, this rank's shard as
    [(index, sample_seed), ...] (data.local_batches); `set_epoch(epoch_seed)` before each epoch.
    Every rank yields the same number of batches (some may be empty at the end)."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.shuffle = n, batch_size, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch_seed = 0

    def set_epoch(self, epoch_seed: int) -> None:
        self.epoch_seed = epoch_seed

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        from torch_model.data import local_batches

        for _, local in local_batches(self.n, self.batch_size, self.epoch_seed, self.shuffle,
                                      self.rank, self.world_size):
            yield [(i, sample_seed(self.epoch_seed, i)) for i in local.tolist()]


def default_workers() -> int:
    """DataLoader workers per training process when --workers is not given: the CPUs this process may use (its
    share when torchrun starts several on the machine), one left for the training loop, at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(8, per_process - 1))


def make_loader(dataset: ImageFolderDataset, sampler: EpochBatchSampler, workers: int,
                pin_memory: bool = False, generator: torch.Generator | None = None) -> torch.utils.data.DataLoader:
    """A DataLoader decoding in `workers` processes (0: in this process), kept alive between epochs.

    Making an iterator over a DataLoader draws its workers' base seed from `generator`, or, without one, from the
    global torch RNG: once per epoch with 0 workers, once for the whole run with persistent workers, once more after
    a resume. The global RNG is the training's dropout stream, so the loader gets its own generator (a fresh one when
    none is given): the dropout masks then depend on neither --workers nor a resume. (The images' own randomness
    comes from sample_seed, not from the workers' seeds.)"""
    if workers < 0:
        raise ValueError(f"--workers must be >= 0, got {workers}")
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                       collate_fn=dataset.collate, pin_memory=pin_memory,
                                       persistent_workers=workers > 0,
                                       generator=generator if generator is not None else torch.Generator())


# ----------------------------------------------------------------------------------------------- normalization

@dataclass
class Normalization:
    """Per-channel mean and std of the pixels in [0, 1]; `source` says where they came from."""
    mean: list[float]
    std: list[float]
    source: str = "given"

    def __post_init__(self):
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"mean {self.mean} and std {self.std} need one value per channel")
        if any(not (s > 0 and math.isfinite(s)) for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")


def parse_channels(text: str, flag: str) -> list[float]:
    """'0.485,0.456,0.406' -> [0.485, 0.456, 0.406] (the flags --mean / --std)."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected comma-separated numbers, one per channel") from None


def channel_stats(dataset: ImageFolderDataset, sample: int = STATS_SAMPLE, seed: int = 0,
                  workers: int = 0) -> Normalization:
    """Mean and std per channel over every pixel of a seeded sample of at most `sample` images, taken through
    `dataset`'s pipeline (give it the evaluation pipeline: no random crops). The sums of the uint8 values and of
    their squares are exact integers, so a variance of 0 (every sampled pixel the same in every channel: nothing to
    learn from, e.g. blank or clipped images) is told apart from a small one, and refused naming the folder; a
    single flat channel gets std 1e-6 (its normalized values are all 0)."""
    n = len(dataset)
    chosen = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:sample].tolist()
    subset = torch.utils.data.Subset(dataset, chosen)
    loader = torch.utils.data.DataLoader(subset, batch_size=64, num_workers=workers, collate_fn=dataset.collate,
                                         generator=torch.Generator().manual_seed(seed))
    channels = dataset.shape[0]
    total = torch.zeros(channels, dtype=torch.int64)           # sum of the 0..255 values
    total_sq = torch.zeros(channels, dtype=torch.int64)        # sum of their squares (< 2^63 for 1e13 pixels)
    pixels = images = 0
    for batch in loader:
        x = batch.images.to(torch.int64)                          # (B, C, S, S)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
        pixels += x.shape[0] * x.shape[2] * x.shape[3]
        images += x.shape[0]
    if pixels == 0:
        raise ValueError(f"{dataset.scan.root}: none of the {len(chosen)} sampled images could be read")
    # per channel: var = (pixels * sum(v^2) - sum(v)^2) / pixels^2, in Python's exact integers, then / 255^2
    var = [(pixels * int(q) - int(t) ** 2) / pixels ** 2 / 255 ** 2 for t, q in zip(total.tolist(), total_sq.tolist())]
    mean = [int(t) / pixels / 255 for t in total.tolist()]
    if not any(var):
        raise ValueError(f"--data-dir: the training images in {dataset.scan.root} have no contrast: every pixel of "
                         f"the {images} sampled image(s) is the same (per-channel mean {_fmt(mean)}, std 0 measured "
                         f"over {pixels} pixels per channel, in [0, 1]); nothing to learn from (blank images?)")
    return Normalization(mean, [max(math.sqrt(v), 1e-6) for v in var],
                         f"measured on {len(chosen)} training images (seed {seed})")


def to_input(images: torch.Tensor, norm: Normalization | None, device: torch.device | str) -> torch.Tensor:
    """uint8 (B, C, S, S) -> float32 (B, C, S, S) on `device`: x / 255, then (x - mean) / std per channel."""
    x = images.to(device, non_blocking=True).to(torch.float32).div_(255)   # (B, C, S, S)
    if norm is not None:
        if len(norm.mean) != x.shape[1]:
            raise ValueError(f"normalization has {len(norm.mean)} channel(s), the images {x.shape[1]}")
        mean = torch.tensor(norm.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)  # (1, C, 1, 1)
        std = torch.tensor(norm.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)    # (1, C, 1, 1)
        x = x.sub_(mean).div_(std)
    return x


# ----------------------------------------------------------------------------------------------- for the training loop

def seeded_subset(scan: FolderScan, limit: int | None, seed: int) -> FolderScan:
    """`limit` images of the scan drawn by a seeded permutation (a folder is sorted by class: its first N images
    would be one class), kept in folder order; None keeps all."""
    if limit is None or limit >= len(scan):
        return scan
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    keep = sorted(torch.randperm(len(scan), generator=torch.Generator().manual_seed(seed))[:limit].tolist())
    return FolderScan(scan.root, scan.classes, [scan.samples[i] for i in keep], scan.ignored)


class ImageFolderSource:
    """An image folder as the training loop reads it, on one process or as rank `rank` of `world_size`:

        source.train_batches(epoch_seed)  -> (X (b, C, S, S) float32, y (b,)) on `device`: this rank's shard of
                                             each global batch of the epoch's seeded permutation
        source.test_batches()             -> the same over the evaluation images, in order
        source.take_skipped()             -> [(path, reason)] of the unreadable images met since the last call
        len(source.train), len(source.test), source.classes, source.notes (what to tell the user)

    C is 3 for the paper's variant (RGB), 1 for d2l's (grey); S the model's input size. `norm` must be the same on
    every rank: decide it on rank 0 (`decide_normalization`) and broadcast it.
    """

    def __init__(self, splits: Splits, variant: str, size: int, batch_size: int, workers: int,
                 device: torch.device, norm: Normalization | None, rank: int = 0, world_size: int = 1):
        channels = 3 if variant == "paper" else 1
        if norm is not None and len(norm.mean) != channels:
            raise ValueError(f"--mean/--std give {len(norm.mean)} value(s); the {variant} variant's images have "
                             f"{channels} channel(s)")
        self.train, self.test, self.classes = splits.train, splits.val, splits.train.classes
        self.device, self.norm, self.batch_size = device, norm, batch_size
        self.train_ds = ImageFolderDataset(splits.train, train_pipeline(variant, size), channels, size)
        self.test_ds = ImageFolderDataset(splits.val, eval_pipeline(variant, size), channels, size)
        self.train_sampler = EpochBatchSampler(len(self.train), batch_size, True, rank, world_size)
        self.test_sampler = EpochBatchSampler(len(self.test), batch_size, False, rank, world_size)
        pin = device.type == "cuda"
        # the loaders' own generators, re-seeded before each pass (make_loader: the global RNG is dropout's)
        self.train_generator, self.test_generator = torch.Generator(), torch.Generator()
        self.train_loader = make_loader(self.train_ds, self.train_sampler, workers, pin, self.train_generator)
        self.test_loader = make_loader(self.test_ds, self.test_sampler, workers, pin, self.test_generator)
        self._skipped: list[tuple[str, str]] = []
        norm_text = "none" if norm is None else (f"mean {_fmt(norm.mean)}, std {_fmt(norm.std)} ({norm.source})")
        self.notes = [splits.how,
                      f"{len(self.classes)} classes, {len(self.train)} training / {len(self.test)} evaluation images"
                      + (f"; {splits.train.ignored} file(s) with other extensions ignored" if splits.train.ignored
                         else ""),
                      f"training pipeline: {self.train_ds.pipeline}; evaluation: {self.test_ds.pipeline}",
                      f"per-channel normalization: {norm_text}; decoding in {workers} DataLoader worker process(es)"
                      + (" per rank" if world_size > 1 else "")]

    def __len__(self) -> int:
        return len(self.train)

    def _batches(self, loader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in loader:
            self._skipped.extend(batch.skipped)
            yield to_input(batch.images, self.norm, self.device), batch.labels.to(self.device, non_blocking=True)

    def train_batches(self, epoch_seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.train_sampler.set_epoch(epoch_seed)
        self.train_generator.manual_seed(epoch_seed)        # the run's seed and epoch, never the global RNG
        return self._batches(self.train_loader)

    def test_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.test_generator.manual_seed(0)
        return self._batches(self.test_loader)

    def take_skipped(self) -> list[tuple[str, str]]:
        skipped, self._skipped = self._skipped, []
        return skipped


def _fmt(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"


def decide_normalization(splits: Splits, variant: str, size: int, mean: list[float] | None,
                         std: list[float] | None, seed: int, workers: int, given_as: str = "given") -> Normalization:
    """The given --mean/--std (both or neither), else measured on a seeded sample of at most STATS_SAMPLE
    training images through the evaluation pipeline (centre crops)."""
    if (mean is None) != (std is None):
        raise ValueError("--mean and --std go together: give both (one value per channel) or neither")
    if mean is not None:
        return Normalization(list(mean), list(std), given_as)
    channels = 3 if variant == "paper" else 1
    ds = ImageFolderDataset(splits.train, eval_pipeline(variant, size), channels, size)
    return channel_stats(ds, STATS_SAMPLE, seed, workers)


def on_one_process(fn, *args, what: str = ""):
    """The `share` of a single process: call fn here (torchrun's is distributed.from_main: rank 0 calls it and sends
    the result to every rank)."""
    return fn(*args)


def open_image_folder(data_dir: str | os.PathLike, variant: str, size: int, batch_size: int, seed: int,
                      workers: int, device: torch.device, mean: list[float] | None = None,
                      std: list[float] | None = None, limit_train: int | None = None, limit_test: int | None = None,
                      rank: int = 0, world_size: int = 1, share=on_one_process,
                      given_as: str = "given") -> ImageFolderSource:
    """find_splits and the limits (seeded subsets), then the normalization given or measured, each decided once
    by `share` (under torchrun: on rank 0 and sent to the others, so one scan of the folder gives the same image
    list everywhere: every machine must hold the files at the same paths); the source for this rank."""
    def scan() -> Splits:
        splits = find_splits(data_dir, seed)
        return Splits(seeded_subset(splits.train, limit_train, seed), seeded_subset(splits.val, limit_test, seed),
                      splits.how)

    splits = share(scan, what=f"receiving rank 0's list of the images in {data_dir}")
    norm = share(decide_normalization, splits, variant, size, mean, std, seed, workers, given_as,
                 what="receiving the normalization measured on rank 0")
    return ImageFolderSource(splits, variant, size, batch_size, workers, device, norm, rank, world_size)
