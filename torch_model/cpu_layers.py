"""Two layers of the d2l network in the form a CPU runs fastest, swapped in by the CPU learner (same math, same
parameters and state_dict keys; `use_cpu_layers`):

- conv1: oneDNN's forward, and its weight gradient as one matrix product over the patches (PatchConv2d);
- Dropout: the keep mask from torch.rand instead of bernoulli_ (RandDropout).

conv1. It sees 1 input channel (d2l; 3 in the paper's network) through an 11x11 window at stride 4. oneDNN's forward
handles that well, but its weight gradient runs at a tenth of the machine's matrix-product rate
(docs/benchmarks/README.md, CPU section: 9% of the training step for 1% of its FLOPs). Written as a GEMM, with the
batch and the output pixels as the long, reduced dimension, it is one call at the matmul's rate:

    cols[n*OH*OW + oh*OW + ow, c*KH*KW + kh*KW + kw] = x_padded[n, c, oh*s + kh, ow*s + kw]   (im2col: one copy)
    cols[:, C*KH*KW] = 1                            a column of ones: the bias's gradient comes out of the same GEMM
    [dW | db] = dy.T @ cols                         (F, C*KH*KW + 1), K = N*OH*OW

For d2l's conv1 at batch 128: cols is (373,248, 122), 91 MB in bf16, built in the backward from the saved input
(13 MB) and freed after it; the GEMM is 8.7 GFLOP. The input needs no gradient, so no col2im is run (an input that
does require one gets oneDNN's). Same parameters and state_dict keys as nn.Conv2d; the weight gradient equals
oneDNN's up to the order of the sums.

Dropout. `F.dropout` draws its mask with `bernoulli_`, which on the CPU takes ~6 ms for a (128, 4096) batch,
4x torch.rand's time for the same count of uniforms; a mask `torch.rand(x.shape) >= p` keeps each unit with the
same probability 1 - p and scales by 1 / (1 - p) as F.dropout does (inverted dropout), from the same generator,
so a seeded run stays deterministic and a resumed one equals an uninterrupted one. The masks themselves differ
from bernoulli_'s (another use of the random stream).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def im2col(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) -> (N*OH*OW, C*KH*KW + 1): every output pixel's window, one row each, and a column of ones.
    Its first C*KH*KW columns are the transpose of numpy_ref.functional's _im2col, (C*KH*KW, N*OH*OW): rows here,
    so that dy.T @ cols reduces over the long dimension in one GEMM."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = F.pad(x, (pw, pw, ph, ph)).permute(0, 2, 3, 1)                   # (N, H+2p, W+2p, C)
    patches = xp.unfold(1, kh, sh).unfold(2, kw, sw)                       # (N, OH, OW, C, KH, KW): a view
    n, oh, ow, c = patches.shape[:4]
    k = c * kh * kw
    cols = x.new_empty((n * oh * ow, k + 1))
    cols[:, k] = 1
    cols[:, :k].view(n, oh, ow, c, kh, kw).copy_(patches)                  # the one copy
    return cols


class _Conv1(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight.to(x.dtype), bias.to(x.dtype), stride, padding)    # oneDNN

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        f = weight.shape[0]
        cols = im2col(x, weight.shape[2:], ctx.stride, ctx.padding)               # (N*OH*OW, K + 1)
        grad = dy.permute(0, 2, 3, 1).reshape(-1, f).t() @ cols                   # (F, K + 1)
        grad = grad.to(weight.dtype)
        return None, grad[:, :-1].reshape(weight.shape), grad[:, -1], None, None


class PatchConv2d(nn.Conv2d):
    """nn.Conv2d whose weight gradient is one GEMM over im2col's patches (CPU, an input without gradient)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.requires_grad:
            return super().forward(x)
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        with torch.autocast("cpu", enabled=False):     # the Function casts as autocast would: x, W, b to dtype
            return _Conv1.apply(x.to(dtype), self.weight, self.bias, self.stride, self.padding)


class RandDropout(nn.Dropout):
    """nn.Dropout whose keep mask is torch.rand(x.shape) >= p (see the module's docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.inplace:
            return super().forward(x)
        if self.p == 1:
            return x * 0
        keep = torch.rand(x.shape, device=x.device) >= self.p
        return x * keep.to(x.dtype).mul_(1 / (1 - self.p))


def use_cpu_layers(net: nn.Sequential) -> None:
    """Swap conv1 for a PatchConv2d and every nn.Dropout for a RandDropout, sharing the Parameters."""
    use_patch_conv1(net)
    for i, layer in enumerate(net):
        if type(layer) is nn.Dropout:
            net[i] = RandDropout(layer.p, layer.inplace)


def use_patch_conv1(net: nn.Sequential) -> bool:
    """Swap the network's first layer for a PatchConv2d sharing its Parameters (the optimizer, the state_dict and
    every picture see the same tensors) when it is a plain few-channel nn.Conv2d; True if swapped."""
    conv = net[0]
    if (type(conv) is not nn.Conv2d or conv.in_channels > 3 or conv.groups != 1 or conv.bias is None
            or conv.padding_mode != "zeros" or conv.dilation != (1, 1) or isinstance(conv.padding, str)):
        return False
    patch = PatchConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                        device="meta")
    patch.weight, patch.bias = conv.weight, conv.bias
    net[0] = patch
    return True
