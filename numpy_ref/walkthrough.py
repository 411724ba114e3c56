"""Follow one Fashion-MNIST image through the NumPy AlexNet, layer by layer, forward and backward.

    python -m numpy_ref.walkthrough                  # test image 0 (real data when found, else a random image)
    python -m numpy_ref.walkthrough --index 42       # another test image
    python -m numpy_ref.walkthrough --break-at 3     # stop in pdb just before layer 3 (x, layer, net in scope)
    python -m numpy_ref.walkthrough --break-at-backward 3   # ... just before layer 3's backward (dout, layer, net)
    python -m numpy_ref.walkthrough --random         # no dataset needed
    python -m numpy_ref.walkthrough --weights run.npz --index 42   # the trained network (`alexnet export`)

The image is read from the IDX files without torch (numpy_ref.idx: FASHION_MNIST_DIR, --data-dir,
./data/fashion-mnist or /usr/share/datasets/fashion-mnist), scaled to [0, 1] and resized 28 -> 224 with bilinear
interpolation (torch's F.interpolate(mode="bilinear", align_corners=False), as the seed's transforms.Resize does).
Without --weights the network is untrained (d2l's init from --seed), so expect about 10% for every class; with
--weights (an .npz of torch's state_dict keys, written by `alexnet export`) it is the trained one, fed as its run
fed it (the .npz's input.* entries: the run's input size, and raw 0..255 pixels minus its mean training image for a
--pixels mean-subtracted run), so its probabilities are `alexnet visualize`'s.
Bad input (an index outside the test set, a folder without the files, a damaged file, an .npz that is not
AlexNet's or holds NaN/inf weights) is one line naming the argument or file, exit status 2. In pdb, `c` runs on,
`q` ends the walk quietly (exit status 0).
"""
from __future__ import annotations

import argparse
import bdb
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from numpy_ref.functional import cross_entropy_backward, cross_entropy_forward
from numpy_ref.idx import CLASS_NAMES, load_split_arrays
from numpy_ref.idx import find_data_dir as _find_data_dir
from numpy_ref.layers import Sequential
from numpy_ref.model import alexnet

PROG = "python -m numpy_ref.walkthrough"


def find_data_dir(data_dir: str | None = None) -> Path | None:
    """--data-dir, else FASHION_MNIST_DIR, else the first default folder holding the test files (None if none)."""
    return _find_data_dir(data_dir, splits=("test",))


def read_test_image(directory: Path, index: int) -> tuple[np.ndarray, int]:
    """Test image `index` as uint8 (28, 28) and its label, from the validated test split."""
    images, labels = load_split_arrays(directory, "test")                     # (N, 28, 28) uint8, (N,) int64
    if not 0 <= index < len(labels):
        raise ValueError(f"--index {index}: the test set in {directory} has {len(labels)} images, "
                         f"so --index must be in 0..{len(labels) - 1}")
    return images[index], int(labels[index])


# (channels, size) of each variant's input; the paper's network sees the grey image repeated to 3 channels
INPUTS = {"d2l": (1, 224), "paper": (3, 227)}
PIXELS = ("unit", "mean-subtracted")     # torch_model.data.PIXELS: how `alexnet train` feeds the pixels


@dataclass
class Feeding:
    """How a network's run fed it an image (`alexnet export`'s input.* entries): the variant (1 grey channel, or
    the grey image repeated to 3), the input size S, the pixels ([0, 1], or raw 0..255 minus the mean training
    image `mean`, (28, 28))."""
    variant: str = "d2l"
    size: int = INPUTS["d2l"][1]
    pixels: str = "unit"
    mean: np.ndarray | None = None
    recorded: bool = True                 # False: the .npz did not say; the variant's defaults are assumed

    @property
    def channels(self) -> int:
        return INPUTS[self.variant][0]

    def model_input(self, image: np.ndarray) -> np.ndarray:
        """uint8 (28, 28) -> float64 (1, C, S, S): torch_model.data.to_input's [0, 1] resize (and subtract_mean's
        x * 255 - the resized mean image, for mean-subtracted pixels), the grey channel repeated to C."""
        x = resize_bilinear(image / 255.0, self.size)                        # (S, S) in [0, 1]
        if self.pixels == "mean-subtracted":
            x = x * 255 - resize_bilinear(self.mean.astype(np.float64), self.size)   # (S, S) 0..255, centred
        return np.repeat(x[None, None], self.channels, axis=1)             # (1, C, S, S)

    def describe(self) -> str:
        grey = ", the grey image repeated to 3 channels" if self.channels == 3 else ""
        pixels = ("raw 0..255 pixels minus the run's mean training image" if self.pixels == "mean-subtracted"
                  else "pixels in [0, 1]")
        return f"{self.size}x{self.size} input{grey}, {pixels}"


def _feeding(path: Path, entries: dict[str, np.ndarray], variant: str) -> Feeding:
    """The Feeding the input.* entries record, checked (ValueError naming the file and the entry); without them
    the variant's input size and [0, 1] pixels (recorded=False)."""
    if not entries:
        return Feeding(variant, INPUTS[variant][1], recorded=False)

    def bad(key: str, why: str) -> ValueError:
        return ValueError(f"--weights {path}: {key} {why}; re-export it with `alexnet export`")

    for key in ("input.variant", "input.size", "input.pixels"):
        if key not in entries:
            raise bad(key, "is missing")
    said, size, pixels = entries["input.variant"], entries["input.size"], entries["input.pixels"]
    if said.shape != () or str(said) != variant:
        raise bad("input.variant", f"is {said!r}, but the weights are the {variant} AlexNet's")
    if size.shape != () or size.dtype.kind not in "iu" or not 1 <= int(size) <= 4096:
        raise bad("input.size", f"is {size!r}, not an input size")
    if pixels.shape != () or str(pixels) not in PIXELS:
        raise bad("input.pixels", f"is {pixels!r}, none of {PIXELS}")
    mean = entries.get("input.mean")
    if str(pixels) == "mean-subtracted":
        if mean is None or mean.shape != (28, 28) or mean.dtype.kind != "f" or not np.isfinite(mean).all():
            raise bad("input.mean", "must be the (28, 28) finite mean training image of a mean-subtracted run")
    return Feeding(variant, int(size), str(pixels), None if mean is None else mean.astype(np.float64))


def load_weights(path: str | os.PathLike, dtype=np.float64) -> Sequential:
    """numpy_ref.alexnet with the weights of an .npz holding torch's state_dict keys (`alexnet export`), of either
    variant (the keys tell: the paper's network ends in 22.*, d2l's in 20.*); `net.variant` says which and
    `net.feeding` how its run fed it (the .npz's input.* entries). Raises ValueError naming the file when it is
    missing, not an .npz, not AlexNet's weights, or holds a NaN or infinite weight (naming its key)."""
    path = Path(path)
    if path.is_file() and not zipfile.is_zipfile(path):  # np.load would try to unpickle it
        raise ValueError(f"--weights {path}: not an .npz file (no zip archive inside)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            state = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise ValueError(f"--weights {path}: no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"--weights {path}: not a readable .npz file ({exc.__class__.__name__}: {exc})") from exc
    entries = {k: state.pop(k) for k in [k for k in state if k.startswith("input.")]}
    variant = "paper" if "22.weight" in state else "d2l"
    last = "22.weight" if variant == "paper" else "20.weight"
    if last not in state:
        have = ", ".join(sorted(state)[:4]) or "none"
        raise ValueError(f"--weights {path}: not AlexNet's weights (no '20.weight' or '22.weight'; keys: {have}); "
                         f"write one with `alexnet export --checkpoint RUN/best.pt --out FILE.npz`")
    num_classes = int(state[last].shape[0])
    if num_classes != len(CLASS_NAMES):
        raise ValueError(f"--weights {path}: a {num_classes}-class network; Fashion-MNIST has {len(CLASS_NAMES)}")
    for key, value in state.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ValueError(f"--weights {path}: {key} holds NaN or inf (weights of a diverged run)")
    net = alexnet(num_classes, dtype=dtype, init=False, variant=variant)
    try:
        net.load_state_dict(state)
    except ValueError as exc:
        raise ValueError(f"--weights {path}: {exc}") from exc
    net.variant = variant
    net.feeding = _feeding(path, entries, variant)
    return net


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The (n_out, n_in) matrix of 1-D linear interpolation with align_corners=False, torch's rule:
    src = (dst + 0.5) * n_in / n_out - 0.5, clamped at 0; each row mixes pixels floor(src) and the next one."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)   # (n_out,)
    i0 = np.floor(src).astype(np.int64)                                       # (n_out,)
    i1 = np.minimum(i0 + 1, n_in - 1)                                         # (n_out,)
    lam = src - i0                                                            # (n_out,)
    m = np.zeros((n_out, n_in))                                               # (n_out, n_in)
    np.add.at(m, (np.arange(n_out), i0), 1.0 - lam)
    np.add.at(m, (np.arange(n_out), i1), lam)
    return m


def resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W) -> (size, size): interpolate the rows, then the columns (bilinear is separable)."""
    rows = bilinear_matrix(image.shape[0], size)                              # (size, H)
    cols = bilinear_matrix(image.shape[1], size)                              # (size, W)
    return rows @ image @ cols.T                                              # (size, size)


def _stats(a: np.ndarray) -> str:
    return (f"mean {a.mean():+.4f}  std {a.std():.4f}  min {a.min():+.4f}  max {a.max():+.4f}  "
            f"zeros {np.mean(a == 0):5.1%}")


def walk(x: np.ndarray, label: int, seed: int = 0, break_at: int | None = None, out=None,
         net: Sequential | None = None, break_at_backward: int | None = None) -> dict:
    """Forward x (1, 1, 224, 224) layer by layer, the loss against `label`, then backward layer by layer.
    `net`: the network to step through (default: untrained, d2l's init from `seed`, float64).
    break_at / break_at_backward: enter pdb just before that layer's forward / backward.
    Returns the logits, the loss and each layer's output and input-gradient shapes (for tests)."""
    if net is None:
        net = alexnet(dtype=np.float64, seed=seed)
    net.eval()                                                              # dropout off: one deterministic pass
    p = lambda *a: print(*a, file=out or sys.stdout)                        # noqa: E731
    p(f"input  {str(x.shape):<20} {_stats(x)}")
    shapes = []
    for i, layer in enumerate(net):
        if break_at == i:
            p(f"-- stopping before layer {i} ({layer!r}); `x` is its input, `layer.forward(x)` runs it")
            breakpoint()
        x = layer.forward(x)                                                # the layer's output
        shapes.append(x.shape)
        p(f"{i:>2} {type(layer).__name__:<9} {str(x.shape):<20} {_stats(x)}")
    logits = x                                                              # (1, 10)
    loss, cache = cross_entropy_forward(logits, np.array([label]))
    probs = np.exp(logits[0] - logits[0].max())                            # (10,)
    probs /= probs.sum()                                                    # (10,)
    top = np.argsort(probs)[::-1][:3]                                       # (3,) class ids
    p(f"\nlabel {label} ({CLASS_NAMES[label]}); cross-entropy {float(loss):.4f}; top 3: " +
      ", ".join(f"{CLASS_NAMES[k]} {probs[k]:.1%}" for k in top))
    p("\nbackward (gradient of the loss with respect to each layer's input, and its parameters):")
    dout = cross_entropy_backward(1.0, cache)                               # (1, 10)
    grad_shapes = []
    for i in reversed(range(len(net))):
        layer = net[i]
        if break_at_backward == i:
            p(f"-- stopping before layer {i}'s backward ({layer!r}); `dout` is the gradient of its output, "
              f"`layer.backward(dout)` runs it")
            breakpoint()
        dout = layer.backward(dout)                                         # gradient w.r.t. the layer's input
        grad_shapes.append(dout.shape)
        params = "  ".join(f"|d{name}| {np.linalg.norm(q.grad):.3e}" for name, q in layer.named_parameters())
        p(f"{i:>2} {type(layer).__name__:<9} d_input {str(dout.shape):<20} |d_input| {np.linalg.norm(dout):.3e}"
          + (f"  {params}" if params else ""))
    return {"logits": logits, "loss": float(loss), "shapes": shapes, "grad_shapes": grad_shapes[::-1]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--index", type=int, default=0, help="which test image (default 0)")
    parser.add_argument("--data-dir", help="folder with the IDX files (default: FASHION_MNIST_DIR or the usual places)")
    parser.add_argument("--random", action="store_true", help="a random image instead of a real one")
    parser.add_argument("--weights", metavar="FILE.npz",
                        help="trained weights (`alexnet export`); default: untrained, d2l's init from --seed")
    parser.add_argument("--seed", type=int, default=0, help="seed of the untrained weights (and of --random's image)")
    parser.add_argument("--break-at", type=int, metavar="IDX",
                        help="enter pdb just before layer IDX (0..20; 0..22 for the paper's weights)")
    parser.add_argument("--break-at-backward", type=int, metavar="IDX",
                        help="enter pdb just before layer IDX's backward (0..20; 0..22 for the paper's weights)")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except bdb.BdbQuit:  # `q` in pdb: the learner has seen enough
        return 0
    except (ValueError, OSError) as exc:  # DatasetError is a ValueError: one line, no traceback
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    net, feeding = None, Feeding()
    if args.weights is not None:
        net = load_weights(args.weights)
        feeding = net.feeding
        print(f"weights: {args.weights} (trained, the {net.variant} AlexNet)")
        if feeding.recorded:
            print(f"fed as its run fed it: {feeding.describe()}")
        else:
            print(f"note: {args.weights} does not say how its run fed the network (no input.* entries): assuming "
                  f"the {net.variant} variant's {feeding.describe()}; `alexnet export` records it")
    n_layers = len(net) if net is not None else 21
    for flag, value in (("--break-at", args.break_at), ("--break-at-backward", args.break_at_backward)):
        if value is not None and not 0 <= value < n_layers:
            raise ValueError(f"{flag} must be in 0..{n_layers - 1}, got {value}")
    directory = None if args.random else find_data_dir(args.data_dir)
    if directory is None:
        if not args.random:
            print("Fashion-MNIST not found (set FASHION_MNIST_DIR or pass --data-dir): using a random image")
        image = np.random.default_rng(args.seed).integers(0, 256, (28, 28)).astype(np.uint8)  # (28, 28)
        label = 0
    else:
        image, label = read_test_image(directory, args.index)
        print(f"test image {args.index} from {directory}: {CLASS_NAMES[label]}")
    x = feeding.model_input(image)                                          # (1, C, S, S): (1, 1, 224, 224)
    walk(x, label, seed=args.seed, break_at=args.break_at, net=net, break_at_backward=args.break_at_backward)
    return 0


if __name__ == "__main__":
    sys.exit(main())
