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
"""
from __future__ import annotations

from torch import nn

BACKENDS = ("torch", "triton")
# (kernel, stride, padding) of the convs and pools, in order: what decides the spatial size before Flatten
_SPATIAL_STACK = ((11, 4, 1), (3, 2, 0), (5, 1, 2), (3, 2, 0), (3, 1, 1), (3, 1, 1), (3, 1, 1), (3, 2, 0))


def final_feature_size(resize: int) -> int:
    """Height (= width) of the last pool's output for a resize x resize input, layer by layer
    OH = (H + 2*pad - K) // stride + 1; 224 -> 54 -> 26 -> 26 -> 12 -> 12 -> 12 -> 12 -> 5."""
    size = resize
    for k, stride, pad in _SPATIAL_STACK:
        size = (size + 2 * pad - k) // stride + 1
    return size


def check_resize(resize: int, flag: str = "--resize") -> None:
    """The first Linear takes 256*5*5 = 6400 features, so only inputs whose stack ends at 5x5 fit (193..224)."""
    if final_feature_size(resize) != 5:
        fits = [r for r in range(1, 512) if final_feature_size(r) == 5]
        raise ValueError(f"{flag} {resize}: the seed AlexNet takes {fits[0]}..{fits[-1]} (its first Linear needs "
                         f"256x5x5 = 6400 features, and {resize} gives {max(final_feature_size(resize), 0)}x"
                         f"{max(final_feature_size(resize), 0)}); 224 is the seed's")


def init_weights(module: nn.Module) -> None:
    """d2l's init: xavier_uniform_ on every Conv2d/Linear weight, biases keep PyTorch's default."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.xavier_uniform_(module.weight)


def alexnet(num_classes: int = 10, backend: str = "torch", init: bool = True) -> nn.Sequential:
    """The seed's AlexNet. backend="triton" runs each conv+ReLU as one fused Triton op and each
    max pool through the Triton pool; parameters and state_dict keys are the same either way."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    net = nn.Sequential(
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
    )
    if init:
        net.apply(init_weights)
    if backend == "triton":
        from triton_kernels.modules import tritonize  # imported late: triton is optional for the torch path

        tritonize(net)  # swaps modules in place; parameters (and so state_dict keys) are untouched
    return net


def num_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
