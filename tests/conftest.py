"""Shared test set-up. Tests never download anything, and the real dataset must be present (make test installs it)."""
import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    # Triton kernels run in the interpreter on a CPU; set before anything imports triton (triton_kernels does the
    # same on import, but a test module may pull in triton first, e.g. through torch._dynamo).
    os.environ.setdefault("TRITON_INTERPRET", "1")


CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"  # where the Triton tests put their tensors (CPU: the kernels are interpreted)


def pytest_collection_modifyitems(config, items):
    """The one GPU switch: a test marked `gpu` is skipped, with the reason, on a machine without CUDA."""
    if CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (marked gpu; on a CPU the kernels are checked in the interpreter)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def assert_close_verbose(actual, expected, atol: float, rtol: float, what: str, *, relative_to_max: bool = False,
                         equal_nan: bool = True):
    """The suite's one closeness check, for torch tensors and NumPy arrays alike (compared in float64); on failure
    the message names how many elements are off, the worst one, its index and both values.

    Element-wise (default): |a - e| <= atol + rtol*|e|, torch.testing's rule. relative_to_max=True measures the
    error against the array's scale instead: |a - e| <= atol + rtol*max|e| (element-wise relative error means
    nothing for the many near-zero entries of a gradient). equal_nan: NaN on both sides agrees; equal infinities
    always agree."""
    def as_float64(t):
        return t.detach().double().cpu() if isinstance(t, torch.Tensor) else torch.from_numpy(np.asarray(t, np.float64))

    assert tuple(actual.shape) == tuple(expected.shape), \
        f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = as_float64(actual), as_float64(expected)
    same = (a == e) | (torch.isnan(a) & torch.isnan(e)) if equal_nan else (a == e)
    err = torch.where(same, torch.zeros_like(a), (a - e).abs())
    err = torch.where(torch.isnan(err), torch.full_like(err, float("inf")), err)  # NaN on one side only
    scale = e.abs().nan_to_num(0.0)
    if relative_to_max:
        scale = scale.max().expand_as(e) if e.numel() else scale
    excess = err - (atol + rtol * scale)
    if a.numel() and excess.max() > 0:
        flat = int(excess.argmax())
        idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), a.shape))
        rel = f", max|diff|/max|expected| {err.max().item() / max(scale.max().item(), 1e-300):.3g}" \
            if relative_to_max else ""
        raise AssertionError(
            f"{what}: {int((excess > 0).sum())}/{a.numel()} elements off; worst at {idx}: got {a[idx].item()!r},"
            f" expected {e[idx].item()!r} (|diff| {err[idx].item():.3g}, atol {atol}, rtol {rtol}{rel})"
        )


def assert_rel(actual, expected, tol: float, what: str):
    """max|a - e| <= tol * max|e| (the error relative to the array's scale), NaN never equal: assert_close_verbose
    spelt as tests/test_numpy_model.py calls it."""
    assert_close_verbose(actual, expected, 0.0, tol, what, relative_to_max=True, equal_nan=False)


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

    return find_data_dir()  # raises DatasetError (a failure, not a skip) when the data is missing


def write_image_folder(root: Path, classes=("ant", "bee", "cat"), per_class: int = 3, size=(40, 30),
                       fmt: str = "png", seed: int = 0, corrupt: tuple[str, ...] = ()) -> Path:
    """root/CLASS/CLASS_i.{png|jpg}: random RGB images of size (W, H); each name in `corrupt`
    ('CLASS/NAME') is written as bytes Pillow cannot decode instead (garbage, or a JPEG cut in half)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    ext = {"png": "png", "jpeg": "jpg"}[fmt]
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)   # (H, W, 3)
            Image.fromarray(pixels).save(root / name / f"{name}_{i}.{ext}")
    for i, rel in enumerate(corrupt):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if i % 2 == 0:
            path.write_bytes(b"this is not an image\n" * 4)
        else:   # a real JPEG, cut: the header reads, the pixels do not
            import io
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
            path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return root
