"""`alexnet summary`: d2l's `layer_summary` grown up — each layer's output shape for one 1x1x224x224 image (the
seed's comment column), its parameters and its forward FLOPs, with totals. `--variant paper` does the same for the
2012 paper's network (one 3x227x227 image), set against the paper's "60 million parameters and 650,000 neurons".

FLOPs counted: conv 2*F*OH*OW*(C/groups)*KH*KW (+ F*OH*OW for the bias), linear 2*in*out (+ out for the bias),
ReLU 1 per element, max pool KH*KW-1 comparisons per output, flatten/dropout 0 (eval mode), local response
norm 2*size+4 per element (size squares and adds over the window, then k + alpha*s, the power, the divide).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import torch
from torch import nn

from torch_model.model import INPUT_SHAPES, VARIANTS, alexnet, check_resize


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
    if isinstance(module, nn.LocalResponseNorm):
        return n_out * (2 * module.size + 4)
    return 0


def layer_summary(net: nn.Sequential | None = None, resize: int | None = None, variant: str = "d2l",
                  num_classes: int | None = None) -> list[LayerInfo]:
    """Run one random image through `net` (d2l's AlexNet by default, or `variant`'s), layer by layer, in eval mode."""
    channels, default_size, _ = INPUT_SHAPES[variant]
    resize = default_size if resize is None else resize
    if net is None:
        net = alexnet(num_classes or (10 if variant == "d2l" else 1000), init=False, variant=variant)
    net.eval()
    x = torch.rand(1, channels, resize, resize)            # (1, 1, 224, 224) / (1, 3, 227, 227)
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


def neurons(rows: list[LayerInfo]) -> int:
    """The paper's count of neurons: the outputs of the five convolutional and three dense layers."""
    return sum(math.prod(r.shape) for r in rows if r.name in ("Conv2d", "Linear"))


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", choices=VARIANTS, default="d2l",
                        help="d2l's AlexNet (default, 1x224x224, 10 classes) or the 2012 paper's (3x227x227, LRN, "
                             "two groups, 1000 classes)")
    parser.add_argument("--resize", type=int, default=None, help="input height/width (224 for d2l's, 227 for the paper's)")
    parser.add_argument("--num-classes", type=int, default=None, help="output classes (10 for d2l's, 1000 for the paper's)")


def run(args: argparse.Namespace) -> int:
    channels, default_size, _ = INPUT_SHAPES[args.variant]
    resize = default_size if args.resize is None else args.resize
    check_resize(resize, variant=args.variant)
    if args.num_classes is not None and args.num_classes < 1:
        raise ValueError(f"--num-classes must be a positive int, got {args.num_classes}")
    rows = layer_summary(resize=resize, variant=args.variant, num_classes=args.num_classes)
    name = "d2l's AlexNet" if args.variant == "d2l" else "AlexNet as in the 2012 paper (Krizhevsky et al.)"
    print(f"{name} on one 1x{channels}x{resize}x{resize} image")
    print(format_summary(rows))
    if args.variant == "paper":
        params = sum(r.params for r in rows)
        print(f"the paper: \"60 million parameters and 650,000 neurons\"; here: {params / 1e6:.1f} million parameters "
              f"and {neurons(rows):,} neurons (the outputs of the 5 convolutional and 3 dense layers)")
    return 0
