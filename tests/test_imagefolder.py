"""The image-folder pipeline: folder scans and their errors (link loops, a file under two classes, unreadable
folders), the seeded split, each transform on a known image (16-bit PNGs too), corrupt files skipped and reported,
augmentation independent of the worker count, per-channel statistics, and training runs that depend on neither the
worker count nor a resume."""
import os
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import write_image_folder
from torch_model.data import local_batches
from torch_model.imagefolder import (
    CenterCrop, Decode, EpochBatchSampler, HorizontalFlip, ImageFolderDataset, Normalization, Pipeline, RandomCrop,
    ResizeShortSide, channel_stats, eval_pipeline, find_splits, make_loader, parse_channels, sample_seed,
    scan_folder, to_input, to_uint8_tensor, train_pipeline)


def position_image(w: int, h: int) -> Image.Image:
    """R = column, G = row, B = 7: every pixel says where it came from (w, h <= 256)."""
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))                        # (H, W) each
    return Image.fromarray(np.stack([cols, rows, np.full_like(cols, 7)], axis=2).astype(np.uint8))


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img).astype(np.int64)                                     # (H, W, C)


# ----------------------------------------------------------------------------------------------- the folder

def test_scan_labels_extensions_and_ignored(tmp_path):
    root = write_image_folder(tmp_path / "d", classes=("zebra", "ant"), per_class=2)
    (root / "ant" / "upper.JPEG").write_bytes((root / "ant" / "ant_0.png").read_bytes())   # case-insensitive
    (root / "ant" / "deeper").mkdir()
    (root / "ant" / "deeper" / "x.jpeg").write_bytes(b"")                                  # nested: found
    (root / "ant" / "notes.txt").write_text("not an image")
    (root / "zebra" / ".hidden.png").write_bytes(b"")                                     # dot files: skipped
    scan = scan_folder(root)
    assert scan.classes == ["ant", "zebra"]                          # sorted names -> labels 0, 1
    assert scan.class_counts() == [4, 2]
    assert scan.ignored == 1
    # a folder's own files (sorted), then its sub-folders'
    assert [p.split("/")[-1] for p, label in scan.samples if label == 0] == ["ant_0.png", "ant_1.png",
                                                                            "upper.JPEG", "x.jpeg"]


@pytest.mark.parametrize("case, message", [
    ("missing", "no such folder"),
    ("no_classes", "no class sub-folders"),
    ("no_images", "no images"),
    ("unknown_only", "2 file(s), none with an image extension"),
    ("single_class", "a single class (only)"),
    ("empty_class", "class folder(s) empty hold no images"),
])
def test_scan_refuses_with_the_folder_named(tmp_path, case, message):
    root = tmp_path / "data"
    if case != "missing":
        root.mkdir()
    if case == "no_images":
        (root / "a").mkdir(), (root / "b").mkdir()
    if case == "unknown_only":
        for name in ("a", "b"):
            (root / name).mkdir()
            (root / name / "x.gif").write_bytes(b"GIF89a")
    if case == "single_class":
        write_image_folder(root, classes=("only",), per_class=2)
    if case == "empty_class":
        write_image_folder(root, classes=("full", "more"), per_class=1)
        (root / "empty").mkdir()
    with pytest.raises(ValueError) as info:
        scan_folder(root)
    assert str(root) in str(info.value) and message in str(info.value)
    assert "\n" not in str(info.value)


def test_link_loops_are_walked_once_and_links_to_one_file_count_once(tmp_path):
    root = write_image_folder(tmp_path / "d", classes=("a", "b"), per_class=3)
    (root / "a" / "again").symlink_to(".")                       # a/again -> a
    (root / "b" / "sub").mkdir()
    (root / "b" / "sub" / "up").symlink_to("..")                 # b/sub/up -> b
    (root / "b" / "copy.png").symlink_to(root / "b" / "b_0.png")   # a second name for one file
    scan = scan_folder(root)
    assert scan.class_counts() == [3, 3]
    assert sorted(os.path.realpath(p) for p, _ in scan.samples) == sorted(
        str((root / c / f"{c}_{i}.png").resolve()) for c in "ab" for i in range(3))
    splits = find_splits(root, seed=0)                           # the held-out images are not trained on
    held = {os.path.realpath(p) for p, _ in splits.val.samples}
    assert held and not held & {os.path.realpath(p) for p, _ in splits.train.samples}


@pytest.mark.parametrize("layout", ["flat", "train"])
def test_a_file_reached_under_two_classes_is_refused_naming_both(tmp_path, layout):
    data = tmp_path / "d"
    root = write_image_folder(data / ("train" if layout == "train" else ""), classes=("ant", "bee", "cat"),
                              per_class=2)
    (root / "cat" / "loop").symlink_to("..")                     # `ln -s .. cat/loop`: every class under cat/
    with pytest.raises(ValueError) as info:
        find_splits(data)
    message = str(info.value)
    assert "'ant'" in message and "'cat'" in message and str(root / "ant" / "ant_0.png") in message, message
    assert str(root / "cat" / "loop" / "ant" / "ant_0.png") in message and "\n" not in message


def test_an_unreadable_class_folder_is_named_as_unreadable(tmp_path, monkeypatch):
    # simulated: the suite may run as root, for whom chmod 000 blocks nothing
    root = write_image_folder(tmp_path / "d", classes=("a", "b"), per_class=2)
    scandir = os.scandir

    def refuse_b(path="."):
        if os.fspath(path) == str(root / "b"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_b)
    with pytest.raises(ValueError) as info:
        scan_folder(root)
    message = str(info.value)
    assert message.startswith(f"{root / 'b'}: class folder 'b' cannot be read (PermissionError: Permission denied)")
    assert "hold no images" not in message


def test_a_data_dir_that_is_a_file_says_so(tmp_path):
    (tmp_path / "photos.zip").write_bytes(b"PK")
    with pytest.raises(ValueError, match=r"--data-dir .*photos\.zip: is a file, not a folder"):
        find_splits(tmp_path / "photos.zip")
    with pytest.raises(ValueError, match=r"photos\.zip: is a file, not a folder"):
        scan_folder(tmp_path / "photos.zip")


def test_val_folder_keeps_the_training_labels(tmp_path):
    write_image_folder(tmp_path / "train", classes=("a", "b", "c"), per_class=2)
    write_image_folder(tmp_path / "val", classes=("c", "a"), per_class=1, seed=1)   # may lack a class
    splits = find_splits(tmp_path, seed=0)
    assert splits.train.classes == splits.val.classes == ["a", "b", "c"]
    assert sorted(label for _, label in splits.val.samples) == [0, 2]
    assert "evaluation images from" in splits.how and str(tmp_path / "val") in splits.how
    write_image_folder(tmp_path / "val", classes=("dog",), per_class=1)
    with pytest.raises(ValueError, match=r"val: class folder\(s\) dog not among the training set's 3 classes"):
        find_splits(tmp_path)


@pytest.mark.parametrize("layout", ["train_only", "flat"])
def test_seeded_split_without_val(tmp_path, layout):
    root = tmp_path / ("train" if layout == "train_only" else "")
    write_image_folder(root, classes=("a", "b", "c", "d"), per_class=5)
    every = {p for p, _ in scan_folder(root).samples}
    splits = find_splits(tmp_path, seed=3)
    train, val = {p for p, _ in splits.train.samples}, {p for p, _ in splits.val.samples}
    assert len(val) == round(0.1 * len(every)) and not train & val and train | val == every
    assert "held out for evaluation" in splits.how and "seed 3" in splits.how
    assert {p for p, _ in find_splits(tmp_path, seed=3).val.samples} == val        # reproducible
    others = [{p for p, _ in find_splits(tmp_path, seed=s).val.samples} for s in range(4, 9)]
    assert any(o != val for o in others)                                           # and seeded


# ----------------------------------------------------------------------------------------------- transforms

def test_random_crop_is_the_window_the_rng_draws():
    img = position_image(50, 40)
    seen_tops, seen_lefts = set(), set()
    for seed in range(200):
        out = pixels(RandomCrop(32)(img, random.Random(seed)))                    # (32, 32, 3)
        replay = random.Random(seed)
        top, left = replay.randint(0, 40 - 32), replay.randint(0, 50 - 32)
        assert out.shape == (32, 32, 3)
        np.testing.assert_array_equal(out, pixels(img)[top:top + 32, left:left + 32])
        seen_tops.add(int(out[0, 0, 1])), seen_lefts.add(int(out[0, 0, 0]))
    assert seen_tops == set(range(0, 9)) and seen_lefts == set(range(0, 19))    # every position, corners included
    with pytest.raises(ValueError, match="RandomCrop"):
        RandomCrop(41)(img, random.Random(0))


@pytest.mark.parametrize("w, h, size, top, left", [(10, 7, 4, 2, 3), (9, 9, 9, 0, 0), (13, 20, 5, 8, 4)])
def test_center_crop(w, h, size, top, left):
    # torchvision's rule top = int(round((H - size) / 2)), with Python's round (half to even): (7-4)/2 = 1.5 -> 2
    out = pixels(CenterCrop(size)(position_image(w, h)))
    np.testing.assert_array_equal(out, pixels(position_image(w, h))[top:top + size, left:left + size])


def test_horizontal_flip():
    img = position_image(11, 5)
    np.testing.assert_array_equal(pixels(HorizontalFlip(1.0)(img, random.Random(0))), pixels(img)[:, ::-1])
    np.testing.assert_array_equal(pixels(HorizontalFlip(0.0)(img, random.Random(0))), pixels(img))
    flips = [pixels(HorizontalFlip(0.5)(img, random.Random(s)))[0, 0, 0] == 10 for s in range(400)]
    assert 150 < sum(flips) < 250                      # about half (binomial(400, 0.5): sd 10)
    assert all(f == (random.Random(s).random() < 0.5) for s, f in enumerate(flips))


@pytest.mark.parametrize("w, h, size, expected", [(90, 60, 25, (37, 25)), (60, 90, 25, (25, 37)),
                                                  (90, 60, 100, (150, 100)), (31, 31, 13, (13, 13))])
def test_resize_short_side_matches_torch_antialiased_bilinear(w, h, size, expected):
    a = np.random.default_rng(w + h + size).integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = ResizeShortSide(size)(Image.fromarray(a))
    assert out.size == expected
    ref = F.interpolate(torch.from_numpy(a).permute(2, 0, 1)[None].double(), size=expected[::-1],
                        mode="bilinear", antialias=True, align_corners=False)[0]           # (3, H', W')
    got = torch.from_numpy(pixels(out)).permute(2, 0, 1).double()
    assert (got - ref).abs().max() <= 1.0    # Pillow rounds to uint8: within one level of torch's float result
    already = out.crop((0, 0, size, size + 3))                                      # short side == size
    assert ResizeShortSide(size)(already) is already


def test_decode_grey_and_jpeg_draft(tmp_path):
    Image.new("RGB", (3, 2), (200, 100, 50)).save(tmp_path / "c.png")
    grey = Decode("L")(str(tmp_path / "c.png"))
    assert grey.mode == "L" and pixels(grey).max() == pixels(grey).min() == (200 * 299 + 100 * 587 + 50 * 114) // 1000
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (768, 1024, 3), dtype=np.uint8)).save(tmp_path / "b.jpg")
    assert Decode("RGB")(str(tmp_path / "b.jpg")).size == (1024, 768)
    assert Decode("RGB", 256)(str(tmp_path / "b.jpg")).size == (512, 384)    # 1/2 scale; 1/4 would be 192 < 256
    assert Decode("RGB", 500)(str(tmp_path / "b.jpg")).size == (1024, 768)   # 1/2 would be 384 < 500


def test_decode_scales_16_bit_grey_to_8_bits(tmp_path):
    v16 = np.array([[0, 256, 32767, 32768], [32896, 40000, 65279, 65535]], dtype=np.uint16)   # (2, 4)
    Image.fromarray(v16).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    want = np.round(v16 / 257).astype(np.int64)                      # 65535 -> 255: the same brightness
    np.testing.assert_array_equal(pixels(Decode("L")(str(tmp_path / "deep.png"))), want)
    np.testing.assert_array_equal(pixels(Decode("RGB")(str(tmp_path / "deep.png"))), np.stack([want] * 3, axis=2))
    Image.fromarray(np.array([[5, 70000]], dtype=np.int32)).save(tmp_path / "wide.tif")   # mode I, past 16 bits
    with pytest.raises(ValueError, match=r"wide\.tif: a I image with values 5\.\.70000, outside 16 bits"):
        Decode("L")(str(tmp_path / "wide.tif"))


def test_to_uint8_tensor_layout():
    t = to_uint8_tensor(position_image(6, 4))
    assert t.dtype == torch.uint8 and t.shape == (3, 4, 6)
    assert t[0, 2, 5] == 5 and t[1, 2, 5] == 2 and t[2, 2, 5] == 7
    assert to_uint8_tensor(position_image(6, 4).convert("L")).shape == (1, 4, 6)


def test_pipelines_on_a_known_image(tmp_path):
    # A 300x260 (W x H) position image (values wrap at 256: only the first pixel's offset is read from them).
    path = tmp_path / "p.png"
    cols, rows = np.meshgrid(np.arange(300), np.arange(260))
    Image.fromarray(np.stack([cols % 256, rows % 256, np.zeros_like(cols)], axis=2).astype(np.uint8)).save(path)
    ev = eval_pipeline("paper", 227)(str(path), random.Random(0))
    assert ev.shape == (3, 227, 227) and ev.dtype == torch.uint8
    resized = ResizeShortSide(256)(Image.open(path).convert("RGB"))                # (295, 256)
    np.testing.assert_array_equal(ev.permute(1, 2, 0).numpy(), pixels(CenterCrop(227)(resized)))
    outs = [train_pipeline("paper", 227)(str(path), random.Random(s)) for s in range(12)]
    assert all(o.shape == (3, 227, 227) for o in outs)
    assert len({o.sum().item() for o in outs}) > 6                                 # crops and flips vary
    torch.testing.assert_close(train_pipeline("paper", 227)(str(path), random.Random(5)), outs[5], rtol=0, atol=0)
    grey = train_pipeline("d2l", 200)(str(path), random.Random(0))
    assert grey.shape == (1, 200, 200)
    torch.testing.assert_close(grey, eval_pipeline("d2l", 200)(str(path), random.Random(9)), rtol=0, atol=0)
    assert str(train_pipeline("paper", 227)) == ("Decode('RGB', 256) -> ResizeShortSide(256) -> RandomCrop(227) "
                                                 "-> HorizontalFlip(0.5)")
    with pytest.raises(ValueError, match="variant"):
        train_pipeline("vgg", 224)


def test_sample_seed_is_fixed_and_spread():
    seeds = {sample_seed(e, i) for e in range(3) for i in range(1000)}
    assert len(seeds) == 3000 and sample_seed(2, 17) == sample_seed(2, 17)
    assert all(0 <= s < 2 ** 64 for s in seeds)


# ----------------------------------------------------------------------------------------------- dataset, loader

def _dataset(root, size=32):
    """The paper's training steps at a small size (short side 36, random 32x32 crop, flip)."""
    pipeline = Pipeline((Decode("RGB"), ResizeShortSide(36), RandomCrop(size), HorizontalFlip(0.5)))
    return ImageFolderDataset(scan_folder(root), pipeline, 3, size)


def test_corrupt_images_are_skipped_and_reported(tmp_path):
    root = write_image_folder(tmp_path / "d", classes=("a", "b"), per_class=2,
                              corrupt=("a/garbage.jpg", "b/truncated.jpg"))
    ds = _dataset(root)
    paths = [p for p, _ in ds.scan.samples]
    items = [ds[(i, i)] for i in range(len(ds))]
    holes = [(path, reason) for x, _, path, reason in items if x is None]
    assert sorted(p.split("/")[-1] for p, _ in holes) == ["garbage.jpg", "truncated.jpg"]
    assert all(reason.startswith(("UnidentifiedImageError", "OSError")) for _, reason in holes), holes
    batch = ds.collate(items)
    assert batch.images.shape == (4, 3, 32, 32) and batch.images.dtype == torch.uint8
    assert batch.labels.tolist() == [label for x, label, _, _ in items if x is not None]
    assert sorted(p for p, _ in batch.skipped) == sorted(p for p in paths if "garbage" in p or "truncated" in p)
    empty = ds.collate([items[paths.index(p)] for p, _ in holes])
    assert empty.images.shape == (0, 3, 32, 32) and empty.labels.shape == (0,) and len(empty.skipped) == 2


def test_loader_workers_and_shards_give_the_same_batches(tmp_path):
    root = write_image_folder(tmp_path / "d", classes=("a", "b", "c"), per_class=4, corrupt=("c/bad.png",))
    ds = _dataset(root)
    n, batch = len(ds), 5

    def epoch(workers, rank=0, world=1):
        sampler = EpochBatchSampler(n, batch, shuffle=True, rank=rank, world_size=world)
        sampler.set_epoch(1000 + 2)
        return list(make_loader(ds, sampler, workers))

    single = epoch(0)
    assert len(single) == 3 and sum(len(b.labels) for b in single) == n - 1
    assert sum(len(b.skipped) for b in single) == 1
    for a, b in zip(single, epoch(2)):                       # decoded in 2 worker processes: same pixels
        torch.testing.assert_close(a.images, b.images, rtol=0, atol=0)
    shards = [epoch(0, rank, 2) for rank in range(2)]       # two ranks: each global batch split in two
    for k, whole in enumerate(single):
        joined = torch.cat([shards[0][k].images, shards[1][k].images])
        torch.testing.assert_close(joined, whole.images, rtol=0, atol=0)
    order = [i for _, idx in local_batches(n, batch, 1002, True) for i in idx.tolist()]
    assert sorted(order) == list(range(n))
    with pytest.raises(ValueError, match="--workers"):
        make_loader(ds, EpochBatchSampler(n, batch, shuffle=False), -1)


def test_channel_stats_and_to_input(tmp_path):
    root = tmp_path / "d"
    for name, colour in (("red", (255, 0, 0)), ("half", (255, 255, 0))):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 36), colour).save(root / name / f"{i}.png")
    ds = ImageFolderDataset(scan_folder(root), eval_pipeline("paper", 32), 3, 32)
    norm = channel_stats(ds, sample=6, seed=0)
    # R always 1; G is 1 on half the pixels, 0 on the other half: mean 0.5, std 0.5; B always 0 (std floored)
    assert norm.mean == pytest.approx([1.0, 0.5, 0.0]) and norm.std == pytest.approx([1e-6, 0.5, 1e-6])
    assert "6 training images" in norm.source
    capped = channel_stats(ds, sample=2, seed=1)              # bounded sample: two images only
    assert "2 training images" in capped.source
    images = torch.tensor([[[[0, 255]], [[51, 102]], [[255, 0]]]], dtype=torch.uint8)   # (1, 3, 1, 2)
    x = to_input(images, Normalization([0.5, 0.2, 0.0], [0.5, 0.2, 1.0]), "cpu")
    torch.testing.assert_close(x, torch.tensor([[[[-1.0, 1.0]], [[0.0, 1.0]], [[1.0, 0.0]]]]))
    torch.testing.assert_close(to_input(images, None, "cpu"), images.float() / 255)
    with pytest.raises(ValueError, match="channel"):
        to_input(images, Normalization([0.5], [0.5]), "cpu")


def test_a_training_set_without_contrast_is_refused(tmp_path, capsys):
    from torch_model.cli import main

    root = tmp_path / "blank"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (30, 30), 255).save(root / name / f"{i}.png")
    ds = ImageFolderDataset(scan_folder(root), eval_pipeline("d2l", 24), 1, 24)
    with pytest.raises(ValueError, match=r"have no contrast: every pixel of the 6 sampled image\(s\) is the same "
                                         r"\(per-channel mean \(1\.000\), std 0"):
        channel_stats(ds, sample=6)
    assert main(["train", "--dataset", "imagefolder", "--data-dir", str(root), "--device", "cpu", "--workers", "0",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--data-dir" in err[0] and str(root) in err[0] and "no contrast" in err[0], err
    assert not (tmp_path / "run").exists()


def test_normalization_arguments():
    assert parse_channels("0.485,0.456,0.406", "--mean") == [0.485, 0.456, 0.406]
    with pytest.raises(ValueError, match="--std 'a,b'"):
        parse_channels("a,b", "--std")
    with pytest.raises(ValueError, match="one value per channel"):
        Normalization([0.1, 0.2], [0.3])
    with pytest.raises(ValueError, match="std must be positive"):
        Normalization([0.1], [0.0])


def test_bench_loader_smoke(tmp_path, capsys):
    from torch_model.cli import main

    write_image_folder(tmp_path / "d", classes=("a", "b"), per_class=4, size=(40, 30), corrupt=("b/bad.png",))
    out = tmp_path / "loader.json"
    assert main(["bench", "loader", "--data-dir", str(tmp_path / "d"), "--workers", "0,1", "--batch", "3",
                 "--variant", "d2l", "--size", "24", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| workers | images/s | per worker | CPU ms / image | images timed |" in text
    import json
    rows = json.loads(out.read_text())["rows"]
    assert [r["workers"] for r in rows] == [0, 1]
    assert all(r["images"] + 3 >= 8 - 1 and r["skipped"] == 1 and r["img_per_s"] > 0 for r in rows)
    # a bad --workers: test_bench_loader_bad_workers_is_one_line


def test_image_folder_source_for_the_training_loop(tmp_path):
    from torch_model.imagefolder import open_image_folder, seeded_subset

    write_image_folder(tmp_path / "train", classes=("a", "b", "c"), per_class=5, size=(40, 34),
                       corrupt=("b/bad.jpg",))
    write_image_folder(tmp_path / "val", classes=("a", "b", "c"), per_class=2, size=(40, 34), seed=1)
    src = open_image_folder(tmp_path, "paper", 32, batch_size=4, seed=0, workers=0, device=torch.device("cpu"),
                            limit_train=12)
    assert len(src.train) == 12 and len(src.test) == 6 and src.classes == ["a", "b", "c"]
    assert sorted(src.train.samples) == sorted(seeded_subset(find_splits(tmp_path).train, 12, 0).samples)
    assert len({label for _, label in src.train.samples}) == 3                 # a seeded subset, not one class
    assert "measured on 12 training images" in " ".join(src.notes)
    batches = list(src.train_batches(1000))
    X, y = batches[0]
    assert X.dtype == torch.float32 and X.shape[1:] == (3, 32, 32) and y.dtype == torch.int64
    bad = [p for p, _ in src.train.samples if p.endswith("bad.jpg")]
    assert [p for p, _ in src.take_skipped()] == bad and src.take_skipped() == []
    assert sum(len(y) for _, y in batches) == 12 - len(bad)
    labels = torch.cat([y for _, y in src.test_batches()])
    assert labels.tolist() == [label for _, label in src.test.samples]       # evaluation: in folder order
    given = open_image_folder(tmp_path, "d2l", 24, 4, 0, 0, torch.device("cpu"), mean=[0.5], std=[0.25])
    assert given.norm.mean == [0.5] and "(0.500), std (0.250) (given)" in " ".join(given.notes)
    with pytest.raises(ValueError, match="--mean and --std go together"):
        open_image_folder(tmp_path, "d2l", 24, 4, 0, 0, torch.device("cpu"), mean=[0.5])
    with pytest.raises(ValueError, match=r"give 1 value\(s\); the paper variant.s images have 3 channel"):
        open_image_folder(tmp_path, "paper", 24, 4, 0, 0, torch.device("cpu"), mean=[0.5], std=[0.2])


# ----------------------------------------------------------------------------------------------- alexnet train

def test_train_on_an_image_folder_reports_the_skip(tmp_path, capsys):
    import json

    from torch_model.cli import main

    data = tmp_path / "photos"
    write_image_folder(data / "train", classes=("ant", "bee", "cat"), per_class=2, size=(40, 30), fmt="png")
    write_image_folder(data / "train", classes=("ant", "bee", "cat"), per_class=1, size=(30, 40), fmt="jpeg", seed=2)
    write_image_folder(data / "val", classes=("ant", "cat"), per_class=1, size=(36, 36), seed=3,
                       corrupt=("bee/cut.jpg",))
    (data / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "run"
    args = ["train", "--dataset", "imagefolder", "--data-dir", str(data), "--batch-size", "4", "--epochs", "1",
            "--workers", "1", "--device", "cpu", "--amp", "none", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert f"training images from {data / 'train'}, evaluation images from {data / 'val'}" in text
    assert "3 classes, 10 training / 3 evaluation images" in text
    assert f"warning: skipped unreadable image {data / 'train' / 'cat' / 'broken.png'}" in text
    assert f"warning: skipped unreadable image {data / 'val' / 'bee' / 'cut.jpg'}" in text
    assert "epoch 1/1: loss" in text and "2 unreadable image(s) skipped" in text
    assert "note: no confusion/mistakes/filters pictures for an image folder" in text
    saved = json.loads((out / "config.json").read_text())
    assert saved["dataset"] == "imagefolder" and len(saved["mean"]) == len(saved["std"]) == 1   # d2l: grey
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[1].split(",")[5] == "9"                                   # 10 training images, one unreadable
    # resumed: the recorded normalization is used again (nothing measured), the skip reported again
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert f"mean ({saved['mean'][0]:.3f}), std ({saved['std'][0]:.3f}) (recorded in config.json)" in text
    assert "epoch 2/2: loss" in text and "2 unreadable image(s) skipped" in text


@pytest.mark.parametrize("make, message", [
    (lambda d: d.mkdir(), "no class sub-folders"),
    (lambda d: write_image_folder(d, classes=("solo",), per_class=2), "a single class (solo)"),
    (lambda d: [(d / c).mkdir(parents=True) or (d / c / "x.txt").write_text("") for c in ("a", "b")],
     "2 file(s), none with an image extension"),
    (lambda d: d.write_text("not a folder"), "is a file, not a folder"),
])
def test_train_refuses_a_bad_image_folder_in_one_line(tmp_path, capsys, make, message):
    from torch_model.cli import main

    make(tmp_path / "data")
    assert main(["train", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "data"), "--device", "cpu",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("alexnet train: error: ") and message in err[0], err
    assert str(tmp_path / "data") in err[0] and not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, message", [
    (["--dataset", "imagefolder"], "--dataset imagefolder needs --data-dir PATH"),
    (["--workers", "2"], "--workers: for --dataset imagefolder"),
    (["--dataset", "imagefolder", "--data-dir", "x", "--mean", "0.5"], "--mean and --std go together"),
    (["--dist-timeout", "0"], "--dist-timeout must be > 0"),
])
def test_train_data_flags_refused(flags, message, capsys):
    from torch_model.cli import main

    assert main(["train", "--device", "cpu", *flags]) == 2
    assert message in capsys.readouterr().err


def test_train_mean_must_be_numbers(capsys):
    from torch_model.cli import main

    with pytest.raises(SystemExit) as info:      # argparse: usage and the message, exit status 2
        main(["train", "--mean", "a,b"])
    assert info.value.code == 2 and "--mean 'a,b': expected comma-separated numbers" in capsys.readouterr().err


@pytest.mark.parametrize("value, message", [("x", "expected worker counts like 0,2,4, got 'x'"),
                                            ("0,-2", "worker counts must be >= 0")])
def test_bench_loader_bad_workers_is_one_line(value, message, capsys):
    from torch_model.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", "loader", "--workers", value])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"argument --workers: {message}" in err and "lambda" not in err


def _folder_run(tmp_path, data, name, workers, **kw):
    """2 epochs of the d2l AlexNet at its smallest input (193) on a 16-image folder: 2 steps an epoch, with dropout."""
    from torch_model.config import TrainConfig, resolve_config

    return resolve_config(TrainConfig(dataset="imagefolder", data_dir=str(data), workers=workers, epochs=2, batch_size=8, resize=193,
                       device="cpu", backend="torch", amp="none", seed=1, progress=False, out=str(tmp_path / name),
                                      **kw))


def _same_run(a, b, what):
    from torch_model.checkpoint import read

    keep = ("epoch", "loss", "train_acc", "test_acc", "examples")
    assert [{k: h[k] for k in keep} for h in a.history] == [{k: h[k] for k in keep} for h in b.history], what
    wa = read(a.out_dir / "last.pt")["learner"]["model"]
    wb = read(b.out_dir / "last.pt")["learner"]["model"]
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{what}: weights {differ} differ"


@pytest.mark.slow
def test_a_run_depends_on_neither_the_worker_count_nor_a_resume(tmp_path):
    """Making a DataLoader iterator draws a seed: from the global RNG (dropout's) that would shift every later mask,
    once per epoch with 0 workers, once per run with persistent workers and once more after a resume."""
    from torch_model.config import resume_config
    from torch_model.train import fit

    data = write_image_folder(tmp_path / "photos", classes=("ant", "bee", "cat"), per_class=6, size=(24, 20))
    in_process = fit(_folder_run(tmp_path, data, "w0", workers=0))
    two = fit(_folder_run(tmp_path, data, "w2", workers=2))
    assert in_process.status == two.status == "completed" and len(two.history) == 2
    assert two.history[0]["examples"] == 16
    _same_run(in_process, two, "--workers 0 vs --workers 2")

    def interrupt(epoch, row, learner):
        raise KeyboardInterrupt                      # stopped right after epoch 1 was saved
    cut = fit(_folder_run(tmp_path, data, "cut", workers=2), on_epoch_end=interrupt)
    assert cut.status == "interrupted" and len(cut.history) == 1
    resumed = fit(resume_config(tmp_path / "cut", {}))       # as `alexnet train --resume --out cut` does
    assert resumed.status == "completed"
    _same_run(two, resumed, "stopped after epoch 1 and resumed vs uninterrupted")
