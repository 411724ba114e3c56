"""Step 4: the backward, from two textbook identities (the forward is step 3's kernel).

    dgrad  dx = conv2d(dilate_s(gy), flip(w).transpose(0, 1), stride=1, padding=K-1-p)   (step 2's kernel)
           flip(w)[f, c, kh, kw] = w[f, c, K-1-kh, K-1-kw]; dilate_s puts s-1 zeros between gy's pixels
    wgrad  dW[f, j] = sum_m gy[m, f] * A[m, j]   rows f: F; columns j = (c, kh, kw): C*KH*KW; K = N*OH*OW pixels
    bias   db[f] = sum_m gy[m, f]
    with gy = dy * (out > 0) when the forward fused a ReLU.

What changed. Nothing new to write for dgrad: a pixel of x feeds every output whose window covers it, through the
tap that is its mirror image, so dx is a convolution of gy with the flipped weights, filters and channels swapped.
wgrad is a third GEMM whose reduction runs over all N*OH*OW pixels, x's im2col matrix now the B operand.

Napkin math (batch 128, bf16). Each of dgrad and wgrad costs the forward's FLOPs: conv2's backward is 212.6 GFLOP,
conv1's only 8.7 (its input is the data: no dx). The identities are cheap to write, not to run:
- the flipped, transposed weights and gy * (out > 0) are materialized by torch, an extra pass over gy (conv2: gy
  is 44.3 MB, ~21 us at 4.3 TB/s), and db is a torch reduction over gy;
- with stride s the dilated gy is s*s times larger and all those zeros are multiplied (conv1, s = 4: 16x the
  dgrad work; AlexNet never needs it, conv1 gets no dx);
- wgrad's grid is F/BLOCK_M x C*KH*KW/BLOCK_N tiles, each walking K = N*OH*OW alone: conv1's 96 x 121 dW is
  1 x 2 = 2 programs of 128 x 64 for 132 SMs, each summing 373,248 pixels. triton_kernels/conv.py splits K over
  programs (split-K), masks gy with out > 0 as it loads it, walks dgrad's taps directly without the zeros, and
  sums db in a Triton reduction.

sm_90 codegen (specs.py, triton 3.9): the wgrad GEMM uses HGMMA, but its B tile (x's im2col) has step 2's
per-element address math, and it spills too: 255 registers, 1 spill store.

Next (step 4b): the same gradients the way conv.py computes them, without the dilated zeros, the flipped copy,
the extra pass for the ReLU mask or the two lonely wgrad programs.
"""
from __future__ import annotations

import sys

import torch
import triton
import triton.language as tl

from triton_kernels.lessons import step2_implicit_gemm, step3_tap_walk
from triton_kernels._common import INTERPRET
from triton_kernels.lessons.harness import check_conv_args, main

KIND, PASSES, LAYOUT = "conv", ("fwd+bwd",), "channels_last"
# wgrad's tile; tiny when interpreted. Changing it? Powers of two, BLOCK_K >= 16 for the tensor cores: rerun the
# self-check and `python -m triton_kernels.codegen --module triton_kernels.lessons.specs`.
GPU_CONFIG = dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=3)
CONFIG = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, num_warps=1, num_stages=1) if INTERPRET else GPU_CONFIG


# dw[f, c, kh, kw] = sum_{n, oh, ow} gy[n, f, oh, ow] * x[n, c, oh*s - p + kh, ow*s - p + kw]
# GEMM: F rows f, C*KH*KW columns j = (c, kh, kw), reduction over the N*OH*OW pixels k = (n, oh, ow).
@triton.jit
def _conv2d_wgrad_kernel(
    gy_ptr, x_ptr, dw_ptr,  # pointers: gy (N, F, OH, OW), x (N, C, H, W), dw (F, C, KH, KW), all NCHW contiguous
    F, NCOL, K, C, H, W, OH, OW, KH, KW,  # GEMM and image sizes: NCOL = C*KH*KW, K = N*OH*OW
    stride, padding,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_f = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) filters
    offs_j = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) columns j = (c, kh, kw)
    f_mask = offs_f < F
    j_mask = offs_j < NCOL
    c = offs_j // (KH * KW)  # (BLOCK_N,)
    kh = (offs_j // KW) % KH  # (BLOCK_N,)
    kw = offs_j % KW  # (BLOCK_N,)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)  # (BLOCK_M, BLOCK_N)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)  # (BLOCK_K,) pixels k = (n, oh, ow)
        k_mask = offs_k < K
        n = offs_k // (OH * OW)  # (BLOCK_K,)
        oh = (offs_k // OW) % OH  # (BLOCK_K,)
        ow = offs_k % OW  # (BLOCK_K,)
        gy_off = (offs_f * OH * OW)[:, None] + (n * F * OH * OW + oh * OW + ow)[None, :]  # (BLOCK_M, BLOCK_K)
        a = tl.load(gy_ptr + gy_off, mask=f_mask[:, None] & k_mask[None, :], other=0.0)  # (BLOCK_M, BLOCK_K)
        ih = (oh * stride - padding)[:, None] + kh[None, :]  # (BLOCK_K, BLOCK_N)
        iw = (ow * stride - padding)[:, None] + kw[None, :]  # (BLOCK_K, BLOCK_N)
        b_mask = k_mask[:, None] & j_mask[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        b = tl.load(x_ptr + ((n[:, None] * C + c[None, :]) * H + ih) * W + iw, mask=b_mask, other=0.0)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)  # (BLOCK_M, BLOCK_N) fp32
    dw_off = (offs_f * NCOL)[:, None] + offs_j[None, :]  # (BLOCK_M, BLOCK_N)
    tl.store(dw_ptr + dw_off, acc.to(dw_ptr.dtype.element_ty), mask=f_mask[:, None] & j_mask[None, :])


def conv2d_backward(dy, x, weight, out, stride: int, padding: int, relu: bool, need=(True, True, True)):
    """(dx, dw, db) of relu?(conv2d(x, weight) + b); out is the forward's output (its > 0 mask gates dy when relu).
    Entries of `need` that are False come back as None."""
    n, c, h, w, f, kh, kw, oh, ow = check_conv_args(x, weight, None, stride, padding)
    gy = torch.where(out > 0, dy, torch.zeros_like(dy)) if relu else dy  # (N, F, OH, OW): one more pass in torch
    dx = dw = db = None
    if need[0]:
        if padding > kh - 1 or padding > kw - 1:
            raise ValueError(f"padding {padding} > kernel_size - 1: the dgrad identity needs a negative padding")
        rows, cols = (oh - 1) * stride + 1 + (h + 2 * padding - kh) % stride, \
            (ow - 1) * stride + 1 + (w + 2 * padding - kw) % stride  # dilated gy, remainder rows at the end
        gd = gy if stride == 1 else gy.new_zeros((n, f, rows, cols))  # (N, F, rows, cols)
        if stride > 1:
            gd[:, :, :(oh - 1) * stride + 1:stride, :(ow - 1) * stride + 1:stride] = gy
        w_t = weight.flip(2, 3).transpose(0, 1)  # (C, F, KH, KW)
        dx = step2_implicit_gemm.conv2d(gd, w_t, None, stride=1, padding=kh - 1 - padding)  # (N, C, H, W)
    if need[1]:
        gy_c, x_c = gy.contiguous(), x.contiguous()
        dw = torch.empty((f, c, kh, kw), device=x.device, dtype=x.dtype)  # (F, C, KH, KW)
        ncol, k = c * kh * kw, n * oh * ow
        grid = (triton.cdiv(f, CONFIG["BLOCK_M"]), triton.cdiv(ncol, CONFIG["BLOCK_N"]))
        _conv2d_wgrad_kernel[grid](
            gy_c, x_c, dw,
            f, ncol, k, c, h, w, oh, ow, kh, kw,
            stride, padding,
            DOT_PRECISION="ieee",
            BLOCK_M=CONFIG["BLOCK_M"], BLOCK_N=CONFIG["BLOCK_N"], BLOCK_K=CONFIG["BLOCK_K"],
            num_warps=CONFIG["num_warps"], num_stages=CONFIG["num_stages"],
        )
    if need[2]:
        db = gy.sum(dim=(0, 2, 3), dtype=torch.float32).to(dy.dtype)  # (F,)
    return dx, dw, db


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, relu):
        out = step3_tap_walk.conv2d(x, weight, bias, stride, padding, relu)  # (N, F, OH, OW)
        ctx.save_for_backward(x, weight, out)
        ctx.conv = (stride, padding, relu, bias is not None)
        return out

    @staticmethod
    def backward(ctx, dy):
        x, weight, out = ctx.saved_tensors
        stride, padding, relu, has_bias = ctx.conv
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], has_bias and ctx.needs_input_grad[2])
        dx, dw, db = conv2d_backward(dy, x, weight, out, stride, padding, relu, need)
        return dx, dw, db, None, None, None


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias=None, stride: int = 1, padding: int = 0,
           relu: bool = False) -> torch.Tensor:
    """Step 3's forward with autograd: the backward runs conv2d_backward."""
    check_conv_args(x, weight, bias, stride, padding)
    return _Conv2d.apply(x, weight, bias, stride, padding, relu)


if __name__ == "__main__":
    sys.exit(main("step4_backward"))
