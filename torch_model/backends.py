"""What the training loop needs from a backend, and the backends that provide it.

The loop in torch_model/train.py talks only to a Learner:

    learner.train() / learner.eval()
    loss, logits = learner.step(X, y)    # one SGD step on a batch; X (N, 1, R, R) float32, y (N,) int64
                                         # loss: mean cross-entropy (python float), logits (N, classes) detached
    logits = learner.predict(X)          # no grad, eval mode is the caller's business
    learner.state_dict() / learner.load_state_dict(d)   # everything a resume needs: weights, optimizer, RNGs
    learner.model_state_dict()           # the weights alone, torch's keys, as torch tensors

"torch" and "triton" run torch_model.alexnet(backend=..., variant=...) with torch.optim.SGD; "numpy" runs
numpy_ref.alexnet with numpy_ref's SGD (torch_model/numpy_backend.py), on the CPU. The SGD is the seed's (plain, lr)
unless momentum / weight_decay are given (the paper's 0.9 and 5e-4): the same arguments as torch.optim.SGD.
"""
from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from torch_model.device import check_amp
from torch_model.model import alexnet

LEARNER_BACKENDS = ("torch", "triton", "numpy")


class Learner(Protocol):
    device: torch.device

    def train(self) -> None: ...
    def eval(self) -> None: ...
    def step(self, X: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]: ...
    def predict(self, X: torch.Tensor) -> torch.Tensor: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...
    def model_state_dict(self) -> dict[str, torch.Tensor]: ...


class TorchLearner:
    """The seed's training step: net(X) -> cross_entropy -> backward -> SGD, optionally under bf16 autocast."""

    def __init__(self, net: nn.Module, lr: float, device: torch.device, amp: str = "none",
                 channels_last: bool = False, momentum: float = 0.0, weight_decay: float = 0.0):
        # channels_last: weights and each batch in NHWC order (the Triton convs then load contiguous channel
        # vectors; cuDNN has its own NHWC kernels). Same math; sums may differ in the last bits (another order).
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net = net.to(device=device, memory_format=self.memory_format)
        self.device = device
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.loss_fn = nn.CrossEntropyLoss()
        self.amp = amp  # "none" | "bf16" (checked by make_learner: torch_model.device.check_amp)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp == "bf16")

    def train(self) -> None:
        self.net.train()

    def eval(self) -> None:
        self.net.eval()

    def step(self, X: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        X = X.contiguous(memory_format=self.memory_format)  # (N, C, R, R)
        with self._autocast():
            logits = self.net(X)                      # (N, classes)
            loss = self.loss_fn(logits.float(), y)    # mean over the batch
        loss.backward()
        self.optimizer.step()
        return loss.item(), logits.detach().float()

    @torch.no_grad()
    def predict(self, X: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.net(X.contiguous(memory_format=self.memory_format)).float()

    def state_dict(self) -> dict:
        return {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def model_state_dict(self) -> dict[str, torch.Tensor]:
        return self.net.state_dict()


def make_learner(backend: str, lr: float, device: torch.device, num_classes: int = 10,
                 amp: str = "none", seed: int = 0, channels_last: bool = False, variant: str = "d2l",
                 momentum: float = 0.0, weight_decay: float = 0.0) -> Learner:
    """Build the `variant` model for `backend` with its init (torch's RNG must be seeded by the caller)."""
    check_backend(backend, variant)
    check_amp(amp, backend, device, channels_last)
    if backend == "numpy":
        if device.type != "cpu":
            raise ValueError("--backend numpy runs on the CPU only; use --device cpu")
        from torch_model.numpy_backend import NumpyLearner

        # Same initial weights as the torch model for the same seed: draw them with torch's init.
        return NumpyLearner(alexnet(num_classes, variant=variant).state_dict(), lr=lr, num_classes=num_classes,
                            seed=seed, variant=variant, momentum=momentum, weight_decay=weight_decay)
    return TorchLearner(alexnet(num_classes, backend=backend, variant=variant), lr=lr, device=device, amp=amp,
                        channels_last=channels_last, momentum=momentum, weight_decay=weight_decay)


def check_backend(backend: str, variant: str = "d2l") -> None:
    """Refuse a backend that does not exist (every backend builds both variants: numpy_ref and triton_kernels
    have the paper's local response normalization)."""
    if backend not in LEARNER_BACKENDS:
        raise ValueError(f"--backend must be one of {LEARNER_BACKENDS}, got {backend!r}")
