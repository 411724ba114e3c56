"""numpy_ref: AlexNet in pure NumPy, forward and backward, readable first (no torch in here).

    numpy_ref.functional   <op>_forward / <op>_backward pairs, vectorised (also importable from numpy_ref)
    numpy_ref.naive        conv2d, max_pool2d and local_response_norm as plain loops, the reference the fast
                           ones are held to
    numpy_ref.geometry     argument checks and output sizes (conv_output_size, pool_output_size) both use
    numpy_ref.layers       Conv2d, ReLU, MaxPool2d, LocalResponseNorm, Flatten, Linear, Dropout, Sequential
                           (torch's names)
    numpy_ref.optim        SGD (momentum, weight decay)
    numpy_ref.model        alexnet(num_classes=10, variant="d2l" | "paper"): d2l's network or the 2012 paper's,
                           with torch_model's state_dict keys
    numpy_ref.gradcheck    finite differences (`alexnet gradcheck`)
    numpy_ref.idx          the Fashion-MNIST IDX reader (validated; torch_model.data uses it too)
    numpy_ref.walkthrough  one image through the network, layer by layer (`python -m numpy_ref.walkthrough`,
                           `--weights FILE.npz` for a trained one from `alexnet export`)
    numpy_ref.exercises    write an op yourself and check it (`python -m numpy_ref.exercises list`); its check
                           compares with torch too, the one place torch is imported (by `check` only)
"""
from numpy_ref.functional import (
    conv2d_backward, conv2d_forward, cross_entropy_backward, cross_entropy_forward, dropout_backward,
    dropout_forward, flatten_backward, flatten_forward, linear_backward, linear_forward,
    local_response_norm_backward, local_response_norm_forward, max_pool2d_backward, max_pool2d_forward,
    relu_backward, relu_forward,
)
from numpy_ref.layers import (
    Conv2d, Dropout, Flatten, Linear, LocalResponseNorm, MaxPool2d, Module, Parameter, ReLU, Sequential,
)
from numpy_ref.model import alexnet, num_parameters
from numpy_ref.optim import SGD

__all__ = [
    "conv2d_forward", "conv2d_backward", "max_pool2d_forward", "max_pool2d_backward",
    "local_response_norm_forward", "local_response_norm_backward", "relu_forward",
    "relu_backward", "linear_forward", "linear_backward", "dropout_forward", "dropout_backward",
    "flatten_forward", "flatten_backward", "cross_entropy_forward", "cross_entropy_backward",
    "Module", "Parameter", "Conv2d", "ReLU", "MaxPool2d", "LocalResponseNorm", "Flatten", "Linear", "Dropout",
    "Sequential", "SGD", "alexnet", "num_parameters",
]
