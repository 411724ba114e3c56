"""Fashion-MNIST's four IDX files, read and validated without torch: the one reader behind torch_model.data
(`alexnet train`, `evaluate`, `visualize`) and numpy_ref.walkthrough.

    images, labels = load_split_arrays(find_data_dir(), "test")   # (10000, 28, 28) uint8, (10000,) int64

IDX: a big-endian int32 magic 0x0000 08 NDIM (08: unsigned bytes), NDIM big-endian int32 sizes, then prod(sizes)
bytes. Each file may be gzipped (`.gz`) or raw. Every way a file can be wrong raises DatasetError naming it: bad
magic, truncated header or data, trailing bytes, a corrupt or non-gzip `.gz`, images not 28x28, a label count
that differs from the image count, a label outside 0..9.

Where the files are looked for, in order: --data-dir (or FASHION_MNIST_DIR), ./data/fashion-mnist,
/usr/share/datasets/fashion-mnist (Debian's `dataset-fashion-mnist` package).
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

__all__ = ["CLASS_NAMES", "FILES", "IMAGES_MAGIC", "LABELS_MAGIC", "DEFAULT_DIRS", "HOW_TO_GET", "DatasetError",
           "read_idx", "find_file", "missing_files", "find_data_dir", "load_split_arrays"]

CLASS_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat",
               "sandal", "shirt", "sneaker", "bag", "ankle boot")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049   # 0x00000803: ubyte, 3 dims; 0x00000801: ubyte, 1 dim
DEFAULT_DIRS = (Path("data/fashion-mnist"), Path("/usr/share/datasets/fashion-mnist"))
HOW_TO_GET = ("get the four Fashion-MNIST IDX files with `apt-get install dataset-fashion-mnist` (Debian: "
              "/usr/share/datasets/fashion-mnist) or put them in ./data/fashion-mnist, or pass --data-dir / "
              "set FASHION_MNIST_DIR")


class DatasetError(ValueError):
    """A data file is missing, unreadable or not what Fashion-MNIST's IDX format says it should be."""


# ----------------------------------------------------------------------------------------------- one file

def read_idx(path: str | os.PathLike, expected_magic: int) -> np.ndarray:
    """Parse one IDX file into a uint8 array of its dims. Every mismatch raises DatasetError naming the file."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DatasetError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise DatasetError(f"{path}: magic number {magic}, expected {expected_magic} "
                           f"({'images' if expected_magic == IMAGES_MAGIC else 'labels'} file)")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated header ({len(raw)} bytes, need {header})")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DatasetError(f"{path}: {what}: {len(raw)} bytes, dims {dims} need {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # gzip raises BadGzipFile (an OSError) or EOFError when cut
        raise DatasetError(f"{path}: cannot read: {exc}") from exc


# ----------------------------------------------------------------------------------------------- the folder

def find_file(directory: Path, name: str) -> Path | None:
    """`name.gz` or `name` in directory, whichever exists first."""
    for candidate in (Path(directory) / f"{name}.gz", Path(directory) / name):
        if candidate.is_file():
            return candidate
    return None


def missing_files(directory: Path, splits: tuple[str, ...] = ("train", "test")) -> list[str]:
    return [name for split in splits for name in FILES[split] if find_file(directory, name) is None]


def find_data_dir(data_dir: str | os.PathLike | None = None,
                  splits: tuple[str, ...] = ("train", "test")) -> Path | None:
    """The first folder holding the files of `splits`: an explicit data_dir (or FASHION_MNIST_DIR) must hold them
    (DatasetError otherwise, naming the flag); else the first default folder that does; else None."""
    explicit = data_dir if data_dir is not None else os.environ.get("FASHION_MNIST_DIR") or None
    if explicit is None:
        for directory in DEFAULT_DIRS:
            if directory.is_dir() and not missing_files(directory, splits):
                return directory
        return None
    source = "--data-dir" if data_dir is not None else "FASHION_MNIST_DIR"
    if str(explicit) == "":
        raise DatasetError(f"{source} is empty; {HOW_TO_GET}")
    directory = Path(explicit)
    if directory.is_file():
        raise DatasetError(f"{source} {directory}: is a file, not a directory (pass the folder holding the four "
                           f"IDX files)")
    if not directory.is_dir():
        raise DatasetError(f"{source} {directory}: no such directory; {HOW_TO_GET}")
    missing = missing_files(directory, splits)
    if missing:
        raise DatasetError(f"{source} {directory}: missing {', '.join(missing)} (.gz or raw); {HOW_TO_GET}")
    return directory


def load_split_arrays(directory: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split, validated: images (N, 28, 28) uint8 and labels (N,) int64 in 0..9."""
    if split not in FILES:
        raise ValueError(f"split must be one of {tuple(FILES)}, got {split!r}")
    directory = Path(directory)
    image_name, label_name = FILES[split]
    image_path, label_path = find_file(directory, image_name), find_file(directory, label_name)
    if image_path is None or label_path is None:
        raise DatasetError(f"{directory}: missing {image_name if image_path is None else label_name} (.gz or raw)")
    images = read_idx(image_path, IMAGES_MAGIC)                  # (N, 28, 28) uint8
    labels = read_idx(label_path, LABELS_MAGIC)                  # (N,) uint8
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DatasetError(f"{image_path}: images of shape {images.shape[1:]}, expected (28, 28)")
    if labels.shape[0] != images.shape[0]:
        raise DatasetError(f"{label_path}: {labels.shape[0]} labels for {images.shape[0]} images in {image_path}")
    if labels.size and labels.max() >= len(CLASS_NAMES):
        bad = int(np.argmax(labels >= len(CLASS_NAMES)))
        raise DatasetError(f"{label_path}: label {labels[bad]} at index {bad} is outside 0..{len(CLASS_NAMES) - 1}")
    return images, labels.astype(np.int64)                       # (N, 28, 28) uint8, (N,) int64
