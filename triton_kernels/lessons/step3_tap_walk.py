"""Step 3: K walked tap by tap, any memory layout, bias + ReLU in the epilogue, autotuned tiles: where
triton_kernels/conv.py starts (its forward kernel with SMALL_C=False, groups = dilation = 1).

    out[m, f] = act(bias[f] + sum_{kh, kw} sum_c x[n, c, ih0 + kh, iw0 + kw] * w[f, c, kh, kw])
    with k = (kh, kw, c), c fastest; ih0 = oh*s - p, iw0 = ow*s - p

What changed from step 2, and why (conv2 at batch 128, bf16, 128 x 64 x 32 tiles):
1. The K loop runs over (tap, channel chunk): for one tap (kh, kw) the input row and column and the padding test
   are per row, a (BLOCK_M,) vector, and a chunk of BLOCK_K channels only adds its channel offsets. ~1k integer
   operations for the row tests plus one add per element, instead of ~12 per element: the address math of a
   128 x 32 A tile falls from ~770 to ~80 clocks, under the ~130 of its MMA. (Cost: channels are walked in chunks
   of BLOCK_K, so C = 1, AlexNet's conv1, wastes 31 of every 32 lanes of K here; conv.py walks K flat there.)
2. Every tensor is read through its strides. With channels_last (N, H, W, C) x and (F, KH, KW, C) weights,
   consecutive k are consecutive addresses: a lane loads 8 bf16 channels at once (16 bytes), the copy can go
   straight to shared memory (cp.async), and when C is a multiple of 16 the compiler can prove it (conv2..5:
   96..384 channels). In NCHW the same tile is 32 different channel planes per row.
3. Bias and ReLU run on the fp32 accumulator before the one store: no second and third pass over out. conv2's
   out is 44.3 MB in bf16; each torch pass reads and writes it, ~21 us at 4.3 TB/s: 41 us saved against a
   ~135 us floor.
4. The tile is autotuned per shape (the configurations conv.py compiles for sm_90 without spills); the flat
   (tap, chunk) loop lets Triton software-pipeline the loads num_stages deep in shared memory.

sm_90 codegen (specs.py, triton 3.9, the 128 x 64 x 32 tile, 8 warps, 4 stages): HGMMA like step 2, no spills.
NCHW: 174 registers, 17 KB of shared memory (the strided loads go through registers). channels_last: 74
registers and 49 KB of shared memory: 4 stages of A and W tiles ((128 + 64) x 32 x 2 bytes each) filled by
asynchronous 16-byte copies while the tensor cores work on the previous ones.

Next: step 4 (the backward); conv.py adds a flat-K walk for conv1, groups, dilation and the fused backward.
"""
from __future__ import annotations

import sys

import torch
import triton
import triton.language as tl

from triton_kernels._common import INTERPRET
from triton_kernels.lessons.harness import check_conv_args, main

KIND, PASSES, LAYOUT = "conv", ("fwd",), "channels_last"  # LAYOUT: the one it is timed in
# (BM, BN, BK, warps, stages). Changing one? Powers of two, BK >= 16 for the tensor cores; rerun the self-check and
# `python -m triton_kernels.codegen --module triton_kernels.lessons.specs` (specs.py compiles the first).
GPU_CONFIGS = [(128, 64, 32, 8, 4), (64, 128, 64, 8, 3), (64, 64, 32, 4, 4)]
_CONFIGS = [(16, 16, 16, 1, 1)] if INTERPRET else GPU_CONFIGS  # the interpreter would time every config


# out[n, f, oh, ow] = act(bias[f] + sum_{kh, kw, c} x[n, c, oh*s - p + kh, ow*s - p + kw] * w[f, c, kh, kw])
# Implicit GEMM: rows M = N*OH*OW, F columns, K = KH*KW*C walked as (tap, channel chunk); every tensor by strides.
@triton.jit
def _conv2d_tap_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr,  # pointers
    M, F, C, H, W, OH, OW, KH, KW,  # sizes
    stride, padding,
    stride_xn, stride_xc, stride_xh, stride_xw,  # the stride variables: how far to move to go one step along
    stride_wf, stride_wc, stride_wh, stride_ww,  # a dimension (channels_last: stride_xc == 1)
    stride_on, stride_oc, stride_oh, stride_ow,
    HAS_BIAS: tl.constexpr, RELU: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) rows m = (n, oh, ow)
    offs_f = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) filters
    offs_kk = tl.arange(0, BLOCK_K)  # (BLOCK_K,) channels within a chunk
    m_mask = offs_m < M  # (BLOCK_M,)
    f_mask = offs_f < F  # (BLOCK_N,)
    n = offs_m // (OH * OW)  # (BLOCK_M,)
    oh = (offs_m // OW) % OH  # (BLOCK_M,)
    ow = offs_m % OW  # (BLOCK_M,)
    ih0 = oh * stride - padding  # (BLOCK_M,)
    iw0 = ow * stride - padding  # (BLOCK_M,)
    x_row = n * stride_xn + ih0 * stride_xh + iw0 * stride_xw  # (BLOCK_M,) address of tap (0, 0), channel 0
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)  # (BLOCK_M, BLOCK_N)
    n_chunks = tl.cdiv(C, BLOCK_K)
    for t in range(0, KH * KW * n_chunks):  # one flat loop: Triton pipelines its loads num_stages deep
        tap = t // n_chunks  # scalar: the same for the whole tile
        kh = tap // KW
        kw = tap - kh * KW
        c = (t - tap * n_chunks) * BLOCK_K + offs_kk  # (BLOCK_K,)
        c_mask = c < C
        ih = ih0 + kh  # (BLOCK_M,)
        iw = iw0 + kw  # (BLOCK_M,)
        row_ok = m_mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)  # (BLOCK_M,) one test per row
        x_tap = x_row + kh * stride_xh + kw * stride_xw  # (BLOCK_M,)
        a = tl.load(x_ptr + x_tap[:, None] + (c * stride_xc)[None, :],
                    mask=row_ok[:, None] & c_mask[None, :], other=0.0)  # (BLOCK_M, BLOCK_K)
        w_off = (c * stride_wc + kh * stride_wh + kw * stride_ww)[:, None] + (offs_f * stride_wf)[None, :]
        b = tl.load(w_ptr + w_off, mask=c_mask[:, None] & f_mask[None, :], other=0.0)  # (BLOCK_K, BLOCK_N)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)  # (BLOCK_M, BLOCK_N) fp32
    # Epilogue on the fp32 accumulator: bias, ReLU (NaN stays NaN, as in torch), one cast, one store.
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_f, mask=f_mask, other=0.0).to(tl.float32)[None, :]  # (BLOCK_M, BLOCK_N)
    if RELU:
        acc = tl.where(acc < 0.0, 0.0, acc)  # (BLOCK_M, BLOCK_N)
    out_off = (n * stride_on + oh * stride_oh + ow * stride_ow)[:, None] + (offs_f * stride_oc)[None, :]
    tl.store(out_ptr + out_off, acc.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & f_mask[None, :])


_conv2d_tap = triton.autotune(
    configs=[triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
             for bm, bn, bk, w, s in _CONFIGS],
    key=["M", "F", "C", "KH", "KW"],
)(_conv2d_tap_kernel)


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias=None, stride: int = 1, padding: int = 0,
           relu: bool = False) -> torch.Tensor:
    """relu?(conv2d(x, weight) + bias) in one kernel: x (N, C, H, W) and weight (F, C, KH, KW) in any layout, bias
    (F,) or None -> (N, F, OH, OW), channels_last when x is. fp32 dots in exact IEEE fp32."""
    n, c, h, w, f, kh, kw, oh, ow = check_conv_args(x, weight, bias, stride, padding)
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    out = torch.empty((n, f, oh, ow), device=x.device, dtype=x.dtype,
                      memory_format=torch.channels_last if cl else torch.contiguous_format)  # (N, F, OH, OW)
    m = n * oh * ow

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(f, meta["BLOCK_N"]))

    _conv2d_tap[grid](
        x, weight, bias if bias is not None else weight, out,
        m, f, c, h, w, oh, ow, kh, kw,
        stride, padding,
        *x.stride(), *weight.stride(), *out.stride(),
        HAS_BIAS=bias is not None, RELU=relu, DOT_PRECISION="ieee",
    )
    return out


if __name__ == "__main__":
    sys.exit(main("step3_tap_walk"))
