"""Step 4b, the bridge to triton_kernels/conv.py's backward: the same gradients as step 4, without its detours.

    dgrad  dx[n, c, ih, iw] = sum_{kh, kw, f} gy[n, f, oh, ow] * w[f, c, kh, kw]
           with oh = (ih + p - kh) / s and ow = (iw + p - kw) / s, taken only where they divide exactly and land
           inside (0 <= oh < OH, 0 <= ow < OW): the gather form, one program per tile of dx
    wgrad  dw[f, (kh, kw, c)] = sum over k = (n, oh, ow) of gy[f, k] * x[n, c, oh*s - p + kh, ow*s - p + kw]
           with K = N*OH*OW split over SPLIT programs, each summing its slice; the slices added in torch
    gy     = dy * (out > 0) when the forward fused a ReLU, computed as dy is LOADED (out read beside it)
    db     = sum over (n, oh, ow) of gy, in torch here (conv.py: a Triton column sum)

What changed from step 4, and why (batch 128, bf16):
1. dgrad gathers instead of convolving a dilated, flipped copy. A program owns a BLOCK_M x BLOCK_N tile of dx
   (rows m = (n, ih, iw) of M = N*H*W, columns c) and walks K = KH*KW*F tap by tap, BLOCK_K filters at a time, as
   step 3 walks the forward: for tap (kh, kw) the output pixel that reads (ih, iw) through it is oh = (ih + p - kh)
   / s, one test per row. No flipped weight tensor, no dilated gy: with stride s, s*s - 1 of every s*s taps are
   masked off per row instead of multiplying zeros (step 4 made gy s*s times larger: conv1's dgrad 16x the work).
2. wgrad's K is split. conv1's dW is 96 x 121: with 128 x 64 tiles that is 1 x 2 = 2 programs on a 132-SM GPU,
   each summing K = 373,248 pixels alone. Grid axis 2 splits K into SPLIT slices; program (i, j, k) writes its
   partial tile to slab k of an fp32 (SPLIT, F, KH*KW*C) workspace, summed afterwards (conv.py picks SPLIT so
   tiles x SPLIT ~ 2 x the SMs, and sums the slabs with its bias kernel). The price: SPLIT x |dW| fp32 bytes.
3. The ReLU mask rides on the loads. Step 4 materialized gy = where(out > 0, dy, 0) in torch (conv2: a 44.3 MB
   read of dy and of out, a 44.3 MB write, then gy read again); here each kernel loads the matching tile of out
   beside dy and zeroes the lanes where out <= 0. Those bytes move once per kernel, not in an extra pass.
4. Every tensor through its strides, like step 3: channels_last dy, out, x and w give coalesced loads along c / f.

Exercise: none here; step 3's tap walk (`python -m numpy_ref.exercises start triton_tap_walk`) is the forward of
this dgrad, with the roles of the filters and the channels swapped.

sm_90 codegen (specs.py, triton 3.9, bf16, channels_last, conv.py's first configurations: dgrad 128 x 64 x 16,
wgrad 128 x 64 x 32, 8 warps, 3 stages): HGMMA in both kernels, no spills; dgrad 194 registers, wgrad 152. With 4
warps the same tiles spill (dgrad 71 spill stores). Changing a block size or the warps here? Rerun
`python -m triton_kernels.codegen --module triton_kernels.lessons.specs`: BLOCK_K must stay >= 16 for the tensor
cores (the tool says why it refuses one).

What conv.py adds beyond this: groups and dilation, autotuned tiles per shape, SPLIT chosen from the SM count,
the bias gradient and the split-K sum in one Triton reduction, torch.library registration (torch.compile).
"""
from __future__ import annotations

import sys

import torch
import triton
import triton.language as tl

from triton_kernels._common import INTERPRET
from triton_kernels.lessons import step3_tap_walk
from triton_kernels.lessons.harness import check_conv_args, main

KIND, PASSES, LAYOUT = "conv", ("fwd+bwd",), "channels_last"
# conv.py's first sm_90 configuration of each kernel (8 warps: with 4, the tile's address tensors spill); tiny
# when interpreted. Changing one? Powers of two, BLOCK_K >= 16 for the tensor cores: rerun the self-check and
# `python -m triton_kernels.codegen --module triton_kernels.lessons.specs`.
DGRAD_GPU_CONFIG = dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=16, num_warps=8, num_stages=3)
WGRAD_GPU_CONFIG = dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=32, num_warps=8, num_stages=3)
# interpreted, each program's K loop runs in Python: dgrad takes 64 rows a program, so conv1's 121 taps are walked
# by a quarter as many programs
_TINY = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, num_warps=1, num_stages=1)
DGRAD_CONFIG, WGRAD_CONFIG = (dict(_TINY, BLOCK_M=64), _TINY) if INTERPRET else (DGRAD_GPU_CONFIG, WGRAD_GPU_CONFIG)
SPLIT_K = 4  # wgrad's K slices (conv.py derives it from the SM count); 4 shows the idea and stays cheap


# dx[n, c, ih, iw] = sum_{kh, kw, f} gy[n, f, (ih + p - kh) / s, (iw + p - kw) / s] * w[f, c, kh, kw]
# Implicit GEMM: M = N*H*W rows (n, ih, iw), N = C columns, K = KH*KW*F walked as (tap, filter chunk).
@triton.jit
def _conv2d_dgrad_gather_kernel(
    dy_ptr, out_ptr, w_ptr, dx_ptr,  # pointers: dy and out (N, F, OH, OW), w (F, C, KH, KW), dx (N, C, H, W)
    M, C, F, H, W, OH, OW, KH, KW,  # sizes, M = N*H*W
    stride, padding,
    stride_dyn, stride_dyf, stride_dyh, stride_dyw,  # the stride variables, n/c/h/w order
    stride_on, stride_of, stride_oh, stride_ow,
    stride_wf, stride_wc, stride_wh, stride_ww,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    RELU: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) rows m = (n, ih, iw)
    offs_c = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) input channels
    offs_kk = tl.arange(0, BLOCK_K)  # (BLOCK_K,) filters within a chunk
    m_mask = offs_m < M  # (BLOCK_M,)
    c_mask = offs_c < C  # (BLOCK_N,)
    n = offs_m // (H * W)  # (BLOCK_M,)
    ih = (offs_m // W) % H  # (BLOCK_M,)
    iw = offs_m % W  # (BLOCK_M,)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)  # (BLOCK_M, BLOCK_N)
    n_chunks = tl.cdiv(F, BLOCK_K)
    for t in range(0, KH * KW * n_chunks):  # (tap, filter chunk), the forward's walk
        tap = t // n_chunks  # scalar
        kh = tap // KW
        kw = tap - kh * KW
        f = (t - tap * n_chunks) * BLOCK_K + offs_kk  # (BLOCK_K,)
        f_mask = f < F
        th = ih + padding - kh  # (BLOCK_M,) = oh * stride when this tap reaches (ih, iw)
        tw = iw + padding - kw  # (BLOCK_M,)
        oh = th // stride  # (BLOCK_M,)
        ow = tw // stride  # (BLOCK_M,)
        row_ok = m_mask & (th >= 0) & (tw >= 0) & (th % stride == 0) & (tw % stride == 0) & (oh < OH) & (ow < OW)
        a_mask = row_ok[:, None] & f_mask[None, :]  # (BLOCK_M, BLOCK_K)
        a = tl.load(dy_ptr + (n * stride_dyn + oh * stride_dyh + ow * stride_dyw)[:, None]
                    + (f * stride_dyf)[None, :], mask=a_mask, other=0.0)  # (BLOCK_M, BLOCK_K) dy
        if RELU:  # gy = dy where out > 0: the mask applied on load, out read beside dy
            o = tl.load(out_ptr + (n * stride_on + oh * stride_oh + ow * stride_ow)[:, None]
                        + (f * stride_of)[None, :], mask=a_mask, other=0.0)  # (BLOCK_M, BLOCK_K)
            a = tl.where(o <= 0, tl.zeros_like(a), a)  # (BLOCK_M, BLOCK_K) gy; a NaN out passes dy, as torch
        w_off = (f * stride_wf + kh * stride_wh + kw * stride_ww)[:, None] + (offs_c * stride_wc)[None, :]
        b = tl.load(w_ptr + w_off, mask=f_mask[:, None] & c_mask[None, :], other=0.0)  # (BLOCK_K, BLOCK_N)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)  # (BLOCK_M, BLOCK_N) fp32
    dx_off = (n * stride_dxn + ih * stride_dxh + iw * stride_dxw)[:, None] + (offs_c * stride_dxc)[None, :]
    tl.store(dx_ptr + dx_off, acc.to(dx_ptr.dtype.element_ty), mask=m_mask[:, None] & c_mask[None, :])


# dw[f, c, kh, kw] = sum_{n, oh, ow} gy[n, f, oh, ow] * x[n, c, oh*s - p + kh, ow*s - p + kw]
# GEMM: rows f (M = F), columns j = (kh, kw, c) (N = KH*KW*C, c fastest), reduction k = (n, oh, ow) of
# K = N*OH*OW, split: program k_split sums k in [k_split*K_PER_SPLIT, (k_split + 1)*K_PER_SPLIT) into its slab.
@triton.jit
def _conv2d_wgrad_split_k_kernel(
    dy_ptr, out_ptr, x_ptr, part_ptr,  # pointers: dy, out (N, F, OH, OW), x (N, C, H, W), part (SPLIT, F, NCOL)
    F, NCOL, K, K_PER_SPLIT, C, H, W, OH, OW, KW,  # sizes: NCOL = KH*KW*C, K = N*OH*OW
    stride, padding,
    stride_dyn, stride_dyf, stride_dyh, stride_dyw,
    stride_on, stride_of, stride_oh, stride_ow,
    stride_xn, stride_xc, stride_xh, stride_xw,
    RELU: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    k_split = tl.program_id(2)  # which slice of K this program sums
    offs_f = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) filters
    offs_j = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) columns j = (kh, kw, c)
    f_mask = offs_f < F  # (BLOCK_M,)
    j_mask = offs_j < NCOL  # (BLOCK_N,)
    c = offs_j % C  # (BLOCK_N,)
    kw = (offs_j // C) % KW  # (BLOCK_N,)
    kh = offs_j // (C * KW)  # (BLOCK_N,)
    k_start = k_split * K_PER_SPLIT
    k_end = tl.minimum(K, k_start + K_PER_SPLIT)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)  # (BLOCK_M, BLOCK_N)
    for k0 in range(k_start, k_end, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)  # (BLOCK_K,) pixels k = (n, oh, ow)
        k_mask = offs_k < k_end  # (BLOCK_K,) the slice's end, not K's
        n = offs_k // (OH * OW)  # (BLOCK_K,)
        oh = (offs_k // OW) % OH  # (BLOCK_K,)
        ow = offs_k % OW  # (BLOCK_K,)
        a_mask = f_mask[:, None] & k_mask[None, :]  # (BLOCK_M, BLOCK_K)
        a = tl.load(dy_ptr + (offs_f * stride_dyf)[:, None] + (n * stride_dyn + oh * stride_dyh
                                                               + ow * stride_dyw)[None, :],
                    mask=a_mask, other=0.0)  # (BLOCK_M, BLOCK_K) dy
        if RELU:
            o = tl.load(out_ptr + (offs_f * stride_of)[:, None] + (n * stride_on + oh * stride_oh
                                                                   + ow * stride_ow)[None, :],
                        mask=a_mask, other=0.0)  # (BLOCK_M, BLOCK_K)
            a = tl.where(o <= 0, tl.zeros_like(a), a)  # (BLOCK_M, BLOCK_K) gy
        ih = (oh * stride - padding)[:, None] + kh[None, :]  # (BLOCK_K, BLOCK_N)
        iw = (ow * stride - padding)[:, None] + kw[None, :]  # (BLOCK_K, BLOCK_N)
        b_mask = k_mask[:, None] & j_mask[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        b = tl.load(x_ptr + (n * stride_xn)[:, None] + (c * stride_xc)[None, :] + ih * stride_xh + iw * stride_xw,
                    mask=b_mask, other=0.0)  # (BLOCK_K, BLOCK_N) x's implicit columns
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)  # (BLOCK_M, BLOCK_N) fp32
    part_off = k_split * F * NCOL + (offs_f * NCOL)[:, None] + offs_j[None, :]  # (BLOCK_M, BLOCK_N)
    tl.store(part_ptr + part_off, acc, mask=f_mask[:, None] & j_mask[None, :])


def conv2d_backward(dy, x, weight, out, stride: int, padding: int, relu: bool, need=(True, True, True),
                    split_k: int = SPLIT_K):
    """(dx, dw, db) of relu?(conv2d(x, weight) + b); out is the forward's output, read by the kernels for the
    ReLU mask. Entries of `need` that are False come back as None. Any layout (strides passed)."""
    n, c, h, w, f, kh, kw, oh, ow = check_conv_args(x, weight, None, stride, padding)
    dx = dw = db = None
    if need[0]:
        cfg = DGRAD_CONFIG
        cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        dx = torch.empty((n, c, h, w), device=x.device, dtype=x.dtype,
                         memory_format=torch.channels_last if cl else torch.contiguous_format)  # like x
        m = n * h * w
        _conv2d_dgrad_gather_kernel[(triton.cdiv(m, cfg["BLOCK_M"]), triton.cdiv(c, cfg["BLOCK_N"]))](
            dy, out, weight, dx,
            m, c, f, h, w, oh, ow, kh, kw,
            stride, padding,
            *dy.stride(), *out.stride(), *weight.stride(), *dx.stride(),
            RELU=relu, DOT_PRECISION="ieee",
            BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"],
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        )
    if need[1]:
        cfg = WGRAD_CONFIG
        ncol, k = kh * kw * c, n * oh * ow
        per = triton.cdiv(triton.cdiv(k, split_k), cfg["BLOCK_K"]) * cfg["BLOCK_K"]  # whole BLOCK_K steps
        splits = triton.cdiv(k, per)
        part = torch.empty((splits, f, ncol), device=x.device, dtype=torch.float32)  # (SPLIT, F, KH*KW*C)
        grid = (triton.cdiv(f, cfg["BLOCK_M"]), triton.cdiv(ncol, cfg["BLOCK_N"]), splits)
        _conv2d_wgrad_split_k_kernel[grid](
            dy, out, x, part,
            f, ncol, k, per, c, h, w, oh, ow, kw,
            stride, padding,
            *dy.stride(), *out.stride(), *x.stride(),
            RELU=relu, DOT_PRECISION="ieee",
            BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"],
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        )
        dw = part.sum(0).view(f, kh, kw, c).permute(0, 3, 1, 2).to(x.dtype)  # (F, C, KH, KW), channels_last
        dw = dw.contiguous(memory_format=torch.channels_last if weight.is_contiguous(
            memory_format=torch.channels_last) and not weight.is_contiguous() else torch.contiguous_format)
    if need[2]:
        gy = torch.where(out > 0, dy, torch.zeros_like(dy)) if relu else dy  # (N, F, OH, OW)
        db = gy.sum(dim=(0, 2, 3), dtype=torch.float32).to(dy.dtype)  # (F,): conv.py sums it in Triton
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
    """Step 3's forward with autograd: the backward runs this step's gather dgrad and split-K wgrad."""
    check_conv_args(x, weight, bias, stride, padding)
    return _Conv2d.apply(x, weight, bias, stride, padding, relu)


if __name__ == "__main__":
    sys.exit(main("step4b_fused_backward"))
