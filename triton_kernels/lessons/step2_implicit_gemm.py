"""Step 2: the same sum as an implicit GEMM, so `tl.dot` can run it on the tensor cores.

    out[m, f] = sum_k A[m, k] * Wt[k, f]     rows m = (n, oh, ow): N*OH*OW of them; columns f: F; K = C*KH*KW
    A[m, k] = x[n, c, oh*s - p + kh, ow*s - p + kw] with k = (c, kh, kw), c slowest: the im2col matrix, never built
    Wt[k, f] = w[f, c, kh, kw]: the weight tensor read as its (F, K) matrix, transposed

What changed from step 1. A program owns a BLOCK_M x BLOCK_N tile of out (pixels x filters, not pixels x one
filter) and walks K in chunks of BLOCK_K: each chunk loads an A tile (BLOCK_M, BLOCK_K), computing every element's
(c, kh, kw), input row/column and padding test, and a W tile (BLOCK_K, BLOCK_N), and hands both to `tl.dot`.

Why (conv2 at batch 128, bf16: 86,528 rows, 256 columns, K = 2,400, 106.3 GFLOP). In a 128 x 64 x 32 step every loaded
A element is used 64 times and every W element 128 times: 2*128*64*32 FLOPs for (128 + 64)*32*2 bytes = 43
FLOP/byte of cache traffic instead of step 1's 1, and the multiply-adds run on the tensor cores (Hopper's warpgroup
MMA, wgmma; ~790 TFLOP/s bf16 measured on the H200 against ~67 TFLOP/s of FP32 FMAs): the floor for conv2 drops
from ~1.6 ms to 0.13 ms.
What it costs: the A tile's address math. Every element of it gets its own (c, kh, kw) (divisions by KH*KW and
KW), its own input row and column and four padding compares: ~12 integer operations per element, ~49k per
128 x 32 tile, ~770 clocks on an SM's 64 integer lanes, while the tile's MMA (262k multiply-adds at ~2,048 per
clock per SM, the datasheet's 989 TFLOP/s over 132 SMs at 1.83 GHz) takes ~130. The tensor cores mostly wait;
step 3 cuts the integer work. Bias and ReLU still cost two extra passes over out in torch (harness.bias_relu).

sm_90 codegen (specs.py, triton 3.9): HGMMA from here on (the bf16 dot becomes wgmma), its operands staged in
17 KB of shared memory. And the cost above again, in registers: 254 per thread and 7 spill stores (STL), because
each (BLOCK_M, BLOCK_K) index tensor of the A tile (row, column, compares, address) is 32 values per thread.

Next (step 3): walk K tap by tap so the padding test is one per row, and fuse the epilogue.
"""
from __future__ import annotations

import sys

import torch
import triton
import triton.language as tl

from triton_kernels._common import INTERPRET
from triton_kernels.lessons.harness import bias_relu, check_conv_args, main

KIND, PASSES = "conv", ("fwd",)
# One fixed tile (step 3 autotunes): BLOCK_M a multiple of 64 so the dot lowers to wgmma; tiny in the interpreter.
# Changing a block? Each is a power of two, BLOCK_K >= 16 for the tensor cores: rerun the self-check and
# `python -m triton_kernels.codegen --module triton_kernels.lessons.specs` (it says why it refuses a tile).
GPU_CONFIG = dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=3)
CONFIG = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, num_warps=1, num_stages=1) if INTERPRET else GPU_CONFIG


# out[m, f] = sum_k A[m, k] * w[f, k]: rows M = N*OH*OW, F columns, K = C*KH*KW with k = (c, kh, kw)   (NCHW)
@triton.jit
def _conv2d_igemm_kernel(
    x_ptr, w_ptr, out_ptr,  # pointers: x (N, C, H, W), w (F, C, KH, KW) = (F, K), out (N, F, OH, OW)
    M, F, K, C, H, W, OH, OW, KH, KW,  # GEMM and image sizes
    stride, padding,
    DOT_PRECISION: tl.constexpr,  # fp32 dot: "ieee" (exact) or "tf32"
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) rows m = (n, oh, ow)
    offs_f = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) filters
    m_mask = offs_m < M  # (BLOCK_M,)
    f_mask = offs_f < F  # (BLOCK_N,)
    n = offs_m // (OH * OW)  # (BLOCK_M,)
    ih0 = (offs_m // OW) % OH * stride - padding  # (BLOCK_M,) input row of tap kh = 0
    iw0 = offs_m % OW * stride - padding  # (BLOCK_M,)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)  # (BLOCK_M, BLOCK_N)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)  # (BLOCK_K,) k = (c, kh, kw)
        k_mask = offs_k < K  # (BLOCK_K,)
        c = offs_k // (KH * KW)  # (BLOCK_K,)
        kh = (offs_k // KW) % KH  # (BLOCK_K,)
        kw = offs_k % KW  # (BLOCK_K,)
        ih = ih0[:, None] + kh[None, :]  # (BLOCK_M, BLOCK_K) per element
        iw = iw0[:, None] + kw[None, :]  # (BLOCK_M, BLOCK_K)
        a_mask = m_mask[:, None] & k_mask[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        a_off = ((n[:, None] * C + c[None, :]) * H + ih) * W + iw  # (BLOCK_M, BLOCK_K)
        a = tl.load(x_ptr + a_off, mask=a_mask, other=0.0)  # (BLOCK_M, BLOCK_K) im2col tile
        b = tl.load(w_ptr + offs_f[None, :] * K + offs_k[:, None],
                    mask=k_mask[:, None] & f_mask[None, :], other=0.0)  # (BLOCK_K, BLOCK_N)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)  # (BLOCK_M, BLOCK_N) fp32, tensor cores
    out_off = (n * F * OH * OW + offs_m % (OH * OW))[:, None] + (offs_f * OH * OW)[None, :]  # (BLOCK_M, BLOCK_N)
    tl.store(out_ptr + out_off, acc.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & f_mask[None, :])


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias=None, stride: int = 1, padding: int = 0,
           relu: bool = False) -> torch.Tensor:
    """relu?(conv2d(x, weight) + bias): x (N, C, H, W), weight (F, C, KH, KW), bias (F,) or None -> (N, F, OH, OW).
    fp32 runs the dot in exact IEEE fp32 (what the tests compare); bf16/fp16 on the tensor cores."""
    n, c, h, w, f, kh, kw, oh, ow = check_conv_args(x, weight, bias, stride, padding)
    x, weight = x.contiguous(), weight.contiguous()  # NCHW indexing: a channels_last input is copied
    out = torch.empty((n, f, oh, ow), device=x.device, dtype=x.dtype)  # (N, F, OH, OW)
    m, k = n * oh * ow, c * kh * kw
    cfg = CONFIG
    grid = (triton.cdiv(m, cfg["BLOCK_M"]), triton.cdiv(f, cfg["BLOCK_N"]))
    _conv2d_igemm_kernel[grid](
        x, weight, out,
        m, f, k, c, h, w, oh, ow, kh, kw,
        stride, padding,
        DOT_PRECISION="ieee",
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return bias_relu(out, bias, relu)


if __name__ == "__main__":
    sys.exit(main("step2_implicit_gemm"))
