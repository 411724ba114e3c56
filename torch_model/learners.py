"""The learners: what the training loop and the evaluation step through, one per backend.

The loop in torch_model/train.py talks only to a Learner:

    learner.train() / learner.eval()
    loss, logits = learner.step(X, y)    # one SGD step on a batch; X (N, 1, R, R) float32, y (N,) int64
                                         # loss: mean cross-entropy (python float), logits (N, classes) detached
    logits = learner.predict(X)          # no grad, eval mode is the caller's business
    learner.state_dict() / learner.load_state_dict(d)   # everything a resume needs: weights, optimizer, RNGs
    learner.model_state_dict()           # the weights alone, torch's keys, as torch tensors

    TorchLearner        "torch" and "triton": torch_model.alexnet(backend=..., variant=...) with torch.optim.SGD
    NumpyLearner        "numpy": numpy_ref.alexnet with numpy_ref's SGD, on the CPU (torch only at the edges)
    DistributedLearner  a TorchLearner whose step goes through DistributedDataParallel (under torchrun)
 The SGD is the seed's (plain, lr)
unless momentum / weight_decay are given (the paper's 0.9 and 5e-4): the same arguments as torch.optim.SGD.
"""
from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import numpy_ref
from numpy_ref.functional import cross_entropy_backward, cross_entropy_forward
from numpy_ref.layers import Dropout

from torch_model.cpu_layers import use_cpu_layers
from torch_model.device import check_amp
from torch_model.distributed import DistContext, collective, sum_over_ranks
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
        if device.type == "cpu" and channels_last:
            use_cpu_layers(self.net)    # conv1's weight gradient as one GEMM, a faster dropout mask
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


# ----------------------------------------------------------------------------------------------- numpy
# Slow (~15 s per batch of 128 at 224x224 on two cores): meant for a small --limit-train.

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


# ----------------------------------------------------------------------------------------------- DDP

class DistributedLearner:
    """A TorchLearner (torch or triton backend) whose training step goes through DistributedDataParallel.

    step(X, y) on this rank's shard of a global batch of N images:
        N = all_reduce(len(y))                                   the global batch actually present
        loss = sum_i CE(net(X_i), y_i) * world / N               (a shard of 0 images: a dummy image, weight 0)
        loss.backward()      DDP: grad = (1/world) sum_ranks grad_r = (1/N) sum over all N images of grad CE_i
        optimizer.step()     the same update on every rank (same weights: DDP broadcast rank 0's at the start)
    returns (this shard's mean loss, or NaN on every rank when any rank's loss is not finite; this shard's logits).
    Everything else (predict, eval/train, state_dict) is the wrapped learner's, keys without DDP's "module.".
    """

    def __init__(self, learner, ctx: DistContext):
        from torch.nn.parallel import DistributedDataParallel

        if not hasattr(learner, "net") or not hasattr(learner, "optimizer"):
            raise ValueError("DDP needs the torch or triton backend (a torch module and optimizer)")
        self.learner, self.ctx, self.device = learner, ctx, learner.device
        ids = [learner.device.index] if learner.device.type == "cuda" else None
        with collective(ctx, "DDP's first broadcast of rank 0's weights"):
            self.ddp = DistributedDataParallel(learner.net, device_ids=ids)

    @property
    def net(self):
        """The wrapped module (not DDP's wrapper): hooks and state_dict keys as in one process."""
        return self.learner.net

    def train(self) -> None:
        self.learner.train()

    def eval(self) -> None:
        self.learner.eval()

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        return self.learner.predict(X)

    def state_dict(self) -> dict:
        return self.learner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.learner.load_state_dict(state)

    def model_state_dict(self) -> dict[str, torch.Tensor]:
        return self.learner.model_state_dict()

    def step(self, X: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
        inner, ctx = self.learner, self.ctx
        n_local = len(y)
        count = torch.tensor([float(n_local)], device=self.device)        # (1,)
        with collective(ctx, "the training step's all-reduce"):
            dist.all_reduce(count)                                         # N, stays on the device
            inner.optimizer.zero_grad(set_to_none=True)
            weight = 1.0
            if n_local == 0:    # every rank must run forward/backward for DDP's all-reduce: one zero image, weight 0
                X = torch.zeros((1, *X.shape[1:]), dtype=X.dtype, device=X.device)   # (1, C, S, S)
                y = torch.zeros(1, dtype=torch.int64, device=y.device)             # (1,)
                weight = 0.0
            X = X.contiguous(memory_format=inner.memory_format)
            with inner._autocast():
                logits = self.ddp(X)                                        # (n, classes)
                loss_sum = F.cross_entropy(logits.float(), y, reduction="sum")
            (loss_sum * (weight * ctx.world_size / count[0])).backward()   # DDP averages over the ranks
            inner.optimizer.step()
            local = loss_sum.detach() * weight
            finite = torch.isfinite(local).to(torch.float64).view(1)       # (1,)
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)                  # 0 on every rank if any rank's is not
        if finite.item() == 0:
            return float("nan"), logits.detach().float()[:n_local]
        return (local.item() / n_local if n_local else 0.0), logits.detach().float()[:n_local]


# ----------------------------------------------------------------------------------------------- evaluation

def accuracy(learner: Learner, source, ctx: DistContext | None = None, progress: bool = False,
             desc: str = "test") -> float:
    """Accuracy over the source's evaluation images, dropout off: each rank counts its shard of every batch, the
    counts are summed over the ranks (unreadable images are left out of both)."""
    ctx = ctx if ctx is not None else DistContext()
    learner.eval()
    correct = seen = 0
    bar = tqdm(source.test_batches(), total=math.ceil(len(source.test) / source.batch_size), desc=desc,
               unit="batch", leave=False, disable=not (progress and ctx.is_main), dynamic_ncols=True)
    for X, y in bar:
        if len(y):
            correct += (learner.predict(X).argmax(dim=1) == y).sum().item()
            seen += len(y)
    correct, seen = sum_over_ranks(ctx, correct, seen, what="summing the evaluation counts")
    if not seen:
        raise ValueError(f"none of the {len(source.test)} evaluation images could be read")
    return correct / seen


# ----------------------------------------------------------------------------------------------- making one

def make_learner(backend: str, lr: float, device: torch.device, num_classes: int = 10,
                 amp: str = "none", seed: int = 0, channels_last: bool = False, variant: str = "d2l",
                 momentum: float = 0.0, weight_decay: float = 0.0) -> Learner:
    """Build the `variant` model for `backend` with its init (torch's RNG must be seeded by the caller)."""
    check_backend(backend, variant)
    check_amp(amp, backend, device, channels_last)
    if backend == "numpy":
        if device.type != "cpu":
            raise ValueError("--backend numpy runs on the CPU only; use --device cpu")
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
