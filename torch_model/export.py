"""`alexnet export`: a checkpoint's weights as a plain .npz, so numpy_ref (which never imports torch) can load them.

    alexnet export --checkpoint runs/R/best.pt --out alexnet.npz
    python -m numpy_ref.walkthrough --weights alexnet.npz --index 42      # step the trained network through an image

In Python:
    import numpy as np, numpy_ref
    net = numpy_ref.alexnet(init=False).eval()
    net.load_state_dict(dict(np.load("alexnet.npz")))

The archive holds exactly torch's state_dict keys ('0.weight', '0.bias', ..., '20.bias') as float32 arrays
(187 MB uncompressed: 46,764,746 parameters), nothing else, so load_state_dict's exact key check passes.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from torch_model.evaluate import load_checkpoint
from torch_model.files import atomic_write


def export_npz(checkpoint: str | Path, out: str | Path) -> dict[str, np.ndarray]:
    """Write the checkpoint's weights to `out` (atomically) and return them."""
    out = Path(out)
    if out.suffix != ".npz":
        raise ValueError(f"--out {out}: must end in .npz")
    if out.is_dir():
        raise ValueError(f"--out {out}: is a folder; give a file name ending in .npz")
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: the folder {out.parent} does not exist")
    ckpt = load_checkpoint(checkpoint)
    arrays = {k: v.numpy() for k, v in ckpt.state.items()}           # float32, NCHW, torch's keys
    atomic_write(out, lambda f: np.savez(f, **arrays))
    return arrays


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="PATH", help="best.pt / last.pt of a run")
    parser.add_argument("--out", required=True, metavar="FILE.npz", help="the .npz to write")


def run(args: argparse.Namespace) -> int:
    arrays = export_npz(args.checkpoint, args.out)
    n = sum(a.size for a in arrays.values())
    print(f"wrote {args.out}: {len(arrays)} arrays ({', '.join(list(arrays)[:2])}, ..., {list(arrays)[-1]}), "
          f"{n:,} float32 parameters")
    print(f"step the trained network through a test image: python -m numpy_ref.walkthrough --weights {args.out} "
          f"--index 0")
    return 0
