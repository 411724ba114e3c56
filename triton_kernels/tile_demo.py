"""The implicit GEMM, seen from inside the forward kernel: a 4x4 image with 2 channels, a 2x2 kernel.

    python -m triton_kernels.tile_demo

Runs triton_kernels.conv2d under the Triton interpreter, stops in _conv2d_fwd_kernel at its `tl.dot` (the same
place a pdb breakpoint would stop: docs/triton_kernels.md shows that session), takes the A tile the program just
loaded, and shows it is numpy_ref's im2col matrix `cols` transposed, with its reduction index reordered:

    A[m, k]  with m = (n, oh, ow), k = (kh, kw, c)   (ours: c fastest, so channels_last loads are contiguous)
    cols[k', m] with k' = (c, kh, kw)                (numpy_ref: the weight's own (C, KH, KW) order)

    A[m, (kh, kw, c)] == cols[(c, kh, kw), m]

Exits 1 if they differ. Needs the interpreter (a machine without CUDA, or TRITON_INTERPRET=1).
"""
from __future__ import annotations

import sys

import numpy as np
import torch

import triton_kernels
from triton_kernels import conv

C, H, W, KH, KW = 2, 4, 4, 2, 2  # one image, 2 channels of 4x4, one 2x2 filter: OH = OW = 3


def _dot_line() -> int:
    """The line of the first `tl.dot` in _conv2d_fwd_kernel: the flat (SMALL_C) K walk that this tiny conv takes."""
    path = conv.__file__
    with open(path) as f:
        lines = f.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("def _conv2d_fwd_kernel("))
    return next(i for i in range(start, len(lines)) if "acc = tl.dot(a, b, acc" in lines[i]) + 1


def capture_a_tile(x: torch.Tensor, weight: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """Run conv2d(x, weight) with a tracer that copies the kernel's local `a` (the A tile) when the interpreter
    reaches the tl.dot line, the way a pdb breakpoint there would show it. Returns (A tile, conv output)."""
    if not triton_kernels.INTERPRET:
        raise SystemExit("tile_demo: needs the Triton interpreter (no CUDA, or TRITON_INTERPRET=1)")
    target, tiles = (conv.__file__, _dot_line()), []

    def tracer(frame, event, arg):
        if frame.f_code.co_name != "_conv2d_fwd_kernel":
            return None  # only trace inside the kernel
        if event == "line" and (frame.f_code.co_filename, frame.f_lineno) == target:
            tiles.append(frame.f_locals["a"].handle.data.copy())  # a tl tensor: its NumPy data is at .handle.data
        return tracer

    sys.settrace(tracer)
    try:
        out = triton_kernels.conv2d(x, weight, input_precision="ieee")  # (1, 1, 3, 3)
    finally:
        sys.settrace(None)
    if len(tiles) != 1:
        raise SystemExit(f"tile_demo: expected to stop once at {target[0]}:{target[1]}, stopped {len(tiles)} times")
    return tiles[0], out


def numpy_ref_cols(x: torch.Tensor, weight: torch.Tensor) -> np.ndarray:
    """numpy_ref's im2col matrix for the same conv: (C*KH*KW, N*OH*OW), rows k' = (c, kh, kw)."""
    from numpy_ref.functional import _im2col, conv2d_forward

    _, (xp, _, _, geometry) = conv2d_forward(x.numpy(), weight.numpy())
    return _im2col(xp, geometry).copy()


def main() -> int:
    x = torch.arange(C * H * W, dtype=torch.float32).reshape(1, C, H, W)  # channel 0: 0..15, channel 1: 16..31
    weight = torch.ones(1, C, KH, KW)  # (F, C, KH, KW)
    tile, out = capture_a_tile(x, weight)
    cols = numpy_ref_cols(x, weight)  # (8, 9)
    M, K = cols.shape[1], cols.shape[0]  # 9 output pixels, 8 products each
    a = tile[:M, :K]  # (9, 8) the live part; the rest of the (BLOCK_M, BLOCK_K) tile is masked to 0
    # ours k = (kh, kw, c), c fastest -> numpy_ref's k' = c*KH*KW + kh*KW + kw
    perm = [c * KH * KW + kh * KW + kw for kh in range(KH) for kw in range(KW) for c in range(C)]
    np.set_printoptions(linewidth=120)
    print(f"x (1, {C}, {H}, {W}):\n{x[0].numpy()}\n")
    print(f"A tile at the tl.dot of _conv2d_fwd_kernel, shape {tile.shape} (BLOCK_M x BLOCK_K), live part {a.shape}:")
    print("  columns k = (kh, kw, c):", [(kh, kw, c) for kh in range(KH) for kw in range(KW) for c in range(C)])
    print(a, "\n")
    print(f"numpy_ref's cols {cols.shape}, rows k' = (c, kh, kw):")
    print(cols, "\n")
    print(f"cols.T with its columns reordered to (kh, kw, c), i.e. cols.T[:, {perm}]:")
    print(cols.T[:, perm], "\n")
    same = np.array_equal(a, cols.T[:, perm]) and not tile[M:].any() and not tile[:, K:].any()
    print("A == cols.T[:, perm]:", same, f"  (conv output {out.flatten().tolist()} = the row sums)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
