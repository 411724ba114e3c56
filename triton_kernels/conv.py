"""conv2d (+ fused bias and ReLU) in Triton: forward, grad input, grad weight, grad bias, all implicit GEMMs.

Legend: N batch, C channels in, F filters out, H/W input height/width, OH/OW output height/width,
KH/KW kernel, G groups, Cg = C/G and Fg = F/G channels per group, s stride, p padding, d dilation.

    conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, relu=False, input_precision=None)
    conv2d_relu(...)   # the same with relu=True: the ReLU runs in the GEMM's epilogue, no separate pass

Output size (per spatial dim):  OH = (H + 2*pad - dil*(KH-1) - 1) // stride + 1

The three GEMMs of a convolution, per group, without ever building an im2col matrix in memory
(each kernel computes the addresses of its operand tiles from the GEMM indices):

                                                   rows M        columns       reduction K
    forward  out[m, f] = sum_k A[m, k] W[k, f]     N*OH*OW       Fg            Cg*KH*KW
    dgrad    dx[m, c]  = sum_k dY[m, k] W[k, c]    N*H*W         Cg            Fg*KH*KW
    wgrad    dW[f, j]  = sum_k dY[f, k] A[k, j]    Fg            Cg*KH*KW      N*OH*OW
    bias     db[f]     = sum_m dY[m, f]            a column sum (Triton reduction)

(N is always the batch here; the GEMM's column count is named by what it counts. Triton's BLOCK_M, BLOCK_N,
BLOCK_K are a tile's rows, columns and reduction step.) numpy_ref.functional.conv2d_forward/_backward compute
the same three products with an explicit im2col matrix `cols`; each kernel's header names its numpy_ref line.

The K index of the forward (and the column index of wgrad) runs over (kh, kw, c) with c fastest: with a
channels_last input, consecutive k are consecutive addresses, so a tile's loads coalesce (and, with channel
counts divisible by 16, become 16-byte async copies). The forward and dgrad walk K tap by tap, BLOCK_K channels
(filters) at a time, so the padding test is one per row; AlexNet's conv1 (C = 1) walks K = 121 flat instead.
wgrad's K = N*OH*OW is long and its tile grid small, so K is split over programs (split-K) whose fp32 partial
sums the bias-gradient kernel then adds up (it is a column sum too).
When the forward fused a ReLU, the backward kernels read the saved output and use where(out <= 0, 0, dY) in place
of dY while loading it (no extra elementwise pass, no mask tensor in memory); like torch's relu, a NaN stays NaN
forward and passes its gradient backward.

Registered as torch.library.triton_op "triton_kernels::conv2d_fwd" (+ conv2d_dgrad, conv2d_wgrad,
conv2d_bias_grad) with register_autograd: eager autograd runs in the Triton interpreter on CPU tensors,
torch.compile works on the GPU. No torch.nn.functional.conv* / cuDNN anywhere on this path.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from numpy_ref.geometry import conv_output_size
from triton_kernels._common import (
    INTERPRET,
    check_device,
    check_same_dtype,
    check_tensor,
    launcher,
    pair,
    strides_like_channels_last,
)

PRECISIONS = ("tf32", "ieee")  # input_precision of fp32 tl.dot: TF32 tensor cores or exact IEEE fp32


# ----------------------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------------------

# Forward. Computes numpy_ref.functional.conv2d_forward (im2col, then one matmul per group: out2 = w2 @ cols) and
# its loop twin numpy_ref.naive.conv2d_forward (for n, f, oh, ow: acc = bias[f]; for c, kh, kw: acc += x * w):
# out[n, g*Fg + f, oh, ow] = act(bias[g*Fg + f]
#     + sum_{kh, kw, c} x[n, g*Cg + c, oh*s_h - p_h + kh*d_h, ow*s_w - p_w + kw*d_w] * w[g*Fg + f, c, kh, kw])
# Implicit GEMM per group g (grid axis 1): rows m = (n, oh, ow) of M = N*OH*OW, Fg columns f,
# reduction k = (kh, kw, c) of K = KH*KW*Cg (c fastest); taps that fall in the padding load 0.
# The A tile a program loads, A[m, k], is numpy_ref's cols[k', m] (transposed: cols has a row per k') with the
# reduction reordered: numpy_ref's rows k' run over (c, kh, kw), ours over (kh, kw, c), so with channels_last
# consecutive k are consecutive addresses (docs/triton_kernels.md works it through on a 4x4 image).
# Two ways to walk K (constexpr SMALL_C):
#   SMALL_C=False  tap by tap, BLOCK_K channels at a time: for one tap (kh, kw) the input row/column and its
#                  padding test are per-row (BLOCK_M,) vectors, cheap in registers. Needs Cg >= BLOCK_K to waste
#                  nothing (AlexNet's conv2..conv5: 96..384 channels).
#   SMALL_C=True   k flattened over (kh, kw, c): no channel padding, but per-element (BLOCK_M, BLOCK_K) padding
#                  tests, so it runs with a small BLOCK_K (AlexNet's conv1: C = 1, K = 121).
# (Cg is left to specialize: "Cg divisible by 16" lets the compiler prove a channel chunk's mask uniform and
# emit 16-byte async copies on channels_last inputs; the other sizes would only multiply recompilations.)
@triton.jit(do_not_specialize=["M", "Fg", "K", "H", "W", "OH", "OW", "KH", "KW", "pad_h", "pad_w", "dil_h", "dil_w"])
def _conv2d_fwd_kernel(
    # Pointers
    x_ptr, w_ptr, b_ptr, out_ptr,
    # Sizes, then the convolution's stride, padding and dilation
    M, Fg, K, Cg, H, W, OH, OW, KH, KW,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    # Strides (in elements) of each tensor, n/c/h/w order
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wf, stride_wc, stride_wh, stride_ww,
    stride_on, stride_oc, stride_oh, stride_ow,
    # Meta-parameters
    HAS_BIAS: tl.constexpr, RELU: tl.constexpr, SMALL_C: tl.constexpr, DOT_PRECISION: tl.constexpr,
    ACC_DTYPE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    g = tl.program_id(1)
    num_pid_n = tl.cdiv(Fg, BLOCK_N)
    pid_m = pid // num_pid_n  # neighbouring programs share one x tile (the big operand), w stays in L2
    pid_n = pid % num_pid_n

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) rows m = (n, oh, ow)
    offs_f = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) filters within the group
    m_mask = offs_m < M  # (BLOCK_M,)
    f_mask = offs_f < Fg  # (BLOCK_N,)
    n = offs_m // (OH * OW)  # (BLOCK_M,)
    oh = (offs_m // OW) % OH  # (BLOCK_M,)
    ow = offs_m % OW  # (BLOCK_M,)
    ih0 = oh * stride_h - pad_h  # (BLOCK_M,) input row of tap kh = 0
    iw0 = ow * stride_w - pad_w  # (BLOCK_M,)
    x_row = n * stride_xn + g * Cg * stride_xc + ih0 * stride_xh + iw0 * stride_xw  # (BLOCK_M,) address of tap (0, 0), channel 0
    f = g * Fg + offs_f  # (BLOCK_N,) filter index in weight / out
    offs_kk = tl.arange(0, BLOCK_K)  # (BLOCK_K,)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)  # (BLOCK_M, BLOCK_N)
    if SMALL_C:
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + offs_kk  # (BLOCK_K,) k = (kh, kw, c)
            k_mask = offs_k < K  # (BLOCK_K,)
            c = offs_k % Cg  # (BLOCK_K,)
            kw = (offs_k // Cg) % KW  # (BLOCK_K,)
            kh = offs_k // (Cg * KW)  # (BLOCK_K,)
            ih = ih0[:, None] + (kh * dil_h)[None, :]  # (BLOCK_M, BLOCK_K)
            iw = iw0[:, None] + (kw * dil_w)[None, :]  # (BLOCK_M, BLOCK_K)
            a_mask = (m_mask[:, None] & k_mask[None, :]
                      & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W))  # (BLOCK_M, BLOCK_K)
            x_col = c * stride_xc + kh * dil_h * stride_xh + kw * dil_w * stride_xw  # (BLOCK_K,)
            a = tl.load(x_ptr + x_row[:, None] + x_col[None, :], mask=a_mask, other=0.0)  # (BLOCK_M, BLOCK_K)
            w_off = (c * stride_wc + kh * stride_wh + kw * stride_ww)[:, None] + (f * stride_wf)[None, :]  # (BLOCK_K, BLOCK_N)
            b = tl.load(w_ptr + w_off, mask=k_mask[:, None] & f_mask[None, :], other=0.0)  # (BLOCK_K, BLOCK_N)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)  # (BLOCK_M, BLOCK_N) fp32
    else:
        n_chunks = tl.cdiv(Cg, BLOCK_K)
        for t in range(0, KH * KW * n_chunks):  # one flat loop (software-pipelined) over (tap, channel chunk)
            tap = t // n_chunks  # scalar: same for the whole tile
            c0 = (t - tap * n_chunks) * BLOCK_K
            kh = tap // KW
            kw = tap - kh * KW
            ih = ih0 + kh * dil_h  # (BLOCK_M,)
            iw = iw0 + kw * dil_w  # (BLOCK_M,)
            row_ok = m_mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)  # (BLOCK_M,) tap inside the image
            offs_c = c0 + offs_kk  # (BLOCK_K,) channels within the group
            c_mask = offs_c < Cg  # (BLOCK_K,)
            x_tap = x_row + kh * dil_h * stride_xh + kw * dil_w * stride_xw  # (BLOCK_M,)
            a = tl.load(x_ptr + x_tap[:, None] + (offs_c * stride_xc)[None, :],
                        mask=row_ok[:, None] & c_mask[None, :], other=0.0)  # (BLOCK_M, BLOCK_K)
            w_off = (offs_c * stride_wc + kh * stride_wh + kw * stride_ww)[:, None] + (f * stride_wf)[None, :]  # (BLOCK_K, BLOCK_N)
            b = tl.load(w_ptr + w_off, mask=c_mask[:, None] & f_mask[None, :], other=0.0)  # (BLOCK_K, BLOCK_N)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)  # (BLOCK_M, BLOCK_N) fp32

    # Epilogue: bias and ReLU on the fp32 accumulator, then one cast and one store.
    if HAS_BIAS:
        bias = tl.load(b_ptr + f, mask=f_mask, other=0.0).to(ACC_DTYPE)  # (BLOCK_N,)
        acc = acc + bias[None, :]  # (BLOCK_M, BLOCK_N)
    if RELU:  # torch's relu: negatives to 0, NaN stays NaN (tl.maximum(acc, 0) could turn NaN into 0)
        acc = tl.where(acc < 0, 0.0, acc)  # (BLOCK_M, BLOCK_N)
    out_off = (n * stride_on + oh * stride_oh + ow * stride_ow)[:, None] + (f * stride_oc)[None, :]  # (BLOCK_M, BLOCK_N)
    tl.store(out_ptr + out_off, acc.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & f_mask[None, :])


# Grad input. Computes the dx of numpy_ref.functional.conv2d_backward (dcols = w2.T @ dout2, then col2im scatters
# each column back onto the pixels it read) and of numpy_ref.naive.conv2d_backward (its line
# `dx_pad[n, c, h, w] += d * weight[f, c, kh, kw]`), as a gather: each program owns a tile of dx and sums what
# reaches it, so nothing is written twice and no atomics are needed:
# dx[n, g*Cg + c, ih, iw] = sum_{kh, kw, f} gy[n, g*Fg + f, oh, ow] * w[g*Fg + f, c, kh, kw]
#     with oh = (ih + p_h - kh*d_h) / s_h taken only where it divides exactly and 0 <= oh < OH (same for ow),
#     and gy = dy * (out > 0) when the forward fused a ReLU (the mask is applied as dy is loaded).
# Implicit GEMM per group: rows m = (n, ih, iw) of M = N*H*W, Cg columns c, k = (kh, kw, f) of K = KH*KW*Fg,
# walked tap by tap, BLOCK_K filters at a time (the forward's SMALL_C=False order). With stride s > 1 only one
# tap in s*s reaches a given pixel: the others are masked off (AlexNet's one strided conv, conv1, needs no dgrad).
@triton.jit(do_not_specialize=["M", "Cg", "H", "W", "OH", "OW", "KH", "KW", "pad_h", "pad_w", "dil_h", "dil_w"])
def _conv2d_dgrad_kernel(
    # Pointers
    dy_ptr, out_ptr, w_ptr, dx_ptr,
    # Sizes, then the convolution's stride, padding and dilation
    M, Cg, Fg, H, W, OH, OW, KH, KW,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    # Strides (in elements) of each tensor, n/c/h/w order
    stride_dyn, stride_dyc, stride_dyh, stride_dyw,
    stride_on, stride_oc, stride_oh, stride_ow,
    stride_wf, stride_wc, stride_wh, stride_ww,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    # Meta-parameters
    RELU: tl.constexpr, DOT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    g = tl.program_id(1)
    num_pid_n = tl.cdiv(Cg, BLOCK_N)
    pid_m = pid // num_pid_n
    pid_n = pid % num_pid_n

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) rows m = (n, ih, iw)
    offs_c = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) input channels within the group
    m_mask = offs_m < M  # (BLOCK_M,)
    c_mask = offs_c < Cg  # (BLOCK_N,)
    n = offs_m // (H * W)  # (BLOCK_M,)
    ih = (offs_m // W) % H  # (BLOCK_M,)
    iw = offs_m % W  # (BLOCK_M,)
    offs_kk = tl.arange(0, BLOCK_K)  # (BLOCK_K,)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)  # (BLOCK_M, BLOCK_N)
    n_chunks = tl.cdiv(Fg, BLOCK_K)
    for t in range(0, KH * KW * n_chunks):  # one flat loop over (tap, filter chunk)
        tap = t // n_chunks  # scalar
        f0 = (t - tap * n_chunks) * BLOCK_K
        kh = tap // KW
        kw = tap - kh * KW
        th = ih + pad_h - kh * dil_h  # (BLOCK_M,) = oh * s_h when this tap reaches (ih, iw)
        tw = iw + pad_w - kw * dil_w  # (BLOCK_M,)
        oh = th // stride_h  # (BLOCK_M,)
        ow = tw // stride_w  # (BLOCK_M,)
        row_ok = (m_mask & (th >= 0) & (tw >= 0) & (th % stride_h == 0) & (tw % stride_w == 0)
                  & (oh < OH) & (ow < OW))  # (BLOCK_M,)
        offs_f = f0 + offs_kk  # (BLOCK_K,) filters within the group
        f_ok = offs_f < Fg  # (BLOCK_K,)
        f = g * Fg + offs_f  # (BLOCK_K,) filter index in dy / w
        a_mask = row_ok[:, None] & f_ok[None, :]  # (BLOCK_M, BLOCK_K)
        a = tl.load(dy_ptr + (n * stride_dyn + oh * stride_dyh + ow * stride_dyw)[:, None] + (f * stride_dyc)[None, :],
                    mask=a_mask, other=0.0)  # (BLOCK_M, BLOCK_K)
        if RELU:
            o = tl.load(out_ptr + (n * stride_on + oh * stride_oh + ow * stride_ow)[:, None] + (f * stride_oc)[None, :],
                        mask=a_mask, other=0.0)  # (BLOCK_M, BLOCK_K)
            a = tl.where(o <= 0, tl.zeros_like(a), a)  # (BLOCK_M, BLOCK_K) dy * relu'(z), NaN out passes dy
        w_off = (f * stride_wf + kh * stride_wh + kw * stride_ww)[:, None] + (offs_c * stride_wc)[None, :]  # (BLOCK_K, BLOCK_N)
        b = tl.load(w_ptr + w_off, mask=f_ok[:, None] & c_mask[None, :], other=0.0)  # (BLOCK_K, BLOCK_N)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)  # (BLOCK_M, BLOCK_N) fp32

    c = g * Cg + offs_c  # (BLOCK_N,) channel index in dx
    dx_off = (n * stride_dxn + ih * stride_dxh + iw * stride_dxw)[:, None] + (c * stride_dxc)[None, :]  # (BLOCK_M, BLOCK_N)
    tl.store(dx_ptr + dx_off, acc.to(dx_ptr.dtype.element_ty), mask=m_mask[:, None] & c_mask[None, :])


# Grad weight. Computes the dweight of numpy_ref.functional.conv2d_backward (dw2 = dout2 @ cols.T) and of
# numpy_ref.naive.conv2d_backward (`dweight[f, c, kh, kw] += d * x_pad[n, c, h, w]`), reading the forward's
# implicit columns (the same addressing as the forward's A tile):
# dw[g*Fg + f, c, kh, kw] = sum_{n, oh, ow} gy[n, g*Fg + f, oh, ow]
#                                          * x[n, g*Cg + c, oh*s_h - p_h + kh*d_h, ow*s_w - p_w + kw*d_w]
# Implicit GEMM per group: Fg rows f, NCOL = KH*KW*Cg columns j = (kh, kw, c), k = (n, oh, ow) of K = N*OH*OW.
# K is long and the output small (AlexNet's conv1: 96 x 121 x 373248), so the K range is split over grid axis 2
# (split-K): program k_split writes its partial sum to dw_ptr + k_split*stride_dws (fp32 workspace if split > 1).
@triton.jit(do_not_specialize=["Fg", "NCOL", "K", "Cg", "K_PER_SPLIT", "H", "W", "OH", "OW", "KW", "pad_h", "pad_w",
                                "dil_h", "dil_w"])
def _conv2d_wgrad_kernel(
    # Pointers
    dy_ptr, out_ptr, x_ptr, dw_ptr,
    # Sizes, then the convolution's stride, padding and dilation
    Fg, NCOL, K, Cg, K_PER_SPLIT, H, W, OH, OW, KW,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    # Strides (in elements) of each tensor, n/c/h/w order
    stride_dyn, stride_dyc, stride_dyh, stride_dyw,
    stride_on, stride_oc, stride_oh, stride_ow,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_dws, stride_dwf, stride_dwc, stride_dwh, stride_dww,
    # Meta-parameters
    RELU: tl.constexpr, DOT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    g = tl.program_id(1)
    k_split = tl.program_id(2)
    num_pid_n = tl.cdiv(NCOL, BLOCK_N)
    pid_m = pid // num_pid_n
    pid_n = pid % num_pid_n

    offs_f = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) filters within the group
    offs_j = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) columns j = (kh, kw, c)
    f_mask = offs_f < Fg  # (BLOCK_M,)
    j_mask = offs_j < NCOL  # (BLOCK_N,)
    f = g * Fg + offs_f  # (BLOCK_M,) filter index in dy / dw
    c = offs_j % Cg  # (BLOCK_N,)
    kw = (offs_j // Cg) % KW  # (BLOCK_N,)
    kh = offs_j // (Cg * KW)  # (BLOCK_N,)
    dh = kh * dil_h  # (BLOCK_N,)
    dw = kw * dil_w  # (BLOCK_N,)
    x_col = (g * Cg + c) * stride_xc + dh * stride_xh + dw * stride_xw  # (BLOCK_N,)

    k_start = k_split * K_PER_SPLIT
    k_end = tl.minimum(K, k_start + K_PER_SPLIT)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)  # (BLOCK_M, BLOCK_N)
    for k0 in range(k_start, k_end, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)  # (BLOCK_K,) k = (n, oh, ow)
        k_mask = offs_k < k_end  # (BLOCK_K,)
        n = offs_k // (OH * OW)  # (BLOCK_K,)
        oh = (offs_k // OW) % OH  # (BLOCK_K,)
        ow = offs_k % OW  # (BLOCK_K,)
        a_mask = f_mask[:, None] & k_mask[None, :]  # (BLOCK_M, BLOCK_K)
        gy_off = (f * stride_dyc)[:, None] + (n * stride_dyn + oh * stride_dyh + ow * stride_dyw)[None, :]  # (BLOCK_M, BLOCK_K)
        a = tl.load(dy_ptr + gy_off, mask=a_mask, other=0.0)  # (BLOCK_M, BLOCK_K)
        if RELU:
            o_off = (f * stride_oc)[:, None] + (n * stride_on + oh * stride_oh + ow * stride_ow)[None, :]  # (BLOCK_M, BLOCK_K)
            o = tl.load(out_ptr + o_off, mask=a_mask, other=0.0)  # (BLOCK_M, BLOCK_K)
            a = tl.where(o <= 0, tl.zeros_like(a), a)  # (BLOCK_M, BLOCK_K) dy * relu'(z), NaN out passes dy
        ih0 = oh * stride_h - pad_h  # (BLOCK_K,)
        iw0 = ow * stride_w - pad_w  # (BLOCK_K,)
        ih = ih0[:, None] + dh[None, :]  # (BLOCK_K, BLOCK_N)
        iw = iw0[:, None] + dw[None, :]  # (BLOCK_K, BLOCK_N)
        b_mask = (k_mask[:, None] & j_mask[None, :]
                  & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W))  # (BLOCK_K, BLOCK_N)
        x_row = n * stride_xn + ih0 * stride_xh + iw0 * stride_xw  # (BLOCK_K,)
        b = tl.load(x_ptr + x_row[:, None] + x_col[None, :], mask=b_mask, other=0.0)  # (BLOCK_K, BLOCK_N)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)  # (BLOCK_M, BLOCK_N) fp32

    dw_off = k_split * stride_dws + (f * stride_dwf)[:, None] + (c * stride_dwc + kh * stride_dwh + kw * stride_dww)[None, :]  # (BLOCK_M, BLOCK_N)
    tl.store(dw_ptr + dw_off, acc.to(dw_ptr.dtype.element_ty), mask=f_mask[:, None] & j_mask[None, :])


# Grad bias. Computes numpy_ref.functional.conv2d_backward's dbias = dout2.sum(axis=1) (naive: `dbias[f] += d`),
# with numpy_ref.functional.relu_backward's mask folded in when the forward fused the ReLU:
# db[f] = sum_{n, oh, ow} gy[n, f, oh, ow]: the column sums of gy seen as an (N*OH*OW, F) matrix,
#     gy = dy * (out > 0) when the forward fused a ReLU. Rows are split over grid axis 1; program r_split writes
#     its partial sums to db_ptr + r_split*stride_dbs (an fp32 workspace when split > 1).
@triton.jit(do_not_specialize=["M", "F", "OH", "OW", "ROWS_PER_SPLIT"])
def _conv2d_bias_grad_kernel(
    # Pointers
    dy_ptr, out_ptr, db_ptr,
    # Sizes
    M, F, OH, OW, ROWS_PER_SPLIT,
    # Strides (in elements) of each tensor, n/c/h/w order
    stride_dyn, stride_dyc, stride_dyh, stride_dyw,
    stride_on, stride_oc, stride_oh, stride_ow,
    stride_dbs,
    # Meta-parameters
    RELU: tl.constexpr, ACC_DTYPE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_f = tl.program_id(0)
    r_split = tl.program_id(1)
    offs_f = pid_f * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    f_mask = offs_f < F  # (BLOCK_N,)
    m_start = r_split * ROWS_PER_SPLIT
    m_end = tl.minimum(M, m_start + ROWS_PER_SPLIT)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)  # (BLOCK_M, BLOCK_N) summed over rows at the end
    for m0 in range(m_start, m_end, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)  # (BLOCK_M,) rows m = (n, oh, ow)
        mask = (offs_m < m_end)[:, None] & f_mask[None, :]  # (BLOCK_M, BLOCK_N)
        n = offs_m // (OH * OW)  # (BLOCK_M,)
        oh = (offs_m // OW) % OH  # (BLOCK_M,)
        ow = offs_m % OW  # (BLOCK_M,)
        gy_off = (n * stride_dyn + oh * stride_dyh + ow * stride_dyw)[:, None] + (offs_f * stride_dyc)[None, :]  # (BLOCK_M, BLOCK_N)
        gy = tl.load(dy_ptr + gy_off, mask=mask, other=0.0).to(ACC_DTYPE)  # (BLOCK_M, BLOCK_N)
        if RELU:
            o_off = (n * stride_on + oh * stride_oh + ow * stride_ow)[:, None] + (offs_f * stride_oc)[None, :]  # (BLOCK_M, BLOCK_N)
            o = tl.load(out_ptr + o_off, mask=mask, other=0.0)  # (BLOCK_M, BLOCK_N)
            gy = tl.where(o <= 0, 0.0, gy)  # (BLOCK_M, BLOCK_N) torch's rule: NaN out passes dy
        acc += gy
    db = tl.sum(acc, axis=0)  # (BLOCK_N,)
    tl.store(db_ptr + r_split * stride_dbs + offs_f, db.to(db_ptr.dtype.element_ty), mask=f_mask)


# ----------------------------------------------------------------------------------------------------------
# Autotuning: configurations for the AlexNet shapes on Hopper; one small config under the interpreter
# (it would benchmark every config on every call and cache nothing).
# ----------------------------------------------------------------------------------------------------------

def _cfg(bm, bn, bk, warps, stages):
    return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "num_warps": warps, "num_stages": stages}


# Configurations chosen by compiling candidates for sm_90 on the CPU (python -m triton_kernels.codegen):
# only those with no register spills (cuobjdump STACK 0) in both fp32/TF32 and bf16 are kept; 128x128 fp32
# tiles spill in the epilogue (64 accumulators plus 128 registers of 64-bit store addresses per thread).
# Every BLOCK_M is a multiple of 64 so tl.dot lowers to Hopper's warpgroup MMA (wgmma), TF32 or bf16.
# Forward: M = N*OH*OW rows is huge (conv2: 86528), Fg = 256/384 columns, K = Cg*KH*KW = 2304..3456.
SM90_FWD_CONFIGS = [
    _cfg(128, 64, 32, 8, 4),
    _cfg(64, 128, 64, 8, 3),
    _cfg(64, 64, 32, 4, 4),
]
# Forward with few input channels (SMALL_C, AlexNet's conv1: C = 1, K = 121, 96 filters): BLOCK_K = 16 keeps the
# per-element padding tests in registers; 32 columns cover 96 filters in 3 tiles.
SM90_FWD_SMALL_C_CONFIGS = [
    _cfg(128, 32, 16, 4, 3),
    _cfg(128, 64, 16, 8, 3),
    _cfg(256, 32, 16, 8, 3),
]
SMALL_C_BELOW = 32  # the forward walks K flat (SMALL_C) when C/groups < this: channel chunks would waste > half
# dgrad: M = N*H*W rows, Cg = 96..384 columns, K = Fg*KH*KW (conv1's dgrad is never needed: images need no gradient).
SM90_DGRAD_CONFIGS = [
    _cfg(128, 64, 16, 8, 3),
    _cfg(64, 128, 32, 8, 3),
    _cfg(64, 64, 32, 8, 3),
]
# wgrad: Fg = 96..384 rows, Cg*KH*KW = 121..3456 columns, K = N*OH*OW long (split over programs).
SM90_WGRAD_CONFIGS = [
    _cfg(128, 64, 32, 8, 3),
    _cfg(64, 128, 32, 8, 3),
]
INTERPRET_CONFIG = _cfg(32, 16, 16, 4, 1)
# float64 (gradient checks, not training) runs one small config, not autotuned, on the GPU and in the interpreter:
# its tl.dot lowers to sm_90's fp64 MMA (DMMA, mma.sync m8n8k4 f64); the specs below compile it.
FP64_CONFIG = _cfg(32, 32, 16, 4, 2)
# The bias-gradient reduction is memory bound and not autotuned.
BIAS_GRAD_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 1}
# Split-K targets: wgrad programs K_PER_SPLIT rows at least, and split so the grid fills the GPU twice over.
_MIN_ROWS_PER_SPLIT = 2048
_SPLIT_ALIGN = 256  # K_PER_SPLIT is a multiple of every BLOCK_K / BLOCK_M used, so tiles never straddle splits


def _triton_configs(configs):
    if INTERPRET:
        configs = [INTERPRET_CONFIG]
    return [
        triton.Config({k: v for k, v in c.items() if k.startswith("BLOCK")},
                      num_warps=c["num_warps"], num_stages=c["num_stages"])
        for c in configs
    ]


_conv2d_fwd = triton.autotune(configs=_triton_configs(SM90_FWD_CONFIGS),
                              key=["M", "Fg", "K", "Cg"])(_conv2d_fwd_kernel)
_conv2d_fwd_small_c = triton.autotune(configs=_triton_configs(SM90_FWD_SMALL_C_CONFIGS),
                                      key=["M", "Fg", "K", "Cg"])(_conv2d_fwd_kernel)
_conv2d_dgrad = triton.autotune(configs=_triton_configs(SM90_DGRAD_CONFIGS),
                                key=["M", "Cg", "Fg", "KH", "KW"])(_conv2d_dgrad_kernel)
_conv2d_wgrad = triton.autotune(configs=_triton_configs(SM90_WGRAD_CONFIGS),
                                key=["Fg", "NCOL", "K", "K_PER_SPLIT"])(_conv2d_wgrad_kernel)


def _kernel_for(autotuned, dtype: torch.dtype):
    """(kernel, launch kwargs): the autotuned kernel, or for float64 the plain kernel with FP64_CONFIG."""
    if dtype != torch.float64:
        return autotuned, {}
    return autotuned.fn, dict(FP64_CONFIG)


# ----------------------------------------------------------------------------------------------------------
# Argument checks (run before anything is allocated or launched) and launchers
# ----------------------------------------------------------------------------------------------------------

def _conv_padding(padding, kernel_hw, dilation, stride) -> tuple[int, int, int, int]:
    """padding (int, pair, 'same', 'valid') -> (top, bottom, left, right). 'same' pads dil*(K-1) in total,
    the odd one at the bottom/right, as torch does."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, got stride={stride}")
            total = [d * (k - 1) for d, k in zip(dilation, kernel_hw)]  # [pad_h total, pad_w total]
            return (total[0] // 2, total[0] - total[0] // 2, total[1] // 2, total[1] - total[1] // 2)
        raise ValueError(f"padding must be an int, a pair of ints, 'same' or 'valid', got {padding!r}")
    ph, pw = pair(padding, "padding", minimum=0)
    return (ph, ph, pw, pw)


def _check_int32(t: torch.Tensor, name: str) -> None:
    """The kernels index with int32: the largest offset a tensor's strides reach must fit."""
    reach = sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride()))
    if reach >= 2**31:
        raise ValueError(f"{name} of shape {tuple(t.shape)} spans {reach + 1} elements, more than int32 indexing")


def _check_conv_args(x, weight, bias, stride, padding, dilation, groups, input_precision):
    """Validate the public arguments (x already 4-D); return (stride, pad4, dilation) with
    pad4 = (top, bottom, left, right). Raises ValueError naming the argument and shapes."""
    check_tensor(x, "x", (4,), allow_empty=True)  # again: autocast may have changed its dtype
    check_tensor(weight, "weight", (4,))
    if bias is not None:
        check_tensor(bias, "bias", (1,))
    check_device(x=x, weight=weight, bias=bias)
    check_same_dtype(x=x, weight=weight, bias=bias)
    stride = pair(stride, "stride", minimum=1)
    dilation = pair(dilation, "dilation", minimum=1)
    pad4 = _conv_padding(padding, tuple(weight.shape[2:]), dilation, stride)
    _check_geometry(x, weight, bias, stride, pad4, dilation, groups, input_precision)
    return stride, pad4, dilation


def _check_geometry(x, weight, bias, stride, pad4, dilation, groups, input_precision) -> tuple[int, int]:
    """Channel/group/bias agreement, kernel vs padded input, index range. Returns (OH, OW)."""
    if isinstance(groups, bool) or not isinstance(groups, (int, torch.SymInt)) or not 1 <= groups <= 65535:
        raise ValueError(f"groups must be a positive int (at most 65535, the grid's axis 1), got {groups!r}")
    if len(stride) != 2 or len(dilation) != 2 or min(*stride, *dilation) < 1:
        raise ValueError(f"stride and dilation must be pairs of ints >= 1, got stride={stride}, dilation={dilation}")
    if len(pad4) != 4 or min(pad4) < 0:
        raise ValueError(f"padding must be (top, bottom, left, right) ints >= 0, got {pad4}")
    n, c, h, w = x.shape
    f, cg, kh, kw = weight.shape
    if c != cg * groups:
        raise ValueError(f"x of shape {tuple(x.shape)} has {c} channels but weight of shape {tuple(weight.shape)} "
                         f"with groups={groups} expects weight.shape[1]*groups = {cg * groups}")
    if f % groups != 0:
        raise ValueError(f"weight of shape {tuple(weight.shape)} has {f} out channels, "
                         f"not divisible by groups={groups}")
    if bias is not None and tuple(bias.shape) != (f,):
        raise ValueError(f"bias must have shape ({f},) to match weight {tuple(weight.shape)}, "
                         f"got {tuple(bias.shape)}")
    eff_kh, eff_kw = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1  # kernel extent with dilation
    padded_h, padded_w = h + pad4[0] + pad4[1], w + pad4[2] + pad4[3]
    if eff_kh > padded_h or eff_kw > padded_w:
        raise ValueError(f"weight of shape {tuple(weight.shape)} with dilation={tuple(dilation)} spans "
                         f"({eff_kh}, {eff_kw}), larger than the padded input ({padded_h}, {padded_w}) of x "
                         f"{tuple(x.shape)}")
    if input_precision not in PRECISIONS:
        raise ValueError(f"input_precision must be one of {PRECISIONS} or None, got {input_precision!r}")
    oh = conv_output_size(h, kh, stride[0], (pad4[0], pad4[1]), dilation[0])
    ow = conv_output_size(w, kw, stride[1], (pad4[2], pad4[3]), dilation[1])
    _check_int32(x, "x")
    _check_int32(weight, "weight")
    if n * f * oh * ow > 2**31:
        raise ValueError(f"the output ({n}, {f}, {oh}, {ow}) has more elements than int32 indexing reaches")
    return oh, ow


def _new_output(like: torch.Tensor, shape, dtype: Optional[torch.dtype] = None,
                channels_last: Optional[bool] = None) -> torch.Tensor:
    """torch.empty of `shape` on like's device, in like's dtype (unless given) and, for 4-D shapes, channels_last
    when asked or, by default, when like's strides say so (torch's suggest_memory_format rule). Every tensor this
    file's kernels write is allocated here, so a test can poison them all (fill with NaN) by patching it."""
    if channels_last is None:
        channels_last = strides_like_channels_last(like)
    fmt = torch.channels_last if len(shape) == 4 and channels_last else torch.contiguous_format
    return torch.empty(shape, device=like.device, dtype=like.dtype if dtype is None else dtype, memory_format=fmt)


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 132  # the H200's count; under the interpreter it only shapes the split heuristics


def _split_rows(rows: int, tiles: int, device: torch.device) -> tuple[int, int]:
    """Split a long reduction of `rows` rows over enough programs to fill the GPU about twice:
    returns (splits, rows_per_split) with rows_per_split a multiple of _SPLIT_ALIGN."""
    want = triton.cdiv(2 * _num_sms(device), max(tiles, 1))  # splits so that tiles * splits ~ 2 * SMs
    splits = max(1, min(want, rows // _MIN_ROWS_PER_SPLIT))
    per = triton.cdiv(triton.cdiv(rows, splits), _SPLIT_ALIGN) * _SPLIT_ALIGN
    return triton.cdiv(rows, per), per


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulator (and split-K workspace) dtype: float64 for float64 operands (gradient checks), else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


_TL_DTYPES = {torch.float32: tl.float32, torch.float64: tl.float64}


def _dot_precision(dtype: torch.dtype, input_precision: str) -> str:
    """input_precision only means something for fp32 operands; fp16/bf16/fp64 dots are compiled as "ieee" (the
    same code) so that one compiled variant, the one in codegen_specs.py, serves both settings."""
    return input_precision if dtype == torch.float32 else "ieee"


def _launch_fwd(x, weight, bias, stride, pad4, dilation, groups, out_hw, relu, input_precision):
    n, c, h, w = x.shape
    f, cg, kh, kw = weight.shape
    oh, ow = out_hw
    # channels_last out when x's or weight's strides say so, as torch's conv decides
    out = _new_output(x, (n, f, oh, ow), channels_last=strides_like_channels_last(x)
                      or strides_like_channels_last(weight))  # (N, F, OH, OW)
    fg = f // groups
    m, k = n * oh * ow, cg * kh * kw
    if n == 0:  # an empty batch: an empty output, nothing to launch (torch returns one too)
        return out

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(fg, meta["BLOCK_N"]), groups)

    small_c = cg < SMALL_C_BELOW
    kernel, meta = _kernel_for(_conv2d_fwd_small_c if small_c else _conv2d_fwd, x.dtype)
    launcher(kernel)[grid](
        x, weight, bias if bias is not None else weight, out,
        m, fg, k, cg,
        h, w, oh, ow, kh, kw,
        stride[0], stride[1], pad4[0], pad4[2], dilation[0], dilation[1],
        *x.stride(), *weight.stride(), *out.stride(),
        HAS_BIAS=bias is not None, RELU=relu, SMALL_C=small_c,
        DOT_PRECISION=_dot_precision(weight.dtype, input_precision), ACC_DTYPE=_TL_DTYPES[_acc_dtype(x.dtype)],
        **meta,
    )
    return out


def _launch_dgrad(grad_out, out, weight, x, stride, pad4, dilation, groups, relu, input_precision):
    n, c, h, w = x.shape
    f, cg, kh, kw = weight.shape
    oh, ow = grad_out.shape[2:]
    dx = _new_output(x, tuple(x.shape))  # (N, C, H, W)
    fg = f // groups
    m = n * h * w
    if n == 0:  # an empty batch: an empty dx
        return dx
    mask_src = out if relu else grad_out  # never read when relu is False

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(cg, meta["BLOCK_N"]), groups)

    kernel, meta = _kernel_for(_conv2d_dgrad, x.dtype)
    launcher(kernel)[grid](
        grad_out, mask_src, weight, dx,
        m, cg, fg,
        h, w, oh, ow, kh, kw,
        stride[0], stride[1], pad4[0], pad4[2], dilation[0], dilation[1],
        *grad_out.stride(), *mask_src.stride(), *weight.stride(), *dx.stride(),
        RELU=relu, DOT_PRECISION=_dot_precision(weight.dtype, input_precision),
        ACC_DTYPE=_TL_DTYPES[_acc_dtype(x.dtype)], **meta,
    )
    return dx


def _launch_wgrad(grad_out, out, x, weight, stride, pad4, dilation, groups, relu, input_precision,
                  splits=None):
    """dW; `splits` forces the split-K count (tests use it), default from _split_rows."""
    n, c, h, w = x.shape
    f, cg, kh, kw = weight.shape
    oh, ow = grad_out.shape[2:]
    fg = f // groups
    ncol, k = cg * kh * kw, n * oh * ow
    if n == 0:  # an empty batch: a sum over no images, dW = 0
        return _new_output(weight, tuple(weight.shape)).zero_()  # (F, Cg, KH, KW)
    if splits is None:
        splits, per = _split_rows(k, triton.cdiv(fg, 128) * triton.cdiv(ncol, 128) * groups, x.device)
    else:
        per = triton.cdiv(triton.cdiv(k, splits), _SPLIT_ALIGN) * _SPLIT_ALIGN
        splits = triton.cdiv(k, per)
    dw = _new_output(weight, tuple(weight.shape))  # (F, Cg, KH, KW) in weight's memory format
    dw_strides = (0, *dw.stride())
    acc_dtype = _acc_dtype(x.dtype)
    if splits > 1:  # each split writes an fp32 (fp64) slab laid out like dw; the slabs are summed below
        slab = f * cg * kh * kw
        partials = _new_output(weight, (splits, slab), acc_dtype)  # (splits, F*Cg*KH*KW)
        dw_layout, dw, dw_strides = dw.stride(), partials, (slab, *dw.stride())
    mask_src = out if relu else grad_out

    def grid(meta):
        return (triton.cdiv(fg, meta["BLOCK_M"]) * triton.cdiv(ncol, meta["BLOCK_N"]), groups, splits)

    kernel, meta = _kernel_for(_conv2d_wgrad, x.dtype)
    launcher(kernel)[grid](
        grad_out, mask_src, x, dw,
        fg, ncol, k, cg, per,
        h, w, oh, ow, kw,
        stride[0], stride[1], pad4[0], pad4[2], dilation[0], dilation[1],
        *grad_out.stride(), *mask_src.stride(), *x.stride(), *dw_strides,
        RELU=relu, DOT_PRECISION=_dot_precision(weight.dtype, input_precision), ACC_DTYPE=_TL_DTYPES[acc_dtype],
        **meta,
    )
    if splits == 1:
        return dw
    return _sum_partials(partials, weight.dtype).as_strided(tuple(weight.shape), dw_layout)  # (F, Cg, KH, KW)


def _launch_bias_grad(grad_out, out, relu, splits=None, out_dtype=None):
    """db (F,) in out_dtype (default grad_out's); `splits` forces the row-split count (tests use it)."""
    n, f, oh, ow = grad_out.shape
    m = n * oh * ow
    if m == 0:  # an empty batch: a sum over no images, db = 0
        return _new_output(grad_out, (f,), out_dtype).zero_()  # (F,)
    bm, bn = BIAS_GRAD_CONFIG["BLOCK_M"], BIAS_GRAD_CONFIG["BLOCK_N"]
    if splits is None:
        splits, per = _split_rows(m, triton.cdiv(f, bn), grad_out.device)
    else:
        per = triton.cdiv(triton.cdiv(m, splits), _SPLIT_ALIGN) * _SPLIT_ALIGN
        splits = triton.cdiv(m, per)
    if splits == 1:
        db = _new_output(grad_out, (f,), out_dtype)  # (F,)
    else:
        db = _new_output(grad_out, (splits, f), _acc_dtype(grad_out.dtype))  # (splits, F) partials
    mask_src = out if relu else grad_out
    launcher(_conv2d_bias_grad_kernel)[(triton.cdiv(f, bn), splits)](
        grad_out, mask_src, db,
        m, f, oh, ow, per,
        *grad_out.stride(), *mask_src.stride(), f,
        RELU=relu, ACC_DTYPE=_TL_DTYPES[_acc_dtype(grad_out.dtype)], BLOCK_M=bm, BLOCK_N=bn,
        num_warps=BIAS_GRAD_CONFIG["num_warps"], num_stages=BIAS_GRAD_CONFIG["num_stages"],
    )
    if splits == 1:
        return db
    return _sum_partials(db, grad_out.dtype if out_dtype is None else out_dtype)  # (F,)


def _sum_partials(partials: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(S, R) fp32 split partial sums -> (R,) in dtype, by the bias-gradient kernel itself: the partials are a
    column sum away, seen as an (S, R, 1, 1) gradient without a ReLU mask (so the whole backward stays Triton)."""
    s, r = partials.shape
    return _launch_bias_grad(partials.view(s, r, 1, 1), None, False, splits=1, out_dtype=dtype)


# ----------------------------------------------------------------------------------------------------------
# PyTorch ops and autograd
# ----------------------------------------------------------------------------------------------------------

@triton_op("triton_kernels::conv2d_fwd", mutates_args=())
def conv2d_fwd(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: list[int],
               padding: list[int], dilation: list[int], groups: int, relu: bool,
               input_precision: str) -> torch.Tensor:
    """The op behind conv2d: x (N, C, H, W), weight (F, C/groups, KH, KW), padding (top, bottom, left, right).
    Returns act(conv(x, weight) + bias) of shape (N, F, OH, OW) in x's memory format."""
    _check_op_tensors(x=x, weight=weight, bias=bias)
    out_hw = _check_geometry(x, weight, bias, stride, padding, dilation, groups, input_precision)
    return _launch_fwd(x, weight, bias, stride, padding, dilation, groups, out_hw, relu, input_precision)


@triton_op("triton_kernels::conv2d_dgrad", mutates_args=())
def conv2d_dgrad(grad_out: torch.Tensor, out: Optional[torch.Tensor], weight: torch.Tensor, x: torch.Tensor,
                 stride: list[int], padding: list[int], dilation: list[int], groups: int,
                 input_precision: str) -> torch.Tensor:
    """dL/dx (x's shape and layout). `out` is the fused-ReLU forward's output (its > 0 mask gates grad_out),
    None when the forward had no ReLU. x is read for its shape and strides only."""
    _check_op_tensors(grad_out=grad_out, out=out, weight=weight, x=x)
    _check_grad_out(grad_out, out, x, weight, stride, padding, dilation, groups, input_precision)
    return _launch_dgrad(grad_out, out, weight, x, stride, padding, dilation, groups, out is not None,
                         input_precision)


@triton_op("triton_kernels::conv2d_wgrad", mutates_args=())
def conv2d_wgrad(grad_out: torch.Tensor, out: Optional[torch.Tensor], x: torch.Tensor, weight: torch.Tensor,
                 stride: list[int], padding: list[int], dilation: list[int], groups: int,
                 input_precision: str) -> torch.Tensor:
    """dL/dweight (weight's shape and strides); weight is read for its shape and strides only."""
    _check_op_tensors(grad_out=grad_out, out=out, x=x, weight=weight)
    _check_grad_out(grad_out, out, x, weight, stride, padding, dilation, groups, input_precision)
    return _launch_wgrad(grad_out, out, x, weight, stride, padding, dilation, groups, out is not None,
                         input_precision)


@triton_op("triton_kernels::conv2d_bias_grad", mutates_args=())
def conv2d_bias_grad(grad_out: torch.Tensor, out: Optional[torch.Tensor]) -> torch.Tensor:
    """dL/dbias = grad_out (masked by out > 0 when out is given) summed over batch, height and width: (F,)."""
    _check_op_tensors(grad_out=grad_out, out=out)
    if out is not None and out.shape != grad_out.shape:
        raise ValueError(f"out shape {tuple(out.shape)} differs from grad_out shape {tuple(grad_out.shape)}")
    return _launch_bias_grad(grad_out, out, out is not None)


def _check_op_tensors(**tensors) -> None:
    for name, t in tensors.items():
        if t is not None:  # the batch may be empty (x, out, grad_out); the weights may not
            check_tensor(t, name, (1,) if name == "bias" else (4,), allow_empty=name in ("x", "out", "grad_out"))
    check_device(**tensors)
    check_same_dtype(**tensors)


def _check_grad_out(grad_out, out, x, weight, stride, padding, dilation, groups, input_precision) -> None:
    oh, ow = _check_geometry(x, weight, None, stride, padding, dilation, groups, input_precision)
    want = (x.shape[0], weight.shape[0], oh, ow)
    for name, t in (("grad_out", grad_out), ("out", out)):
        if t is not None and tuple(t.shape) != want:
            raise ValueError(f"{name} must have the forward output's shape {want}, got {tuple(t.shape)}")


def _setup_context(ctx, inputs, output):
    x, weight, bias, stride, padding, dilation, groups, relu, input_precision = inputs
    # The ReLU's backward needs only out > 0, read from the output itself: no pre-activation is kept.
    ctx.save_for_backward(x, weight, output if relu else None)
    ctx.conv_args = (stride, padding, dilation, groups, input_precision)
    ctx.has_bias = bias is not None


def _backward(ctx, grad_out):
    x, weight, out = ctx.saved_tensors
    stride, padding, dilation, groups, input_precision = ctx.conv_args
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    ops = torch.ops.triton_kernels
    dx = dw = db = None
    if need_x:
        dx = ops.conv2d_dgrad(grad_out, out, weight, x, stride, padding, dilation, groups, input_precision)
    if need_w:
        dw = ops.conv2d_wgrad(grad_out, out, x, weight, stride, padding, dilation, groups, input_precision)
    if need_b and ctx.has_bias:
        db = ops.conv2d_bias_grad(grad_out, out)
    return dx, dw, db, None, None, None, None, None, None


conv2d_fwd.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------

def _autocast(x, weight, bias):
    """Under torch.autocast, run in the autocast dtype as torch's own conv does: a custom op is not on autocast's
    list, so without this `--amp bf16` would leave the convs in fp32. The casts are recorded by autograd, so the
    fp32 parameters still get fp32 gradients."""
    device_type = x.device.type
    if not torch.is_autocast_enabled(device_type):
        return x, weight, bias
    dtype = torch.get_autocast_dtype(device_type)
    return (x.to(dtype), weight.to(dtype),  # (N, C, H, W), (F, C/groups, KH, KW) in the autocast dtype
            None if bias is None else bias.to(dtype))


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, stride=1, padding=0,
           dilation=1, groups: int = 1, relu: bool = False, input_precision: Optional[str] = None) -> torch.Tensor:
    """torch.nn.functional.conv2d in Triton, with an optional fused ReLU; autograd-aware.

    x: (N, C, H, W) or unbatched (C, H, W), NCHW or channels_last (any strides); weight: (F, C/groups, KH, KW);
    bias: (F,) or None. stride, dilation: int or pair (>= 1); padding: int, pair, 'valid' or 'same' (stride 1).
    dtypes fp32, fp16, bf16, fp64 (all the same; bf16 refused under the interpreter, which gets it wrong),
    accumulated in fp32 (fp64 for fp64). input_precision ("tf32" or "ieee") sets the
    fp32 dot; None follows torch.backends.cudnn.allow_tf32 like torch's own conv. Output (N, F, OH, OW), with

        OH = (H + 2*pad - dil*(KH-1) - 1) // stride + 1      (and OW likewise)

    in x's memory format. relu=True returns relu(conv2d(...)) computed in the GEMM epilogue. An empty batch
    (N = 0) gives an empty output, and in the backward an empty dx and zero dweight and dbias, as torch does.
    """
    check_tensor(x, "x", (3, 4), allow_empty=True)
    if min(x.shape[-3:]) < 1:  # an empty batch (N = 0) gives an empty output, as torch's conv does
        raise ValueError(f"x must have non-empty C, H, W, got shape {tuple(x.shape)}")
    if not isinstance(relu, bool):
        raise ValueError(f"relu must be a bool, got {relu!r}")
    if input_precision is None:
        input_precision = "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"
    x, weight, bias = _autocast(x, weight, bias)
    unbatched = x.dim() == 3
    xb = x.unsqueeze(0) if unbatched else x  # (N, C, H, W)
    stride, pad4, dilation = _check_conv_args(xb, weight, bias, stride, padding, dilation, groups, input_precision)
    out = torch.ops.triton_kernels.conv2d_fwd(xb, weight, bias, list(stride), list(pad4), list(dilation),
                                              groups, relu, input_precision)  # (N, F, OH, OW)
    return out.squeeze(0) if unbatched else out


def conv2d_relu(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, stride=1, padding=0,
                dilation=1, groups: int = 1, input_precision: Optional[str] = None) -> torch.Tensor:
    """relu(conv2d(x, weight, bias, ...)) as one fused op: the ReLU runs in the forward's epilogue and its mask
    inside the backward kernels. Same arguments and output size as conv2d."""
    return conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups, relu=True,
                  input_precision=input_precision)
