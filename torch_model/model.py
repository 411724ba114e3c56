"""d2l's AlexNet (chapter "Deep Convolutional Neural Networks"), exactly the seed's nn.Sequential.

Shapes for one 1x224x224 Fashion-MNIST image (the seed's comment column, `alexnet summary` prints it):

    idx module                                   output
     0  Conv2d(1, 96, k=11, s=4, p=1)            [1, 96, 54, 54]
     1  ReLU
     2  MaxPool2d(k=3, s=2)                      [1, 96, 26, 26]
     3  Conv2d(96, 256, k=5, p=2)                [1, 256, 26, 26]
     4  ReLU
     5  MaxPool2d(k=3, s=2)                      [1, 256, 12, 12]
     6  Conv2d(256, 384, k=3, p=1)               [1, 384, 12, 12]
     7  ReLU
     8  Conv2d(384, 384, k=3, p=1)               [1, 384, 12, 12]
     9  ReLU
    10  Conv2d(384, 256, k=3, p=1)               [1, 256, 12, 12]
    11  ReLU
    12  MaxPool2d(k=3, s=2)                      [1, 256, 5, 5]
    13  Flatten                                  [1, 6400]
    14  Linear(6400, 4096)  15 ReLU  16 Dropout(0.5)
    17  Linear(4096, 4096)  18 ReLU  19 Dropout(0.5)
    20  Linear(4096, 10)                         [1, 10]

46,764,746 parameters; state_dict keys 0.*, 3.*, 6.*, 8.*, 10.*, 14.*, 17.*, 20.*.

`alexnet(variant="paper", num_classes=1000)` is the 2012 paper's network instead (3x227x227, LRN, two groups):

    idx module                                          output
     0  Conv2d(3, 96, k=11, s=4)  1 ReLU                 [1, 96, 55, 55]
     2  LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2)
     3  MaxPool2d(k=3, s=2)                             [1, 96, 27, 27]
     4  Conv2d(96, 256, k=5, p=2, groups=2)  5 ReLU      [1, 256, 27, 27]
     6  LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2)
     7  MaxPool2d(k=3, s=2)                             [1, 256, 13, 13]
     8  Conv2d(256, 384, k=3, p=1)  9 ReLU               [1, 384, 13, 13]
    10  Conv2d(384, 384, k=3, p=1, groups=2)  11 ReLU    [1, 384, 13, 13]
    12  Conv2d(384, 256, k=3, p=1, groups=2)  13 ReLU    [1, 256, 13, 13]
    14  MaxPool2d(k=3, s=2)                             [1, 256, 6, 6]
    15  Flatten                                         [1, 9216]
    16  Linear(9216, 4096)  17 ReLU  18 Dropout(0.5)
    19  Linear(4096, 4096)  20 ReLU  21 Dropout(0.5)
    22  Linear(4096, 1000)                              [1, 1000]

60,965,224 parameters with 1000 classes; state_dict keys 0.*, 4.*, 8.*, 10.*, 12.*, 16.*, 19.*, 22.*.
"""
from __future__ import annotations

import torch
from torch import nn

from numpy_ref.geometry import conv_output_size, pool_output_size

BACKENDS = ("torch", "triton")
VARIANTS = ("d2l", "paper")
# (channels, height, width) of one input image, per variant
INPUT_SHAPES = {"d2l": (1, 224, 224), "paper": (3, 227, 227)}
# The paper's local response normalization, b = a / (k + alpha * sum over n=5 neighbouring channels of a^2)^beta with
# k=2, alpha=1e-4, beta=0.75. torch's LocalResponseNorm divides alpha by the window size (it averages the squares), so
# the paper's alpha of 1e-4 is torch's alpha = 5 * 1e-4.
PAPER_LRN = dict(size=5, alpha=5e-4, beta=0.75, k=2.0)
# (kind, kernel, stride, padding) of the convs and pools, in order: what decides the spatial size before Flatten
_SPATIAL_STACKS = {
    "d2l": (("conv", 11, 4, 1), ("pool", 3, 2, 0), ("conv", 5, 1, 2), ("pool", 3, 2, 0), ("conv", 3, 1, 1),
            ("conv", 3, 1, 1), ("conv", 3, 1, 1), ("pool", 3, 2, 0)),
    "paper": (("conv", 11, 4, 0), ("pool", 3, 2, 0), ("conv", 5, 1, 2), ("pool", 3, 2, 0), ("conv", 3, 1, 1),
              ("conv", 3, 1, 1), ("conv", 3, 1, 1), ("pool", 3, 2, 0)),
}
# height (= width) of the last pool's output the first Linear is built for: 256*5*5 = 6400, 256*6*6 = 9216
_FINAL_SIZE = {"d2l": 5, "paper": 6}


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def final_feature_size(resize: int, variant: str = "d2l") -> int:
    """Height (= width) of the last pool's output for a resize x resize input, layer by layer with numpy_ref's
    output-size formulas (OH = (H + 2*pad - K) // stride + 1 here); d2l: 224 -> 54 -> 26 -> 26 -> 12 -> 12 -> 12
    -> 12 -> 5, paper: 227 -> 55 -> 27 -> 27 -> 13 -> 13 -> 13 -> 13 -> 6."""
    _check_variant(variant)
    size = resize
    for kind, k, stride, pad in _SPATIAL_STACKS[variant]:
        output_size = conv_output_size if kind == "conv" else pool_output_size
        size = output_size(size, k, stride, pad) if size >= k - 2 * pad else 0
    return size


def check_resize(resize: int, flag: str = "--resize", variant: str = "d2l") -> None:
    """Only inputs whose conv/pool stack ends at the size the first Linear was built for fit: d2l's takes
    256*5*5 = 6400 features (193..224), the paper's 256*6*6 = 9216 (227..258 with its unpadded conv1)."""
    want = _FINAL_SIZE[variant] if variant in _FINAL_SIZE else _check_variant(variant)
    got = final_feature_size(resize, variant)
    if got != want:
        fits = [r for r in range(1, 512) if final_feature_size(r, variant) == want]
        default = INPUT_SHAPES[variant][1]
        raise ValueError(f"{flag} {resize}: the {variant} AlexNet takes {fits[0]}..{fits[-1]} (its first Linear needs "
                         f"256x{want}x{want} = {256 * want * want} features, and {resize} gives {max(got, 0)}x"
                         f"{max(got, 0)}); {default} is the default")


def init_weights(module: nn.Module) -> None:
    """d2l's init: xavier_uniform_ on every Conv2d/Linear weight, biases keep PyTorch's default."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.xavier_uniform_(module.weight)


def init_paper_weights(net: nn.Sequential) -> None:
    """The paper's init (section 5): every weight from N(0, 0.01^2); biases 1 in conv2, conv4, conv5 and the two
    hidden dense layers (it "accelerates the early stages of learning by providing the ReLUs with positive
    inputs"), 0 in the others."""
    layers = [m for m in net if isinstance(m, (nn.Conv2d, nn.Linear))]  # conv1..conv5, fc6, fc7, fc8
    with torch.no_grad():
        for i, m in enumerate(layers):
            nn.init.normal_(m.weight, mean=0.0, std=0.01)
            nn.init.constant_(m.bias, 1.0 if i in (1, 3, 4, 5, 6) else 0.0)


def _d2l_layers(num_classes: int) -> list[nn.Module]:
    return [
        # A larger 11x11 window to capture objects; stride 4 to cut the height and width a lot.
        nn.Conv2d(1, 96, kernel_size=11, stride=4, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        # A smaller window, padding 2 keeps height and width; more output channels.
        nn.Conv2d(96, 256, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        # Three successive convolutions with a smaller window.
        nn.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Flatten(),
        # Fully connected layers with dropout against overfitting.
        nn.Linear(6400, 4096), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(p=0.5),
        # Output layer: Fashion-MNIST has 10 classes.
        nn.Linear(4096, num_classes),
    ]


def _paper_layers(num_classes: int) -> list[nn.Module]:
    """Krizhevsky, Sutskever and Hinton (NeurIPS 2012), figure 2 and section 3. groups=2 is the paper's split over
    two GPUs: conv2, conv4 and conv5 see only the half of the channels on their own GPU; conv3 and the dense layers
    connect across."""
    return [
        nn.Conv2d(3, 96, kernel_size=11, stride=4), nn.ReLU(),              # (96, 55, 55)
        nn.LocalResponseNorm(**PAPER_LRN),
        nn.MaxPool2d(kernel_size=3, stride=2),                              # (96, 27, 27): overlapping pooling
        nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2), nn.ReLU(),  # (256, 27, 27)
        nn.LocalResponseNorm(**PAPER_LRN),
        nn.MaxPool2d(kernel_size=3, stride=2),                              # (256, 13, 13)
        nn.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(),           # (384, 13, 13)
        nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2), nn.ReLU(), # (384, 13, 13)
        nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2), nn.ReLU(), # (256, 13, 13)
        nn.MaxPool2d(kernel_size=3, stride=2),                              # (256, 6, 6)
        nn.Flatten(),                                                       # (9216,)
        # "We use dropout in the first two fully-connected layers": on the outputs of fc6 and fc7
        nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(4096, num_classes),
    ]


def alexnet(num_classes: int = 10, backend: str = "torch", init: bool = True, variant: str = "d2l") -> nn.Sequential:
    """variant="d2l" (the default): d2l's AlexNet, 1x224x224 input, xavier init. variant="paper": the 2012 paper's
    network (3x227x227 input, LRN after conv1 and conv2, grouped conv2/conv4/conv5, its N(0, 0.01) init; pass
    num_classes=1000 for ImageNet's classes). backend="triton" runs each conv+ReLU as one fused Triton op and each
    max pool (and LRN) through our Triton kernels; parameters and state_dict keys are the same either way."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    _check_variant(variant)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if variant == "d2l":
        net = nn.Sequential(*_d2l_layers(num_classes))
        if init:
            net.apply(init_weights)
    else:
        net = nn.Sequential(*_paper_layers(num_classes))
        if init:
            init_paper_weights(net)
    if backend == "triton":
        from triton_kernels.modules import tritonize  # imported late: triton is optional for the torch path

        tritonize(net)  # swaps modules in place; parameters (and so state_dict keys) are untouched
    return net


def num_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
