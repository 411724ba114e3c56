"""`alexnet export`: a checkpoint's weights as a plain .npz, so numpy_ref (which never imports torch) can load them,
with how the run fed its network, so the walkthrough feeds an image the same way.

    alexnet export --checkpoint runs/R/best.pt --out alexnet.npz
    python -m numpy_ref.walkthrough --weights alexnet.npz --index 42      # step the trained network through an image

In Python:
    from numpy_ref.walkthrough import load_weights
    net = load_weights("alexnet.npz")            # numpy_ref.alexnet of the run's variant, its weights, eval mode
    x = net.feeding.model_input(image)           # uint8 (28, 28) -> (1, C, S, S) as the run fed it

The archive holds torch's state_dict keys ('0.weight', '0.bias', ..., '20.bias', or '22.bias' for the paper's
network) as float32 arrays (187 MB uncompressed for d2l's 46,764,746 parameters), and how the run fed them:

    input.variant   'd2l' or 'paper'                     (the network, also told by its keys)
    input.size      the run's --resize: S of the (C, S, S) input, the 28x28 image resized bilinearly
    input.pixels    'unit' ([0, 1] values) or 'mean-subtracted' (raw 0..255 values minus the mean training image)
    input.mean      (28, 28) float32, 0..255: that mean training image (mean-subtracted only)

numpy_ref's load_state_dict wants exactly the weights' keys: leave the input.* entries out when loading by hand,
`{k: v for k, v in np.load(path).items() if not k.startswith("input.")}`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from torch_model.checkpoint import Checkpoint, load
from torch_model.files import atomic_write


def feeding_arrays(ckpt: Checkpoint) -> dict[str, np.ndarray]:
    """The input.* entries: how the checkpoint's run fed its network (torch_model.data's pixels, its resize)."""
    arrays = {"input.variant": np.array(ckpt.variant), "input.size": np.array(ckpt.resize, dtype=np.int64),
              "input.pixels": np.array(ckpt.pixels)}
    if ckpt.pixel_mean is not None:
        arrays["input.mean"] = ckpt.pixel_mean.numpy().astype(np.float32)      # (28, 28), 0..255
    return arrays


def export_npz(checkpoint: str | Path, out: str | Path) -> dict[str, np.ndarray]:
    """Write the checkpoint's weights and its input.* entries to `out` (atomically); return the weights."""
    check_out(out)
    return write_npz(load(checkpoint), out)


def check_out(out: str | Path) -> None:
    out = Path(out)
    if out.suffix != ".npz":
        raise ValueError(f"--out {out}: must end in .npz")
    if out.is_dir():
        raise ValueError(f"--out {out}: is a folder; give a file name ending in .npz")
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: the folder {out.parent} does not exist")


def write_npz(ckpt: Checkpoint, out: str | Path) -> dict[str, np.ndarray]:
    arrays = {k: v.numpy() for k, v in ckpt.state.items()}           # float32, NCHW, torch's keys
    atomic_write(Path(out), lambda f: np.savez(f, **arrays, **feeding_arrays(ckpt)))
    return arrays


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="PATH", help="best.pt / last.pt of a run")
    parser.add_argument("--out", required=True, metavar="FILE.npz", help="the .npz to write")


def run(args: argparse.Namespace) -> int:
    check_out(args.out)
    ckpt = load(args.checkpoint)
    note = ckpt.assumption_note()
    if note:
        print(note, flush=True)
    arrays = write_npz(ckpt, args.out)
    n = sum(a.size for a in arrays.values())
    print(f"wrote {args.out}: {len(arrays)} arrays ({', '.join(list(arrays)[:2])}, ..., {list(arrays)[-1]}), "
          f"{n:,} float32 parameters; and how the run fed them (input.*): the {ckpt.variant} AlexNet, "
          f"{ckpt.feeding()}")
    print(f"step the trained network through a test image: python -m numpy_ref.walkthrough --weights {args.out} "
          f"--index 0")
    return 0
