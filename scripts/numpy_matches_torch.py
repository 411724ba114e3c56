"""numpy_ref's AlexNet against torch's on the same trained weights: do they predict the same classes?

    alexnet export --checkpoint runs/R/best.pt --out alexnet.npz
    python scripts/numpy_matches_torch.py --checkpoint runs/R/best.pt --weights alexnet.npz --images 1000

torch runs the checkpoint in float32 (no autocast), numpy_ref the exported .npz in float32 (numpy_ref.walkthrough's
loader, the weights `alexnet export` wrote), both on the first N Fashion-MNIST test images resized to the run's input
size (torch's bilinear interpolation; numpy_ref's own resize_bilinear, its matrix form). Prints how many predictions
agree, the largest logit difference and the accuracy of each; exit status 1 if any prediction differs.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from tqdm import tqdm

from numpy_ref.walkthrough import load_weights, resize_bilinear
from torch_model.data import load_fashion_mnist, to_input
from torch_model.bench.common import positive_int
from torch_model.checkpoint import load
from torch_model.model import alexnet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="best.pt / last.pt of a d2l run")
    parser.add_argument("--weights", required=True, metavar="FILE.npz", help="the same run's `alexnet export`")
    parser.add_argument("--images", type=positive_int, default=1000, help="the first N test images (default 1000)")
    parser.add_argument("--batch", type=positive_int, default=50, help="images per forward pass (default 50)")
    parser.add_argument("--data-dir", help="folder with the four IDX files (default: the usual places)")
    args = parser.parse_args(argv)
    try:
        ckpt = load(args.checkpoint)
        if ckpt.variant != "d2l":
            raise ValueError(f"--checkpoint {args.checkpoint}: a {ckpt.variant} run; this check feeds d2l's [0, 1] "
                             f"pixels")
        net_np = load_weights(args.weights, dtype=np.float32).eval()
        _, test = load_fashion_mnist(args.data_dir)
    except (ValueError, OSError) as exc:
        print(f"numpy_matches_torch: error: {exc}", file=sys.stderr)
        return 2
    net = alexnet(init=False).eval()
    net.load_state_dict(ckpt.state)
    n, size = min(args.images, len(test)), ckpt.resize
    images, labels = test.images[:n], test.labels[:n].numpy()               # (n, 28, 28) uint8, (n,)
    rows, logits_t, logits_n = range(0, n, args.batch), [], []
    for start in tqdm(rows, desc="numpy_ref and torch", unit="batch"):
        batch = images[start:start + args.batch]                            # (b, 28, 28)
        with torch.no_grad():
            logits_t.append(net(to_input(batch, size)).numpy())              # (b, 10)
        x = np.stack([resize_bilinear(im.numpy().astype(np.float64) / 255, size) for im in batch])  # (b, R, R)
        logits_n.append(net_np.forward(x[:, None].astype(np.float32)))     # (b, 10)
    logits_t, logits_n = np.concatenate(logits_t), np.concatenate(logits_n)  # (n, 10) each
    pred_t, pred_n = logits_t.argmax(1), logits_n.argmax(1)                 # (n,)
    agree = int((pred_t == pred_n).sum())
    diff = np.abs(logits_t - logits_n)                                      # (n, 10)
    worst = np.unravel_index(diff.argmax(), diff.shape)
    print(f"{agree} of {n} predictions agree; largest logit difference {diff.max():.3g} (image {worst[0]}, class "
          f"{worst[1]}: torch {logits_t[worst]:.6f}, numpy_ref {logits_n[worst]:.6f}); logits span "
          f"{logits_t.min():.2f}..{logits_t.max():.2f}")
    print(f"accuracy on these {n}: torch {(pred_t == labels).mean():.4f}, numpy_ref {(pred_n == labels).mean():.4f}")
    return 0 if agree == n else 1


if __name__ == "__main__":
    sys.exit(main())
