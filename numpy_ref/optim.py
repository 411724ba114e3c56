"""Stochastic gradient descent, torch.optim.SGD's update rule (d2l trains AlexNet with plain SGD, lr 0.01):

    d_p = p.grad + weight_decay * p
    buf = d_p                                      (first step)
    buf = momentum * buf + (1 - dampening) * d_p   (later steps)
    d_p = d_p + momentum * buf if nesterov else buf   (only with momentum)
    p -= lr * d_p                                  (in place; d_p: torch's name for the step's gradient)
"""
from __future__ import annotations

import numpy as np

from numpy_ref.layers import Parameter

__all__ = ["SGD"]


class SGD:
    def __init__(self, params, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        self.params: list[Parameter] = list(params)
        if not self.params or not all(isinstance(p, Parameter) for p in self.params):
            raise ValueError("SGD: params must be a non-empty iterable of numpy_ref Parameters "
                             "(use model.parameters())")
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: lr, momentum and weight_decay must be >= 0, got lr={lr}, "
                             f"momentum={momentum}, weight_decay={weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening 0")
        self.lr, self.momentum, self.dampening = float(lr), float(momentum), float(dampening)
        self.weight_decay, self.nesterov = float(weight_decay), bool(nesterov)
        self.momentum_buffer: list[np.ndarray | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """One update of every parameter that has a gradient, in place (p.data), torch.optim.SGD's rule:
            d_p = p.grad + weight_decay * p.data
            buf = d_p on the first step, else momentum * buf + (1 - dampening) * d_p   (only with momentum;
                  kept per parameter in self.momentum_buffer)
            d_p = d_p + momentum * buf if nesterov else buf                            (only with momentum)
            p.data -= lr * d_p"""
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            d_p = p.grad                                          # like p
            if self.weight_decay:
                d_p = d_p + self.weight_decay * p.data
            if self.momentum:
                buf = self.momentum_buffer[i]
                if buf is None:
                    buf = self.momentum_buffer[i] = d_p.copy()     # like p
                else:
                    buf *= self.momentum
                    buf += (1 - self.dampening) * d_p
                d_p = d_p + self.momentum * buf if self.nesterov else buf
            p.data -= p.data.dtype.type(self.lr) * d_p

    def state_dict(self) -> dict:
        return {"lr": self.lr, "momentum": self.momentum, "dampening": self.dampening,
                "weight_decay": self.weight_decay, "nesterov": self.nesterov,
                "momentum_buffer": list(self.momentum_buffer)}

    def load_state_dict(self, state: dict) -> None:
        buffers = list(state["momentum_buffer"])
        if len(buffers) != len(self.params):
            raise ValueError(f"SGD.load_state_dict: {len(buffers)} momentum buffers for {len(self.params)} params")
        for p, b in zip(self.params, buffers):
            if b is not None and np.shape(b) != p.shape:
                raise ValueError(f"SGD.load_state_dict: momentum buffer {np.shape(b)} for a parameter {p.shape}")
        self.lr, self.momentum, self.dampening = float(state["lr"]), float(state["momentum"]), float(state["dampening"])
        self.weight_decay, self.nesterov = float(state["weight_decay"]), bool(state["nesterov"])
        self.momentum_buffer = [None if b is None else np.array(b, dtype=p.data.dtype)
                                for p, b in zip(self.params, buffers)]
