"""d2l's pixels against ours: how far apart are the two 224x224 inputs, and does a trained network care?

    python scripts/d2l_pixels.py                                   # the pixels only, all 10,000 test images
    python scripts/d2l_pixels.py --checkpoint runs/R/best.pt       # and the network's accuracy on each

d2l's `load_data_fashion_mnist(resize=224)` resizes the 28x28 PIL image with PIL's bilinear filter and only then
converts it to [0, 1] (torchvision's `Resize` before `ToTensor`): PIL resamples in two passes, rows then columns,
each rounded to 8 bits, so its inputs are whole grey levels. torch_model/data.py converts the uint8 image first and
resizes it in float32 (F.interpolate, align_corners=False, the same pixel centres). This script draws both inputs
for the first N test images and prints how many grey levels apart they are; with --checkpoint it runs the network
in float32 (no autocast) on each and prints both accuracies and how many predictions differ.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from torch_model.bench.common import positive_int
from torch_model.checkpoint import load
from torch_model.data import load_fashion_mnist, to_input
from torch_model.model import alexnet


def d2l_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, 28, 28) -> float32 (B, 1, size, size) as d2l's data pipeline makes it: PIL's bilinear resize of the
    8-bit image, then /255 (torchvision's ToTensor)."""
    resized = [np.asarray(Image.fromarray(im.numpy()).resize((size, size), Image.BILINEAR)) for im in images]
    return torch.from_numpy(np.stack(resized)).to(torch.float32).div_(255)[:, None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="best.pt / last.pt of a d2l run: also compare its accuracy on each input")
    parser.add_argument("--images", type=positive_int, default=10000,
                        help="the first N test images (default: all 10,000)")
    parser.add_argument("--batch", type=positive_int, default=100, help="images per forward pass (default 100)")
    parser.add_argument("--data-dir", help="folder with the four IDX files (default: the usual places)")
    args = parser.parse_args(argv)
    try:
        ckpt = load(args.checkpoint) if args.checkpoint else None
        if ckpt is not None and (ckpt.variant != "d2l" or ckpt.pixels != "unit"):
            raise ValueError(f"--checkpoint {args.checkpoint}: a {ckpt.variant} run on {ckpt.pixels} pixels; d2l's "
                             f"pipeline feeds the d2l network [0, 1] pixels")
        _, test = load_fashion_mnist(args.data_dir)
    except (ValueError, OSError) as exc:
        print(f"d2l_pixels: error: {exc}", file=sys.stderr)
        return 2
    size = ckpt.resize if ckpt is not None else 224
    net = None
    if ckpt is not None:
        net = alexnet(init=False).eval()
        net.load_state_dict(ckpt.state)
    n = min(args.images, len(test))
    counts = np.zeros(3, np.int64)          # pixels d2l's input is 1 grey level below, equal to, above round(ours)
    largest, correct, changed = 0.0, np.zeros(2, np.int64), 0
    for start in tqdm(range(0, n, args.batch), desc="d2l's pixels and ours", unit="batch"):
        end = min(start + args.batch, n)
        batch, labels = test.images[start:end], test.labels[start:end]
        ours, theirs = to_input(batch, size), d2l_input(batch, size)              # (b, 1, R, R) each, in [0, 1]
        levels = theirs * 255 - torch.round(ours * 255)                            # whole grey levels
        largest = max(largest, float((theirs - ours).abs().max()) * 255)
        counts += np.array([int((levels == k).sum()) for k in (-1, 0, 1)])
        if net is not None:
            with torch.no_grad():
                pred = [net(x).argmax(dim=1) for x in (ours, theirs)]             # (b,) each
            correct += np.array([int((p == labels).sum()) for p in pred])
            changed += int((pred[0] != pred[1]).sum())
    pixels = n * size * size
    print(f"{n} test images at {size}x{size}: d2l's input differs from ours by at most {largest:.3f} grey levels "
          f"(of 255); d2l's 8-bit value is round(ours) for {counts[1] / pixels:.1%} of the pixels, one level below "
          f"it for {counts[0] / pixels:.1%}, one above for {counts[2] / pixels:.1%}"
          + ("" if counts.sum() == pixels else f", further apart for {1 - counts.sum() / pixels:.1%}"))
    if net is not None:
        print(f"{args.checkpoint} in float32: accuracy {correct[0] / n:.4f} on our pixels, {correct[1] / n:.4f} on "
              f"d2l's; {changed} of {n} predictions differ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
