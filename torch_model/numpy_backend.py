"""`alexnet train --backend numpy`: the Learner (torch_model/backends.py) over numpy_ref's AlexNet and SGD.

Torch only at the edges: batches arrive as torch tensors and are handed to numpy_ref as float32 arrays; logits
and weights go back as torch tensors. Everything in between is numpy_ref (forward, cross-entropy, backward,
SGD update). Slow (~15 s per batch of 128 at 224x224 on two cores): meant for a small --limit-train.
"""
from __future__ import annotations

import numpy as np
import torch

import numpy_ref
from numpy_ref.functional import cross_entropy_backward, cross_entropy_forward
from numpy_ref.layers import Dropout


def _to_numpy(X: torch.Tensor, name: str, ndim: int) -> np.ndarray:
    if not isinstance(X, torch.Tensor) or X.ndim != ndim:
        raise ValueError(f"NumpyLearner: {name} must be a {ndim}-D torch tensor, got "
                         f"{getattr(X, 'shape', type(X).__name__)}")
    return X.detach().cpu().numpy()


class NumpyLearner:
    """numpy_ref.alexnet(variant=...) in float32 with numpy_ref.SGD (torch.optim.SGD's momentum and weight
    decay; the paper trains with momentum 0.9, weight_decay 5e-4); dropout masks from an np.random.Generator
    seeded by `seed`, whose state is part of state_dict() so a resumed run continues bit for bit."""

    def __init__(self, torch_state_dict: dict[str, torch.Tensor], lr: float, num_classes: int = 10, seed: int = 0,
                 variant: str = "d2l", momentum: float = 0.0, weight_decay: float = 0.0):
        self.device = torch.device("cpu")
        self.net = numpy_ref.alexnet(num_classes, dtype=np.float32, seed=seed, init=False,
                                     variant=variant)  # weights: loaded next
        self.net.load_state_dict({k: v.detach().cpu().numpy() for k, v in torch_state_dict.items()})
        self.rng = np.random.default_rng(seed)  # the dropout masks' generator, shared by both Dropout layers
        for layer in self.net:
            if isinstance(layer, Dropout):
                layer.rng = self.rng
        self.optimizer = numpy_ref.SGD(self.net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)

    def train(self) -> None:
        self.net.train()

    def eval(self) -> None:
        self.net.eval()

    def step(self, X: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
        x = _to_numpy(X, "X", 4).astype(np.float32, copy=False)   # (N, C, R, R): C = 1 (d2l) or 3 (paper)
        target = _to_numpy(y, "y", 1)                              # (N,)
        self.optimizer.zero_grad()
        logits = self.net.forward(x)                               # (N, classes)
        loss, cache = cross_entropy_forward(logits, target)        # ()
        self.net.backward(cross_entropy_backward(1.0, cache))      # fills every Parameter's .grad
        self.optimizer.step()
        return float(loss), torch.from_numpy(logits)

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        x = _to_numpy(X, "X", 4).astype(np.float32, copy=False)   # (N, C, R, R)
        logits = self.net.forward(x)                               # (N, classes)
        self.net.clear_cache()                                     # no backward follows: free what it would need
        return torch.from_numpy(logits)

    # --- checkpoints: torch tensors and plain Python values only, so torch.load(weights_only=True) reads them
    def state_dict(self) -> dict:
        opt = self.optimizer.state_dict()
        opt["momentum_buffer"] = [None if b is None else torch.from_numpy(b.copy()) for b in opt["momentum_buffer"]]
        return {"model": self.model_state_dict(), "optimizer": opt, "dropout_rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict({k: v.detach().cpu().numpy() for k, v in state["model"].items()})
        opt = dict(state["optimizer"])
        opt["momentum_buffer"] = [None if b is None else b.detach().cpu().numpy() for b in opt["momentum_buffer"]]
        self.optimizer.load_state_dict(opt)
        self.rng.bit_generator.state = state["dropout_rng"]

    def model_state_dict(self) -> dict[str, torch.Tensor]:
        """torch's keys ('0.weight', ...), float32 CPU tensors (copies: later steps do not change them)."""
        return {k: torch.from_numpy(v.copy()) for k, v in self.net.state_dict().items()}
