"""IDX parsing and validation on small generated files, then the real Fashion-MNIST."""
import gzip

import numpy as np
import pytest
import torch

from conftest import write_fake_fashion_mnist, write_idx
from numpy_ref.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from torch_model.data import (CLASS_NAMES, DatasetError, batches, find_data_dir, load_fashion_mnist, load_split,
                              to_input)


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_roundtrip(tmp_path, gz):
    images = np.random.default_rng(1).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    path = write_idx(tmp_path / ("x.gz" if gz else "x"), images)
    np.testing.assert_array_equal(read_idx(path, IMAGES_MAGIC), images)


@pytest.mark.parametrize("case, message", [
    (dict(magic=2049), "magic number 2049, expected 2051"),
    (dict(cut=5), "truncated"),
    (dict(extra=b"\x00\x01"), "trailing bytes"),
])
@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_rejects(tmp_path, case, message, gz):
    path = write_idx(tmp_path / ("bad.gz" if gz else "bad"), np.ones((3, 28, 28)), gz=gz, **case)
    with pytest.raises(DatasetError, match=message) as info:
        read_idx(path, IMAGES_MAGIC)
    assert str(path) in str(info.value)


def test_truncated_header_and_empty(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(DatasetError, match="too short"):
        read_idx(tmp_path / "empty", LABELS_MAGIC)
    (tmp_path / "half").write_bytes((2051).to_bytes(4, "big") + b"\x00\x00\x00\x05")
    with pytest.raises(DatasetError, match="truncated header"):
        read_idx(tmp_path / "half", IMAGES_MAGIC)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00" * 100)[:20])   # a gzip stream cut short
    with pytest.raises(DatasetError, match="cannot read"):
        read_idx(path, IMAGES_MAGIC)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match=str(path)):
        read_idx(path, IMAGES_MAGIC)


def test_count_mismatch(fake_data):
    write_idx(fake_data / "train-labels-idx1-ubyte.gz", np.arange(19) % 10)
    with pytest.raises(DatasetError, match="19 labels for 20 images"):
        load_split(fake_data, "train")


def test_label_out_of_range(fake_data):
    write_idx(fake_data / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 12]))
    with pytest.raises(DatasetError, match="label 12 at index 9 is outside 0..9"):
        load_split(fake_data, "test")


def test_wrong_image_size(fake_data):
    write_idx(fake_data / "t10k-images-idx3-ubyte.gz", np.ones((10, 32, 32)))
    with pytest.raises(DatasetError, match=r"\(32, 32\), expected \(28, 28\)"):
        load_split(fake_data, "test")


def test_labels_file_given_as_images(fake_data):
    (fake_data / "train-images-idx3-ubyte.gz").write_bytes((fake_data / "train-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(DatasetError, match="magic number 2049, expected 2051"):
        load_split(fake_data, "train")


def test_raw_files_and_lookup_order(tmp_path, monkeypatch):
    raw = write_fake_fashion_mnist(tmp_path / "raw", gz=False)
    train, test = load_fashion_mnist(raw)
    assert (len(train), len(test)) == (20, 10)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    monkeypatch.setenv("FASHION_MNIST_DIR", str(raw))
    assert find_data_dir() == raw
    assert find_data_dir(tmp_path / "raw") == raw       # --data-dir wins over the environment


def test_missing_dir_and_files(tmp_path, monkeypatch):
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    with pytest.raises(DatasetError, match="no such directory"):
        find_data_dir(tmp_path / "nope")
    d = write_fake_fashion_mnist(tmp_path / "part")
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="missing t10k-labels-idx1-ubyte"):
        find_data_dir(d)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "nope"))
    with pytest.raises(DatasetError, match="FASHION_MNIST_DIR"):
        find_data_dir()


def test_no_data_anywhere_says_how_to_get_it(tmp_path, monkeypatch):
    """No folder holds the files: one error naming where it looked and how to install them (nothing is fetched)."""
    import numpy_ref.idx
    from torch_model import data

    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    empty = [tmp_path / "a", tmp_path / "b"]
    monkeypatch.setattr(numpy_ref.idx, "DEFAULT_DIRS", empty)
    monkeypatch.setattr(data, "DEFAULT_DIRS", empty)
    with pytest.raises(DatasetError, match=rf"not found in {tmp_path / 'a'}, {tmp_path / 'b'}; .*apt-get install "
                                           r"dataset-fashion-mnist"):
        find_data_dir()
    assert list(tmp_path.iterdir()) == []


def test_data_dir_that_is_a_file(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DatasetError, match=r"--data-dir .*afile: is a file, not a directory"):
        find_data_dir(tmp_path / "afile")
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "afile"))
    with pytest.raises(DatasetError, match=r"FASHION_MNIST_DIR .*afile: is a file"):
        find_data_dir()
    with pytest.raises(DatasetError, match="--data-dir is empty"):
        find_data_dir("")


def test_real_dataset(real_data_dir):
    train, test = load_fashion_mnist(real_data_dir)
    assert (len(train), len(test)) == (60000, 10000)
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert train.class_counts() == [6000] * 10
    assert test.class_counts() == [1000] * 10
    assert len(CLASS_NAMES) == 10
    assert 0 < train.images.float().mean().item() / 255 < 1     # real images, not blank


def test_batches_resize_and_shuffle(fake_data):
    train, _ = load_fashion_mnist(fake_data)
    X, y = next(batches(train, 8, resize=224))
    assert X.shape == (8, 1, 224, 224) and X.dtype == torch.float32 and y.shape == (8,)
    assert 0 <= X.min() and X.max() <= 1
    # unshuffled batches keep the file order; a shuffled epoch is a permutation, reproducible by seed
    assert torch.equal(torch.cat([y for _, y in batches(train, 6, resize=None)]), train.labels)
    first = torch.cat([x for x, _ in batches(train, 6, resize=None, shuffle=True, seed=3)])
    again = torch.cat([x for x, _ in batches(train, 6, resize=None, shuffle=True, seed=3)])
    other = torch.cat([x for x, _ in batches(train, 6, resize=None, shuffle=True, seed=4)])
    assert torch.equal(first, again) and not torch.equal(first, other)
    torch.testing.assert_close(first.sum(0), to_input(train.images, None).sum(0))  # every image exactly once


def test_bilinear_resize_is_align_corners_false():
    # A 2x2 image upsampled to 4x4 with half-pixel centres (PIL's and torchvision's Resize when enlarging).
    img = torch.tensor([[[0, 255], [255, 0]]], dtype=torch.uint8)       # (1, 2, 2)
    out = to_input(img, resize=4)[0, 0]                                 # (4, 4)
    expected = torch.tensor([0.0, 0.25, 0.75, 1.0])
    torch.testing.assert_close(out[0], expected)                        # first row: 0 -> 1 across
    torch.testing.assert_close(out[:, 0], expected)
