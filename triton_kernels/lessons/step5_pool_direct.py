"""Step 5: max pooling as a direct window loop (numpy_ref.naive.max_pool2d_forward, one lane per output).

    out[n, c, oh, ow] = max_{kh, kw} x[n, c, oh*s - p + kh, ow*s - p + kw]   (padding counts as -inf, NaN wins)
    OH = (H + 2*p - K) // s + 1

What it does. Each lane owns one output element (flat NCHW order, ow fastest) and loops over its K x K window,
keeping the largest value; a NaN replaces whatever came before it, so a window with a NaN gives NaN (torch's
rule; of several NaNs the last is kept, as torch keeps it, which only matters to step 6's record of the tap).
Nothing is recorded for a backward: this step is forward only and refuses an input that wants a gradient.

Napkin math (pool1 at batch 128, bf16: x (128, 96, 54, 54) = 71.7 MB -> out (128, 96, 26, 26) = 16.6 MB).
A 3x3 max is 8 comparisons per output: nothing. The time is the bytes: x read once and out written once, 88.3 MB,
20.5 us at the H200's ~4.3 TB/s copy rate. Neighbouring windows overlap (stride 2, window 3: an input row is in
up to 2 window rows), so each input byte is loaded ~2.25 times, but from L1/L2: HBM sees it about once. In NCHW the
lanes of a warp read x with stride 2 along a row: half of each 32-byte sector they touch is the other window's,
which the L1 absorbs.

sm_90 codegen (specs.py): no tensor cores, no shared memory, no spills.

Next (step 6): record which tap won, so a backward can send dy back to it.
"""
from __future__ import annotations

import sys

import torch
import triton
import triton.language as tl

from triton_kernels.lessons.harness import check_pool_args, main

KIND, PASSES = "pool", ("fwd",)
# Outputs per program: 4 warps, 2 per lane. Changing it (a power of two)? Rerun the self-check and
# `python -m triton_kernels.codegen --module triton_kernels.lessons.specs`.
BLOCK = 256


# out[n, c, oh, ow] = max over (kh, kw) of x[n, c, oh*s - p + kh, ow*s - p + kw]   (NCHW, contiguous)
@triton.jit
def _max_pool2d_direct_kernel(
    x_ptr, out_ptr,  # pointers: x (N, C, H, W), out (N, C, OH, OW)
    TOTAL, H, W, OH, OW,  # sizes: TOTAL = N*C*OH*OW
    K, stride, padding,  # the window
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,) flat output positions
    mask = offs < TOTAL
    plane = offs // (OH * OW)  # (BLOCK,) n*C + c
    oh = (offs // OW) % OH  # (BLOCK,)
    ow = offs % OW  # (BLOCK,)
    best = tl.full((BLOCK,), float("-inf"), tl.float32)  # (BLOCK,)
    for kh in range(0, K):
        ih = oh * stride - padding + kh  # (BLOCK,)
        for kw in range(0, K):
            iw = ow * stride - padding + kw  # (BLOCK,)
            ok = mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)  # (BLOCK,)
            v = tl.load(x_ptr + (plane * H + ih) * W + iw, mask=ok, other=float("-inf")).to(tl.float32)
            best = tl.where((v > best) | (v != v), v, best)  # larger, or NaN: a NaN replaces the max, NaN stays
    tl.store(out_ptr + offs, best.to(out_ptr.dtype.element_ty), mask=mask)


def max_pool2d(x: torch.Tensor, kernel_size: int, stride=None, padding: int = 0) -> torch.Tensor:
    """torch.nn.functional.max_pool2d's forward: x (N, C, H, W) -> (N, C, OH, OW); stride defaults to
    kernel_size. No backward: raises ValueError for an x that requires grad (step 6 has the backward)."""
    n, c, h, w, k, s, p, oh, ow = check_pool_args(x, kernel_size, stride, padding)
    if x.requires_grad and torch.is_grad_enabled():
        raise ValueError("x requires grad, but step 5's pool has no backward: use step6_pool_argmax")
    x = x.contiguous()  # NCHW indexing: a channels_last input is copied
    out = torch.empty((n, c, oh, ow), device=x.device, dtype=x.dtype)  # (N, C, OH, OW)
    total = out.numel()
    _max_pool2d_direct_kernel[(triton.cdiv(total, BLOCK),)](
        x, out,
        total, h, w, oh, ow,
        k, s, p,
        BLOCK=BLOCK,
    )
    return out


if __name__ == "__main__":
    sys.exit(main("step5_pool_direct"))
