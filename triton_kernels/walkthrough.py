"""One image through a narrow AlexNet in Triton (the interpreter on a CPU), each layer checked against numpy_ref.

    python -m triton_kernels.walkthrough                 # test image 0 at 67x67, every width divided by 16
    python -m triton_kernels.walkthrough --size 99 --width 8 --index 3
    python -m triton_kernels.walkthrough --random        # no dataset needed

d2l's AlexNet layer for layer (conv 11/4/1, pool 3/2, conv 5/1/2, pool, three convs 3/1/1, pool, three linear
layers; dropout is off, as in eval), with every channel count divided by --width and the image resized to --size
instead of 224 so the interpreter, which runs each program instance in Python, takes seconds. The same float64
weights (d2l's xavier init from --seed) run twice: through numpy_ref's layers in float64, and in float32 through
triton_kernels' conv2d (the ReLU fused) and max_pool2d, the linear layers in torch. Each layer prints its shape and
the Triton output's error, max |triton - numpy_ref| / max |numpy_ref|; exit status 1 when one exceeds 1e-4.
(numpy_ref.walkthrough steps the full-size network through NumPy alone, forward and backward.)
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

import triton_kernels
from numpy_ref import layers as L
from numpy_ref.walkthrough import find_data_dir, read_test_image, resize_bilinear

PROG = "python -m triton_kernels.walkthrough"
TOL = 1e-4  # float32 kernels against float64: sums of up to ~2,400 products, relative rounding ~1e-6


def narrow_alexnet(width: int, size: int, rng: np.random.Generator) -> list:
    """d2l's layers with every channel count divided by `width`, for a size x size image (float64)."""
    c1, c2, c3, c4, c5 = (max(1, n // width) for n in (96, 256, 384, 384, 256))
    hidden = max(1, 4096 // width)
    s = (size + 2 - 11) // 4 + 1  # conv1
    for _ in range(3):  # three 3/2 pools (the convs between keep the size)
        s = (s - 3) // 2 + 1
    if s < 1:
        raise ValueError(f"--size {size} is too small for AlexNet's pools; give at least 67")
    kw = dict(dtype=np.float64, rng=rng)
    return [
        L.Conv2d(1, c1, 11, stride=4, padding=1, **kw), L.ReLU(), L.MaxPool2d(3, 2),
        L.Conv2d(c1, c2, 5, padding=2, **kw), L.ReLU(), L.MaxPool2d(3, 2),
        L.Conv2d(c2, c3, 3, padding=1, **kw), L.ReLU(),
        L.Conv2d(c3, c4, 3, padding=1, **kw), L.ReLU(),
        L.Conv2d(c4, c5, 3, padding=1, **kw), L.ReLU(), L.MaxPool2d(3, 2),
        L.Flatten(), L.Linear(c5 * s * s, hidden, **kw), L.ReLU(), L.Linear(hidden, hidden, **kw), L.ReLU(),
        L.Linear(hidden, 10, **kw),
    ]


def _triton_layer(layer, x: torch.Tensor, relu: bool) -> torch.Tensor:
    """The Triton (or, for the linear layers, torch) twin of one numpy_ref layer, float32."""
    if isinstance(layer, L.Conv2d):
        w = torch.from_numpy(layer.weight.data).float()
        b = torch.from_numpy(layer.bias.data).float()
        return triton_kernels.conv2d(x, w, b, stride=layer.stride, padding=layer.padding, relu=relu,
                                     input_precision="ieee")
    if isinstance(layer, L.MaxPool2d):
        return triton_kernels.max_pool2d(x, layer.kernel_size, layer.stride)
    if isinstance(layer, L.Flatten):
        return x.flatten(1)
    if isinstance(layer, L.Linear):
        out = torch.nn.functional.linear(x, torch.from_numpy(layer.weight.data).float(),
                                         torch.from_numpy(layer.bias.data).float())
        return torch.relu(out) if relu else out
    raise TypeError(f"no Triton twin for {layer!r}")


def walk(image: np.ndarray, width: int, seed: int, out=None) -> float:
    """Step a (size, size) image in [0, 1] through both; returns the worst layer error."""
    p = lambda *a: print(*a, file=out or sys.stdout)  # noqa: E731
    net = narrow_alexnet(width, image.shape[0], np.random.default_rng(seed))
    xn = image[None, None]  # (1, 1, size, size) float64
    xt = torch.from_numpy(xn).float()  # (1, 1, size, size) float32
    worst, i = 0.0, 0
    p(f"{'layer':<22} {'shape':<18} {'max |triton - numpy_ref| / max |numpy_ref|'}")
    while i < len(net):
        layer = net[i]
        fused = i + 1 < len(net) and isinstance(net[i + 1], L.ReLU)  # conv/linear + ReLU: one Triton call
        xn = layer.forward(xn)
        if fused:
            xn = net[i + 1].forward(xn)
        xt = _triton_layer(layer, xt, fused)
        err = float(np.abs(xt.numpy() - xn).max() / max(np.abs(xn).max(), 1e-30))
        worst = max(worst, err)
        name = f"{i:>2} {type(layer).__name__}" + ("+ReLU" if fused else "")
        p(f"{name:<22} {str(tuple(xn.shape)):<18} {err:.1e}" + ("" if err <= TOL else "  TOO LARGE"))
        i += 2 if fused else 1
    p(f"\npredicted class {int(xn.argmax())} (numpy_ref) and {int(xt.argmax())} (Triton); untrained weights: the "
      f"class means nothing, the agreement does")
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=67, help="image size instead of 224 (default 67, at least 67)")
    parser.add_argument("--width", type=int, default=16, help="divide every channel count by this (default 16)")
    parser.add_argument("--index", type=int, default=0, help="which test image (default 0)")
    parser.add_argument("--data-dir", help="folder with the IDX files (default: FASHION_MNIST_DIR or the usual places)")
    parser.add_argument("--random", action="store_true", help="a random image instead of a real one")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights (and of --random's image)")
    args = parser.parse_args(argv)
    try:
        if args.width < 1 or args.size < 1:
            raise ValueError(f"--width and --size must be positive, got --width {args.width} --size {args.size}")
        directory = None if args.random else find_data_dir(args.data_dir)
        if directory is None:
            if not args.random:
                print("Fashion-MNIST not found (set FASHION_MNIST_DIR or pass --data-dir): using a random image")
            image = np.random.default_rng(args.seed).integers(0, 256, (28, 28)).astype(np.uint8)  # (28, 28)
        else:
            image, label = read_test_image(directory, args.index)
            print(f"test image {args.index} from {directory} (label {label}), resized to {args.size}x{args.size}; "
                  f"channels / {args.width}" + (" (Triton interpreter)" if triton_kernels.INTERPRET else ""))
        worst = walk(resize_bilinear(image / 255.0, args.size), args.width, args.seed)
    except (ValueError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return 0 if worst <= TOL else 1


if __name__ == "__main__":
    sys.exit(main())
