"""d2l's AlexNet in NumPy: its 21 layers, torch's state_dict keys (0.*, 3.*, 6.*, 8.*, 10.*, 14.*, 17.*,
20.*), so `net.load_state_dict({k: v.numpy() for k, v in torch_model.alexnet().state_dict().items()})` works.

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
"""
from __future__ import annotations

import numpy as np

from numpy_ref.layers import Conv2d, Dropout, Flatten, Linear, MaxPool2d, Module, ReLU, Sequential, uniform

__all__ = ["alexnet", "xavier_uniform_"]


def xavier_uniform_(weight: np.ndarray, rng: np.random.Generator) -> None:
    """d2l's init, torch.nn.init.xavier_uniform_: U(-a, a), a = sqrt(6 / (fan_in + fan_out)),
    fan_in = in * KH * KW, fan_out = out * KH * KW. In place."""
    receptive = int(np.prod(weight.shape[2:])) if weight.ndim > 2 else 1
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    weight[...] = uniform(rng, np.sqrt(6.0 / (fan_in + fan_out)), weight.shape, weight.dtype)


def alexnet(num_classes: int = 10, dtype=np.float32, seed: int | None = 0, init: bool = True) -> Sequential:
    """d2l's AlexNet with d2l's init (xavier-uniform weights, torch's default biases), all drawn from
    np.random.default_rng(seed) in `dtype`. The same generator, kept as `net.rng`, draws the dropout masks.
    init=False skips the xavier pass (torch's default init stays), for weights about to be loaded anyway."""
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    rng = np.random.default_rng(seed)
    kw = dict(dtype=dtype, rng=rng)
    net = Sequential(
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
    )
    for name, p in net.named_parameters():
        if init and name.endswith("weight"):
            xavier_uniform_(p.data, rng)
    net.rng = rng
    return net


def num_parameters(net: Module) -> int:
    return sum(p.data.size for p in net.parameters())
