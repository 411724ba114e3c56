"""Thin module shells over numpy_ref.functional, with PyTorch's names, so a torch state_dict loads as is.

    N batch, C channels in, F filters out, H/W height/width, K kernel

    layer.forward(x) -> out            # keeps what backward needs
    layer.backward(dout) -> dx         # adds into each Parameter's .grad (like torch's accumulation)
    layer.parameters() / named_parameters() / state_dict() / load_state_dict(d) / grad_dict()
    layer.train() / layer.eval()       # only Dropout cares
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from numpy_ref import functional as Fn
from numpy_ref.geometry import int_pair

__all__ = ["Parameter", "Module", "Conv2d", "ReLU", "MaxPool2d", "LocalResponseNorm", "Flatten", "Linear", "Dropout",
           "Sequential"]


class Parameter:
    """An array that learns: `.data` is updated in place by the optimizer, `.grad` is None until a backward
    adds into it (and back to None after `SGD.zero_grad()`), as with torch.nn.Parameter."""

    def __init__(self, data: np.ndarray):
        self.data = data
        self.grad: np.ndarray | None = None

    def accumulate(self, grad: np.ndarray) -> None:
        if self.grad is None:
            self.grad = grad.astype(self.data.dtype, copy=False)  # backward hands over fresh arrays
        else:
            self.grad += grad

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class: children (for Sequential) and parameters by name, train/eval, state_dict."""

    def __init__(self) -> None:
        self.training = True
        self._params: dict[str, Parameter] = {}
        self._children: dict[str, Module] = {}

    # --- subclasses implement these two
    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    # --- bookkeeping, PyTorch's names
    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for name, p in self._params.items():
            yield prefix + name, p
        for cname, child in self._children.items():
            yield from child.named_parameters(f"{prefix}{cname}.")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def state_dict(self) -> dict[str, np.ndarray]:
        """name -> the parameter array itself (not a copy), torch's keys ('0.weight', '0.bias', ...)."""
        return {name: p.data for name, p in self.named_parameters()}

    def grad_dict(self) -> dict[str, np.ndarray | None]:
        """name -> the accumulated gradient (None before any backward), same keys as state_dict()."""
        return {name: p.grad for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays in place, cast to each parameter's dtype; keys and shapes must match exactly."""
        params = dict(self.named_parameters())
        missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        if missing or unexpected:
            raise ValueError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for name, p in params.items():
            value = np.asarray(state[name])
            if value.shape != p.data.shape:
                raise ValueError(f"load_state_dict: {name} has shape {p.data.shape}, the state has {value.shape}")
            p.data[...] = value

    def clear_cache(self) -> None:
        """Forget what forward kept for backward (after an inference-only forward: frees the memory)."""
        if hasattr(self, "_cache"):
            self._cache = None
        for child in self._children.values():
            child.clear_cache()

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> "Module":
        self.training = mode
        for child in self._children.values():
            child.train(mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def astype(self, dtype) -> "Module":
        """Cast every parameter (float64 for checks, float32 for speed); gradients are dropped."""
        for p in self.parameters():
            p.data, p.grad = p.data.astype(dtype), None
        return self

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        if not self._children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"  ({name}): {child!r}" for name, child in self._children.items()]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


def uniform(rng: np.random.Generator, bound: float, shape, dtype) -> np.ndarray:
    """U(-bound, bound) drawn directly in `dtype` (float32 draws are twice as fast as float64 + a cast)."""
    u = rng.random(shape, dtype=dtype)                           # shape, in [0, 1)
    u *= 2 * bound
    u -= bound
    return u


def _cached(layer: Module) -> tuple:
    if layer._cache is None:
        raise ValueError(f"{type(layer).__name__}.backward called before forward")
    cache, layer._cache = layer._cache, None  # one backward per forward, and the memory is freed
    return cache


class _WeightBias(Module):
    """What Conv2d and Linear share: a weight, an optional bias, torch's default init
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both (kaiming_uniform with a=sqrt(5)), and a backward that adds
    the functional op's gradients into them."""

    def _init_params(self, weight_shape: tuple[int, ...], fan_in: int, bias: bool, dtype,
                     rng: np.random.Generator | None) -> None:
        rng = np.random.default_rng() if rng is None else rng
        bound = 1.0 / np.sqrt(fan_in)
        self._params["weight"] = Parameter(uniform(rng, bound, weight_shape, dtype))  # weight_shape
        if bias:
            self._params["bias"] = Parameter(uniform(rng, bound, weight_shape[0], dtype))  # (out,)
        self._cache = None

    @property
    def weight(self) -> Parameter:
        return self._params["weight"]

    @property
    def bias(self) -> Parameter | None:
        return self._params.get("bias")

    def _bias_data(self) -> np.ndarray | None:
        return self.bias.data if self.bias is not None else None

    def _accumulate(self, dx: np.ndarray, dweight: np.ndarray, dbias: np.ndarray | None) -> np.ndarray:
        self.weight.accumulate(dweight)
        if self.bias is not None:
            self.bias.accumulate(dbias)
        return dx


class Conv2d(_WeightBias):
    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, dtype=np.float32, rng: np.random.Generator | None = None):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        KH, KW = int_pair(kernel_size, "kernel_size", "Conv2d")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (KH, KW)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self._init_params((out_channels, in_channels // groups, KH, KW), in_channels // groups * KH * KW, bias,
                          dtype, rng)  # weight (F, C/G, KH, KW), bias (F,)

    def forward(self, x):
        out, self._cache = Fn.conv2d_forward(x, self.weight.data, self._bias_data(), self.stride, self.padding,
                                             self.dilation, self.groups)  # (N, F, OH, OW)
        return out

    def backward(self, dout):
        return self._accumulate(*Fn.conv2d_backward(dout, _cached(self)))

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}" + (f", groups={self.groups}" if self.groups != 1 else ""))


class Linear(_WeightBias):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=np.float32,
                 rng: np.random.Generator | None = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_params((out_features, in_features), in_features, bias, dtype, rng)  # weight (out, in), bias (out,)

    def forward(self, x):
        out, self._cache = Fn.linear_forward(x, self.weight.data, self._bias_data())  # (..., out)
        return out

    def backward(self, dout):
        return self._accumulate(*Fn.linear_backward(dout, _cached(self)))

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}"


class ReLU(Module):
    def __init__(self):
        super().__init__()
        self._cache = None

    def forward(self, x):
        out, self._cache = Fn.relu_forward(x)
        return out

    def backward(self, dout):
        return Fn.relu_backward(dout, _cached(self))


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.ceil_mode = dilation, ceil_mode
        self._cache = None

    def forward(self, x):
        out, self._cache = Fn.max_pool2d_forward(x, self.kernel_size, self.stride, self.padding, self.dilation,
                                                 self.ceil_mode)  # (N, C, OH, OW)
        return out

    def backward(self, dout):
        return Fn.max_pool2d_backward(dout, _cached(self))

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class LocalResponseNorm(Module):
    """torch.nn.LocalResponseNorm: out = x / (k + alpha/size * sum of x^2 over `size` neighbouring channels)^beta
    (numpy_ref.functional.local_response_norm_forward). No parameters."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self._cache = None

    def forward(self, x):
        out, self._cache = Fn.local_response_norm_forward(x, self.size, self.alpha, self.beta, self.k)  # like x
        return out

    def backward(self, dout):
        return Fn.local_response_norm_backward(dout, _cached(self))

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class Flatten(Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim
        self._cache = None

    def forward(self, x):
        out, self._cache = Fn.flatten_forward(x, self.start_dim, self.end_dim)  # (N, C*H*W)
        return out

    def backward(self, dout):
        return Fn.flatten_backward(dout, _cached(self))


class Dropout(Module):
    """p is the drop probability (torch's). Masks come from `rng`, an np.random.Generator the model shares,
    so a seeded run is reproducible and its state can be saved and restored."""

    def __init__(self, p: float = 0.5, rng: np.random.Generator | None = None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p!r}")
        self.p = p
        self.rng = np.random.default_rng() if rng is None else rng
        self._cache = None

    def forward(self, x):
        out, self._cache = Fn.dropout_forward(x, self.p, self.training, self.rng)
        return out

    def backward(self, dout):
        return Fn.dropout_backward(dout, _cached(self))

    def extra_repr(self):
        return f"p={self.p}"


class Sequential(Module):
    """Children named '0', '1', ... so parameter names are torch's ('3.weight'); backward runs them in reverse."""

    def __init__(self, *layers: Module):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise ValueError(f"Sequential: layer {i} is a {type(layer).__name__}, not a numpy_ref Module")
            self._children[str(i)] = layer

    def __getitem__(self, i: int) -> Module:
        return list(self._children.values())[i]

    def __len__(self) -> int:
        return len(self._children)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._children.values())

    def forward(self, x):
        for layer in self._children.values():
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(self._children.values()):
            dout = layer.backward(dout)
        return dout
