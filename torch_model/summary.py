"""`alexnet summary`: d2l's `layer_summary` grown up — each layer's output shape for one 1x1x224x224 image (the
seed's comment column), its parameters and its forward FLOPs, with totals.

FLOPs counted: conv 2*F*OH*OW*(C/groups)*KH*KW (+ F*OH*OW for the bias), linear 2*in*out (+ out for the bias),
ReLU 1 per element, max pool KH*KW-1 comparisons per output, flatten/dropout 0 (eval mode).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch import nn

from torch_model.model import alexnet, check_resize


@dataclass
class LayerInfo:
    index: int
    name: str
    shape: tuple[int, ...]
    params: int
    flops: int


def _flops(module: nn.Module, out: torch.Tensor) -> int:
    n_out = out.numel()
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        per_out = 2 * (module.in_channels // module.groups) * kh * kw
        return n_out * per_out + (n_out if module.bias is not None else 0)
    if isinstance(module, nn.Linear):
        return n_out * 2 * module.in_features + (n_out if module.bias is not None else 0)
    if isinstance(module, nn.ReLU):
        return n_out
    if isinstance(module, nn.MaxPool2d):
        k = module.kernel_size
        kh, kw = (k, k) if isinstance(k, int) else k
        return n_out * (kh * kw - 1)
    return 0


def layer_summary(net: nn.Sequential | None = None, resize: int = 224) -> list[LayerInfo]:
    """Run one random image through `net` (the seed AlexNet by default), layer by layer, in eval mode."""
    net = alexnet(init=False) if net is None else net
    net.eval()
    x = torch.rand(1, 1, resize, resize)                   # (1, 1, 224, 224)
    rows = []
    with torch.no_grad():
        for i, layer in enumerate(net):
            x = layer(x)
            rows.append(LayerInfo(i, layer.__class__.__name__, tuple(x.shape),
                                  sum(p.numel() for p in layer.parameters(recurse=False)), _flops(layer, x)))
    return rows


def format_summary(rows: list[LayerInfo]) -> str:
    header = f"{'#':>2}  {'layer':<10} {'output shape':<20} {'params':>12} {'FLOPs':>15}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r.index:>2}  {r.name:<10} {str(list(r.shape)):<20} {r.params:>12,} {r.flops:>15,}")
    lines.append("-" * len(header))
    total_p, total_f = sum(r.params for r in rows), sum(r.flops for r in rows)
    lines.append(f"{'':>2}  {'total':<10} {'':<20} {total_p:>12,} {total_f:>15,}")
    lines.append(f"forward: {total_f / 1e9:.2f} GFLOP per image; training (fwd + bwd ~ 3x fwd) at batch 128: "
                 f"{3 * 128 * total_f / 1e12:.2f} TFLOP per step")
    return "\n".join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resize", type=int, default=224, help="input height/width (the seed's 224)")


def run(args: argparse.Namespace) -> int:
    check_resize(args.resize)
    print(f"AlexNet (d2l seed) on one 1x1x{args.resize}x{args.resize} image")
    print(format_summary(layer_summary(resize=args.resize)))
    return 0
