"""torch_model: the d2l AlexNet in PyTorch, Fashion-MNIST loading, training, benchmarks and the `alexnet` CLI."""
from torch_model.model import alexnet, init_weights, num_parameters

__all__ = ["alexnet", "init_weights", "num_parameters"]
