"""Shared test set-up. Tests never download anything, and the real dataset must be present (make test installs it)."""
import gzip
import os
from pathlib import Path

import numpy as np
import pytest

os.environ["ALEXNET_NO_DOWNLOAD"] = "1"


def write_idx(path: Path, array: np.ndarray, magic: int | None = None, gz: bool | None = None,
              cut: int = 0, extra: bytes = b"") -> Path:
    """Write `array` (uint8) as an IDX file; `magic` overrides the header, `cut` drops trailing bytes."""
    array = np.asarray(array, dtype=np.uint8)
    magic = (0x0800 | array.ndim) if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.tobytes() + extra
    raw = raw[: len(raw) - cut]
    gz = path.suffix == ".gz" if gz is None else gz
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_fake_fashion_mnist(directory: Path, n_train: int = 20, n_test: int = 10, gz: bool = True,
                             seed: int = 0) -> Path:
    """Four small valid IDX files with Fashion-MNIST's names (random 28x28 images, labels 0..9)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n) % 10)
    return directory


@pytest.fixture
def fake_data(tmp_path) -> Path:
    return write_fake_fashion_mnist(tmp_path / "fmnist")


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    from torch_model.data import find_data_dir

    return find_data_dir(download=False)  # raises DatasetError (a failure, not a skip) when the data is missing
