"""nn.Module shells over the Triton ops, and `tritonize`, which moves a torch nn.Sequential onto them in place.

    TritonConv2d(nn.Conv2d)       forward = triton_kernels.conv2d(x, weight, bias, ..., relu=self.relu)
    TritonMaxPool2d(nn.MaxPool2d)  forward = triton_kernels.max_pool2d(x, ...)
    TritonLocalResponseNorm(nn.LocalResponseNorm)  forward = triton_kernels.lrn.local_response_norm(x, ...)
    FusedReLU(nn.Identity)         stands where a ReLU was that now runs inside the conv before it

They subclass the torch modules they replace and keep the very same Parameter objects, so parameters(),
state_dict() keys and values, an optimizer built beforehand and `isinstance(m, nn.Conv2d)` all stay as they were:
a state_dict moves between the seed model and the Triton model unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

from triton_kernels.conv import conv2d
from triton_kernels.lrn import local_response_norm
from triton_kernels.pool import max_pool2d


class TritonConv2d(nn.Conv2d):
    """nn.Conv2d whose forward is the Triton implicit-GEMM conv; relu=True fuses the ReLU into its epilogue
    (and the ReLU mask into its backward). OH = (H + 2*padding - dilation*(KH-1) - 1) // stride + 1."""

    relu: bool

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, relu: bool) -> "TritonConv2d":
        """A TritonConv2d sharing conv's weight and bias Parameters (not copies) and hyper-parameters."""
        if conv.padding_mode != "zeros":
            raise ValueError(f"conv.padding_mode must be 'zeros' for the Triton conv, got {conv.padding_mode!r}")
        new = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
            dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None, device="meta",
        )
        new.weight = conv.weight  # (F, C/groups, KH, KW), the same Parameter object
        new.bias = conv.bias  # (F,) or None
        new.relu = relu
        new.train(conv.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                      relu=self.relu)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", relu=True (fused)" if self.relu else "")


class TritonMaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d through the Triton pool kernels (forward with indices, gather backward)."""

    @classmethod
    def from_pool(cls, pool: nn.MaxPool2d) -> "TritonMaxPool2d":
        return cls(pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                   return_indices=pool.return_indices, ceil_mode=pool.ceil_mode)

    def forward(self, x: torch.Tensor):
        return max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                          ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class TritonLocalResponseNorm(nn.LocalResponseNorm):
    """nn.LocalResponseNorm (the 2012 paper's LRN, torch's parametrization: alpha is divided by size) through the
    fused Triton kernels: one pass over the channel window per element forward, s recomputed in the backward."""

    @classmethod
    def from_lrn(cls, lrn: nn.LocalResponseNorm) -> "TritonLocalResponseNorm":
        new = cls(lrn.size, alpha=lrn.alpha, beta=lrn.beta, k=lrn.k)
        new.train(lrn.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k)


class FusedReLU(nn.Identity):
    """Where a ReLU stood: the conv before it applies it in its epilogue, so here the tensor passes through."""

    def extra_repr(self) -> str:
        return "fused into the previous TritonConv2d"


def tritonize(net: nn.Sequential) -> nn.Sequential:
    """Swap, in place, each Conv2d (grouped ones too) for a TritonConv2d (a directly following ReLU is fused into it
    and replaced by FusedReLU), each MaxPool2d for a TritonMaxPool2d and each LocalResponseNorm for a
    TritonLocalResponseNorm; nested nn.Sequentials too. Everything else (Linear, Dropout, Flatten, a ReLU not after
    a conv, subclasses of these modules) stays torch. Parameters are the same objects, so state_dict keys and
    values do not change. Returns net."""
    if not isinstance(net, nn.Sequential):
        raise ValueError(f"net must be an nn.Sequential, got {type(net).__name__}")
    names = list(net._modules)
    for i, name in enumerate(names):
        module = net._modules[name]
        nxt = net._modules[names[i + 1]] if i + 1 < len(names) else None
        # Exact types: a subclass may have its own forward, and the Triton modules (subclasses themselves) are
        # left alone, so tritonize(tritonize(net)) is tritonize(net).
        if type(module) is nn.Conv2d:
            fuse = type(nxt) is nn.ReLU
            net._modules[name] = TritonConv2d.from_conv(module, relu=fuse)
            if fuse:
                net._modules[names[i + 1]] = FusedReLU()
        elif type(module) is nn.MaxPool2d:
            net._modules[name] = TritonMaxPool2d.from_pool(module)
        elif type(module) is nn.LocalResponseNorm:
            net._modules[name] = TritonLocalResponseNorm.from_lrn(module)
        elif isinstance(module, nn.Sequential):
            tritonize(module)
    return net
