"""AlexNet in NumPy, both variants of torch_model.alexnet with its state_dict keys, so
`net.load_state_dict({k: v.numpy() for k, v in torch_model.alexnet(variant=...).state_dict().items()})` works.

variant="d2l" (the default): d2l's AlexNet, 21 layers, keys 0.*, 3.*, 6.*, 8.*, 10.*, 14.*, 17.*, 20.*

    idx layer                          output for one 1x224x224 image
     0  Conv2d(1, 96, k=11, s=4, p=1)  (1, 96, 54, 54)    1 ReLU   2 MaxPool2d(3, 2)  (1, 96, 26, 26)
     3  Conv2d(96, 256, k=5, p=2)      (1, 256, 26, 26)   4 ReLU   5 MaxPool2d(3, 2)  (1, 256, 12, 12)
     6  Conv2d(256, 384, k=3, p=1)     (1, 384, 12, 12)   7 ReLU
     8  Conv2d(384, 384, k=3, p=1)     (1, 384, 12, 12)   9 ReLU
    10  Conv2d(384, 256, k=3, p=1)     (1, 256, 12, 12)  11 ReLU  12 MaxPool2d(3, 2)  (1, 256, 5, 5)
    13  Flatten                        (1, 6400)
    14  Linear(6400, 4096) 15 ReLU 16 Dropout(0.5)
    17  Linear(4096, 4096) 18 ReLU 19 Dropout(0.5)
    20  Linear(4096, 10)               (1, 10)

variant="paper": Krizhevsky, Sutskever and Hinton (NeurIPS 2012), 23 layers, keys 0.*, 4.*, 8.*, 10.*, 12.*,
16.*, 19.*, 22.*; LRN after conv1 and conv2, conv2/conv4/conv5 in two groups (the paper's two GPUs)

    idx layer                                    output for one 3x227x227 image
     0  Conv2d(3, 96, k=11, s=4)                 (1, 96, 55, 55)    1 ReLU
     2  LocalResponseNorm(5, 5e-4, 0.75, 2)                         3 MaxPool2d(3, 2)  (1, 96, 27, 27)
     4  Conv2d(96, 256, k=5, p=2, groups=2)      (1, 256, 27, 27)   5 ReLU
     6  LocalResponseNorm(5, 5e-4, 0.75, 2)                         7 MaxPool2d(3, 2)  (1, 256, 13, 13)
     8  Conv2d(256, 384, k=3, p=1)               (1, 384, 13, 13)   9 ReLU
    10  Conv2d(384, 384, k=3, p=1, groups=2)     (1, 384, 13, 13)  11 ReLU
    12  Conv2d(384, 256, k=3, p=1, groups=2)     (1, 256, 13, 13)  13 ReLU  14 MaxPool2d(3, 2)  (1, 256, 6, 6)
    15  Flatten                                  (1, 9216)
    16  Linear(9216, 4096) 17 ReLU 18 Dropout(0.5)
    19  Linear(4096, 4096) 20 ReLU 21 Dropout(0.5)
    22  Linear(4096, num_classes)                (1, num_classes)
"""
from __future__ import annotations

import numpy as np

from numpy_ref.layers import (
    Conv2d, Dropout, Flatten, Linear, LocalResponseNorm, MaxPool2d, Module, ReLU, Sequential, uniform,
)

__all__ = ["alexnet", "xavier_uniform_", "num_parameters", "VARIANTS", "PAPER_LRN"]

VARIANTS = ("d2l", "paper")
# The paper's LRN, b = a / (k + alpha' * sum over 5 neighbouring channels of a^2)^beta with k=2, alpha'=1e-4,
# beta=0.75, in torch's terms: torch divides alpha by the window size, so alpha = 5 * 1e-4 (torch_model's too).
PAPER_LRN = dict(size=5, alpha=5e-4, beta=0.75, k=2.0)


def xavier_uniform_(weight: np.ndarray, rng: np.random.Generator) -> None:
    """d2l's init, torch.nn.init.xavier_uniform_: U(-a, a), a = sqrt(6 / (fan_in + fan_out)),
    fan_in = in * KH * KW, fan_out = out * KH * KW. In place."""
    receptive = int(np.prod(weight.shape[2:])) if weight.ndim > 2 else 1
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    weight[...] = uniform(rng, np.sqrt(6.0 / (fan_in + fan_out)), weight.shape, weight.dtype)


def _d2l_layers(num_classes: int, kw: dict, rng: np.random.Generator) -> list[Module]:
    return [
        Conv2d(1, 96, kernel_size=11, stride=4, padding=1, **kw), ReLU(),    # (N, 96, 54, 54)
        MaxPool2d(kernel_size=3, stride=2),                                  # (N, 96, 26, 26)
        Conv2d(96, 256, kernel_size=5, padding=2, **kw), ReLU(),             # (N, 256, 26, 26)
        MaxPool2d(kernel_size=3, stride=2),                                  # (N, 256, 12, 12)
        Conv2d(256, 384, kernel_size=3, padding=1, **kw), ReLU(),            # (N, 384, 12, 12)
        Conv2d(384, 384, kernel_size=3, padding=1, **kw), ReLU(),            # (N, 384, 12, 12)
        Conv2d(384, 256, kernel_size=3, padding=1, **kw), ReLU(),            # (N, 256, 12, 12)
        MaxPool2d(kernel_size=3, stride=2),                                  # (N, 256, 5, 5)
        Flatten(),                                                           # (N, 6400)
        Linear(6400, 4096, **kw), ReLU(), Dropout(p=0.5, rng=rng),           # (N, 4096)
        Linear(4096, 4096, **kw), ReLU(), Dropout(p=0.5, rng=rng),           # (N, 4096)
        Linear(4096, num_classes, **kw),                                     # (N, classes)
    ]


def _paper_layers(num_classes: int, kw: dict, rng: np.random.Generator) -> list[Module]:
    return [
        Conv2d(3, 96, kernel_size=11, stride=4, **kw), ReLU(),                # (N, 96, 55, 55)
        LocalResponseNorm(**PAPER_LRN),                                       # (N, 96, 55, 55)
        MaxPool2d(kernel_size=3, stride=2),                                   # (N, 96, 27, 27): overlapping pooling
        Conv2d(96, 256, kernel_size=5, padding=2, groups=2, **kw), ReLU(),    # (N, 256, 27, 27)
        LocalResponseNorm(**PAPER_LRN),                                       # (N, 256, 27, 27)
        MaxPool2d(kernel_size=3, stride=2),                                   # (N, 256, 13, 13)
        Conv2d(256, 384, kernel_size=3, padding=1, **kw), ReLU(),             # (N, 384, 13, 13): across groups
        Conv2d(384, 384, kernel_size=3, padding=1, groups=2, **kw), ReLU(),   # (N, 384, 13, 13)
        Conv2d(384, 256, kernel_size=3, padding=1, groups=2, **kw), ReLU(),   # (N, 256, 13, 13)
        MaxPool2d(kernel_size=3, stride=2),                                   # (N, 256, 6, 6)
        Flatten(),                                                            # (N, 9216)
        Linear(9216, 4096, **kw), ReLU(), Dropout(p=0.5, rng=rng),            # (N, 4096)
        Linear(4096, 4096, **kw), ReLU(), Dropout(p=0.5, rng=rng),            # (N, 4096)
        Linear(4096, num_classes, **kw),                                      # (N, classes)
    ]


def _paper_init(net: Sequential, rng: np.random.Generator) -> None:
    """The paper's init (section 5), as torch_model's: every weight from N(0, 0.01^2); biases 1 in conv2, conv4,
    conv5 and the two hidden dense layers, 0 in conv1, conv3 and the output layer."""
    layers = [m for m in net if isinstance(m, (Conv2d, Linear))]          # conv1..conv5, fc6, fc7, fc8
    for i, m in enumerate(layers):
        w = rng.standard_normal(m.weight.shape, dtype=m.weight.data.dtype)  # drawn in the weight's dtype
        w *= 0.01
        m.weight.data[...] = w
        m.bias.data[...] = 1.0 if i in (1, 3, 4, 5, 6) else 0.0


def alexnet(num_classes: int = 10, dtype=np.float32, seed: int | None = 0, init: bool = True,
            variant: str = "d2l") -> Sequential:
    """variant="d2l" (the default): d2l's AlexNet with d2l's init (xavier-uniform weights, torch's default
    biases). variant="paper": the 2012 paper's network (3x227x227 input; pass num_classes=1000 for ImageNet's
    classes) with its N(0, 0.01) init. Every number is drawn from np.random.default_rng(seed) in `dtype`; the
    same generator, kept as `net.rng`, draws the dropout masks. init=False skips the variant's init pass
    (torch's default init stays), for weights about to be loaded anyway."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    rng = np.random.default_rng(seed)
    kw = dict(dtype=dtype, rng=rng)
    net = Sequential(*(_d2l_layers if variant == "d2l" else _paper_layers)(num_classes, kw, rng))
    if init and variant == "d2l":
        for name, p in net.named_parameters():
            if name.endswith("weight"):
                xavier_uniform_(p.data, rng)
    elif init:
        _paper_init(net, rng)
    net.rng = rng
    return net


def num_parameters(net: Module) -> int:
    return sum(p.data.size for p in net.parameters())


SUFFIXED = {"ReLU": "relu", "LocalResponseNorm": "lrn", "MaxPool2d": "pool", "Dropout": "drop"}


def layer_names(net) -> list[str]:
    """Every layer's name as the 2012 paper numbers AlexNet's: conv1..conv5, fc6..fc8, and a ReLU, LRN, pool or
    dropout after them named by the number of the conv or FC layer before it (relu1, lrn1, pool1, ..., pool5,
    relu6, drop6, ..., fc8). By class name (a subclass's too), so numpy_ref's Sequential and torch's nn.Sequential
    get the same names."""
    names, conv, fc = [], 0, 5
    for layer in net:
        classes = [c.__name__ for c in type(layer).__mro__]
        kind = next((c for c in classes if c in ("Conv2d", "Linear", "Flatten", *SUFFIXED)), classes[0])
        if kind == "Conv2d":
            conv += 1
            names.append(f"conv{conv}")
        elif kind == "Linear":
            fc += 1
            names.append(f"fc{fc}")
        elif kind == "Flatten":
            names.append("flatten")
        elif kind in SUFFIXED:
            names.append(f"{SUFFIXED[kind]}{fc if fc > 5 else conv}")
        else:
            raise ValueError(f"layer_names: a {kind} layer is not one of AlexNet's")
    return names
