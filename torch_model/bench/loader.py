"""`alexnet bench loader`: how many images per second the image-folder pipeline delivers, per worker count.

What is timed is what feeds the training step: torch_model.imagefolder's training pipeline (Pillow decode, short
side resized, random crop, flip, to uint8) in `--workers` DataLoader processes, batches collated, for a second pass
over the images (the first starts the workers and is not timed). The conversion to float and the
normalization are left out: they run on the training device, not in the loader.

Without --data-dir it writes `--make` synthetic JPEGs of 500x375 (ImageNet's most common size; quality 90, smooth
noise, ~76 KB each) into a temporary folder, so the figure is about decoding and resizing, not about the disk.
Each figure: images / seconds over the timed pass, with the per-worker rate beside it (images/s divided by
max(1, workers)), and the CPU time all processes spent per image (the workers' counted once they are joined): on a
shared machine the wall-clock rate drops with the load, the CPU time per image much less, and
1000 / (CPU ms per image) is what one free core delivers. The machine, versions and load average are printed with
the table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from torch_model.bench.common import format_table, positive_int
from torch_model.bench.timing import machine_info, now_iso
from torch_model.files import atomic_write

SYNTHETIC_SIZE = (500, 375)     # (W, H)
SYNTHETIC_CLASSES = 10


def write_synthetic_jpegs(root: Path, n: int, size: tuple[int, int] = SYNTHETIC_SIZE, seed: int = 0) -> Path:
    """n JPEGs of smooth random colour (a blurred noise field: compresses like a photo, unlike white noise)
    spread over SYNTHETIC_CLASSES class folders."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / f"class{i % SYNTHETIC_CLASSES:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)       # (H/8, W/8, 3)
        img = Image.fromarray(small).resize(size, Image.BICUBIC).filter(ImageFilter.GaussianBlur(1))
        noise = rng.integers(-12, 13, (size[1], size[0], 3))                                  # (H, W, 3) texture
        pixels = np.clip(np.asarray(img, dtype=np.int64) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)
    return root


def measure(root: Path, workers: int, batch: int, variant: str, size: int, limit: int | None) -> dict:
    """The training pipeline over the folder (or its first `limit` images) in `workers` processes: one untimed
    pass, then one timed pass (a new epoch: new crops and flips)."""
    from torch_model.imagefolder import (EpochBatchSampler, ImageFolderDataset, make_loader, scan_folder,
                                         train_pipeline)

    scan = scan_folder(root)
    if limit is not None:
        scan.samples = scan.samples[:limit]
    channels = 3 if variant == "paper" else 1
    ds = ImageFolderDataset(scan, train_pipeline(variant, size), channels, size)
    sampler = EpochBatchSampler(len(ds), batch, shuffle=True)
    loader = make_loader(ds, sampler, workers)           # persistent workers: started once, kept for both passes
    children0, main0 = _children_cpu_s(), time.process_time()
    t_start = time.perf_counter()
    sampler.set_epoch(1)
    warm = sum(len(b.labels) for b in loader)            # pass 1: starts the workers, fills the page cache
    warmup_s = time.perf_counter() - t_start
    sampler.set_epoch(2)
    images = skipped = 0
    t0 = time.perf_counter()
    for b in loader:                                     # pass 2, timed: the steady state, prefetching included
        images += len(b.labels)
        skipped += len(b.skipped)
    seconds = time.perf_counter() - t0
    del loader                                           # joins the workers: their CPU time is counted now
    cpu_s = _children_cpu_s() - children0 + time.process_time() - main0
    return dict(cpu_ms_per_image=1e3 * cpu_s / (images + warm),
                workers=workers, batch=batch, variant=variant, size=size, images=images, seconds=seconds,
                img_per_s=images / seconds if seconds > 0 else float("nan"),
                img_per_s_per_worker=images / seconds / max(1, workers) if seconds > 0 else float("nan"),
                warmup_pass_s=warmup_s, skipped=skipped)


def _children_cpu_s() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)      # finished children only: the joined workers
    return ru.ru_utime + ru.ru_stime


def worker_counts(text: str) -> list[int]:
    """--workers 0,2,4 -> [0, 2, 4]; argparse names the flag and the value when this raises."""
    try:
        counts = [int(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected worker counts like 0,2,4, got {text!r}") from None
    if any(c < 0 for c in counts):
        raise argparse.ArgumentTypeError(f"worker counts must be >= 0, got {text!r}")
    return counts


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="an image folder (CLASS/IMAGE); default: synthetic JPEGs (--make)")
    parser.add_argument("--make", type=positive_int, default=512,
                        help="synthetic 500x375 JPEGs to write when there is no --data-dir (default: %(default)s)")
    parser.add_argument("--workers", type=worker_counts,
                        help="comma-separated worker counts (default: 0, 1, 2, 4, ... up to the CPU count)")
    parser.add_argument("--batch", type=positive_int, default=128, help="batch size (default: %(default)s)")
    parser.add_argument("--variant", choices=("paper", "d2l"), default="paper",
                        help="paper: RGB, short side 256, random 227 crop, flip; d2l: grey, --size square")
    parser.add_argument("--size", type=positive_int, help="crop size (default: 227 paper, 224 d2l)")
    parser.add_argument("--limit", type=positive_int, help="time only the first N images of --data-dir")
    parser.add_argument("--out", help="also write the figures as JSON here (atomically)")


def run(args: argparse.Namespace) -> int:
    cpus = os.cpu_count() or 1
    workers = args.workers or [0] + [w for w in (1, 2, 4, 8, 16, 32, 64) if w <= cpus]
    size = args.size or (227 if args.variant == "paper" else 224)
    info = machine_info(torch.device("cpu"))
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        if args.data_dir:
            root, source = Path(args.data_dir), f"--data-dir {args.data_dir}"
        else:
            t0 = time.perf_counter()
            root = write_synthetic_jpegs(Path(tmp), args.make)
            mean_kb = np.mean([p.stat().st_size for p in root.rglob("*.jpg")]) / 1024
            source = (f"{args.make} synthetic {SYNTHETIC_SIZE[0]}x{SYNTHETIC_SIZE[1]} JPEGs (quality 90, mean "
                      f"{mean_kb:.0f} KB), written in {time.perf_counter() - t0:.1f} s")
        load = os.getloadavg()[0]
        print(f"{info['device_name']}; torch {info['torch']}, Pillow {_pillow()}, {info['platform']}; "
              f"load average {load:.1f} at the start (other processes share the cores when it exceeds their count)")
        print(f"images: {source}; pipeline: {args.variant} training ({size}x{size}), batch {args.batch}")
        rows = []
        for w in workers:
            r = measure(root, w, args.batch, args.variant, size, args.limit)
            rows.append(r)
            print(f"  workers {w:>2}: {r['img_per_s']:8.0f} images/s ({r['img_per_s_per_worker']:.0f} per worker; "
                  f"{r['images']} images in {r['seconds']:.2f} s, untimed first pass {r['warmup_pass_s']:.2f} s; "
                  f"{r['cpu_ms_per_image']:.1f} CPU ms per image)", flush=True)
    print()
    print(format_table(["workers", "images/s", "per worker", "CPU ms / image", "images timed"],
                         [[r["workers"], f"{r['img_per_s']:.0f}", f"{r['img_per_s_per_worker']:.0f}",
                           f"{r['cpu_ms_per_image']:.1f}", r["images"]] for r in rows], markdown=True))
    best = min(r["cpu_ms_per_image"] for r in rows)
    print(f"\nCPU cost: {best:.1f} ms per image at best, i.e. about {1e3 / best:.0f} images/s per core that does "
          f"nothing else (all processes' CPU time, the workers' included, over the images they delivered)")
    if args.out:
        data = dict(machine=info, date=now_iso(), source=source, pillow=_pillow(), load_average=load, rows=rows)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(Path(args.out), lambda f: f.write(json.dumps(data, indent=1) + "\n"), mode="w")
        print(f"wrote {args.out}")
    return 0


def _pillow() -> str:
    import PIL

    return PIL.__version__


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m torch_model.bench.loader", description=__doc__)
    configure(parser)
    sys.exit(run(parser.parse_args()))
