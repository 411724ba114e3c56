"""Which device a command runs on: `resolve_device("auto" | "cpu" | "cuda[:N]")`, shared by training and the benchmarks."""
from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """"auto" is CUDA when there is a GPU, else the CPU; a CUDA device asked for on a machine without one is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return torch.device(name)
