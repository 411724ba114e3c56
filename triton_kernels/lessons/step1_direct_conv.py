"""Step 1: direct convolution, the formula as a loop (numpy_ref.naive.conv2d_forward, one filter at a time).

    out[n, f, oh, ow] = bias[f] + sum_{c, kh, kw} x[n, c, oh*s - p + kh, ow*s - p + kw] * w[f, c, kh, kw]
    OH = (H + 2*p - KH) // s + 1

What it does. A program owns BLOCK output pixels m = (n, oh, ow) of one filter f (grid: M/BLOCK x F). It walks
(c, kh, kw) one at a time: one weight (a scalar, the same for the whole block), one input pixel per lane, one
fused multiply-add per lane. Bias and ReLU are applied afterwards by torch (harness.bias_relu).

Napkin math (conv2 at batch 128, bf16: M = N*OH*OW = 86,528, F = 256, K = C*KH*KW = 2,400):
    FLOPs  2*M*F*K = 106.3 GFLOP; the fewest bytes x + w + y = 16.6 + 1.2 + 44.3 = 62 MB: 1,711 FLOP/byte, far
           above the H200's balance point (~790 TFLOP/s bf16 measured / 4.3 TB/s copy = ~180): compute bound.
    Here every FMA needs its own load and its own address and padding arithmetic (ih, iw, four compares, an
    address), so an SM retires perhaps one useful FMA per ~8 instructions, on the FP32 pipes (the datasheet's
    ~67 TFLOP/s), never on the tensor cores: at best ~1.6 ms for conv2 where the tensor-core floor is 0.13 ms.
    Each x pixel is also re-read once per filter (F = 256 times) through L1/L2: 4.2 GB of cache traffic.

sm_90 codegen (specs.py, `python -m triton_kernels.codegen --module triton_kernels.lessons.specs`): no HGMMA or
HMMA (no tensor cores), no shared memory, no spills: a plain FMA loop.

What it costs: the simplest kernel that can be right, and the reference for every step after it.
Next (step 2): the same sum as a matrix product, so the tensor cores can do it.
"""
from __future__ import annotations

import sys

import torch
import triton
import triton.language as tl

from triton_kernels.lessons.harness import bias_relu, check_conv_args, main

KIND, PASSES = "conv", ("fwd",)
# Output pixels per program: 4 warps x 32 lanes, one pixel each. Changing it (a power of two)? Rerun the self-check
# and `python -m triton_kernels.codegen --module triton_kernels.lessons.specs`.
BLOCK = 128


# out[n, f, oh, ow] = sum_{c, kh, kw} x[n, c, oh*s - p + kh, ow*s - p + kw] * w[f, c, kh, kw]   (NCHW, contiguous)
@triton.jit
def _conv2d_direct_kernel(
    x_ptr, w_ptr, out_ptr,  # pointers: x (N, C, H, W), w (F, C, KH, KW), out (N, F, OH, OW)
    M, C, H, W, F, OH, OW, KH, KW,  # sizes, M = N*OH*OW
    stride, padding,
    BLOCK: tl.constexpr,
):
    pid_m = tl.program_id(0)
    f = tl.program_id(1)  # one filter per program
    offs_m = pid_m * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,) output pixels m = (n, oh, ow)
    m_mask = offs_m < M  # (BLOCK,)
    n = offs_m // (OH * OW)  # (BLOCK,)
    oh = (offs_m // OW) % OH  # (BLOCK,)
    ow = offs_m % OW  # (BLOCK,)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)  # (BLOCK,) fp32 accumulators, one per lane
    for c in range(0, C):
        for kh in range(0, KH):
            ih = oh * stride - padding + kh  # (BLOCK,)
            for kw in range(0, KW):
                iw = ow * stride - padding + kw  # (BLOCK,)
                inside = m_mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)  # (BLOCK,) taps in the padding read 0
                xv = tl.load(x_ptr + ((n * C + c) * H + ih) * W + iw, mask=inside, other=0.0)  # (BLOCK,)
                wv = tl.load(w_ptr + ((f * C + c) * KH + kh) * KW + kw)  # scalar, the same for every lane
                acc += xv.to(tl.float32) * wv.to(tl.float32)  # (BLOCK,) one FMA per lane
    out_off = ((n * F + f) * OH + oh) * OW + ow  # (BLOCK,)
    tl.store(out_ptr + out_off, acc.to(out_ptr.dtype.element_ty), mask=m_mask)


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias=None, stride: int = 1, padding: int = 0,
           relu: bool = False) -> torch.Tensor:
    """relu?(conv2d(x, weight) + bias): x (N, C, H, W), weight (F, C, KH, KW), bias (F,) or None -> (N, F, OH, OW).
    Forward only (step 4 adds the backward)."""
    n, c, h, w, f, kh, kw, oh, ow = check_conv_args(x, weight, bias, stride, padding)
    x, weight = x.contiguous(), weight.contiguous()  # the kernel indexes NCHW: a channels_last input is copied
    out = torch.empty((n, f, oh, ow), device=x.device, dtype=x.dtype)  # (N, F, OH, OW)
    m = n * oh * ow
    _conv2d_direct_kernel[(triton.cdiv(m, BLOCK), f)](
        x, weight, out,
        m, c, h, w, f, oh, ow, kh, kw,
        stride, padding,
        BLOCK=BLOCK,
    )
    return bias_relu(out, bias, relu)


if __name__ == "__main__":
    sys.exit(main("step1_direct_conv"))
