"""Small helpers shared by the Triton op wrappers (conv.py, pool.py).

Every check raises ValueError naming the argument and the shape/value it got, and runs BEFORE anything is
allocated or launched, so a refused call writes nothing.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch

# Dtypes the kernels are written (and tested) for: fp32 accumulation inside, output in the input dtype.
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpret_mode() -> bool:
    """True when @triton.jit kernels run in the Triton interpreter (TRITON_INTERPRET=1, set by
    triton_kernels/__init__.py on machines without CUDA). Then CPU tensors are valid kernel arguments."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _pair(value, name: str, minimum: int = 0) -> tuple[int, int]:
    """int or length-2 sequence of ints -> (h, w); each entry must be an int >= minimum."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        pair = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        pair = tuple(value)
    else:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    for v in pair:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return (int(pair[0]), int(pair[1]))


def check_tensor(t, name: str, ndims: Sequence[int]) -> None:
    """t is a torch.Tensor with t.dim() in ndims and a dtype the kernels support."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() not in tuple(ndims):
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {want}, got shape {tuple(t.shape)}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"{name} dtype must be one of {SUPPORTED_DTYPES}, got {t.dtype}")
    if t.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(t.shape)}")


def check_device(**tensors: torch.Tensor | None) -> torch.device:
    """All given tensors (None ones skipped) on one device: CUDA, or CPU when the interpreter is on."""
    named = [(n, t) for n, t in tensors.items() if t is not None]
    first_name, first = named[0]
    for n, t in named[1:]:
        if t.device != first.device:
            raise ValueError(f"{n} is on {t.device} but {first_name} is on {first.device}: all on one device")
    dev = first.device
    if dev.type == "cuda":
        return dev
    if dev.type == "cpu" and interpret_mode():
        return dev
    hint = " (CPU tensors run only in the Triton interpreter, TRITON_INTERPRET=1)" if dev.type == "cpu" else ""
    raise ValueError(f"{first_name} must be on a CUDA device, got {dev}{hint}")


def check_same_dtype(**tensors: torch.Tensor | None) -> torch.dtype:
    """All given tensors (None ones skipped) share one dtype."""
    named = [(n, t) for n, t in tensors.items() if t is not None]
    first_name, first = named[0]
    for n, t in named[1:]:
        if t.dtype != first.dtype:
            raise ValueError(f"{n} dtype {t.dtype} differs from {first_name} dtype {first.dtype}")
    return first.dtype


def tl_dtype_name(dtype: torch.dtype) -> str:
    """torch dtype -> Triton signature spelling ("fp32", "fp16", "bf16")."""
    names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
    if dtype not in names:
        raise ValueError(f"dtype must be one of {tuple(names)}, got {dtype}")
    return names[dtype]


def strides_like_channels_last(t: torch.Tensor) -> bool:
    """torch's own test of "this 4-D tensor's strides say channels_last" (c10 is_channels_last_strides_2d, what
    Tensor.suggest_memory_format() uses): the strides must grow in the order c, w, h, n. Unlike
    is_contiguous(memory_format=channels_last), it tells a C == 1 tensor made by .to(memory_format=channels_last)
    (strides (H*W, 1, W, 1)) from a plain one (strides (H*W, H*W, W, 1)), as torch's conv and pool do."""
    if t.dim() != 4 or t.stride(1) == 0:
        return False
    sizes, strides = t.shape, t.stride()
    smallest = 0
    for d in (1, 3, 2, 0):
        if sizes[d] == 0 or strides[d] < smallest:
            return False
        if d == 0 and smallest == strides[1]:  # N111-like: ambiguous, NCHW as torch decides
            return False
        smallest = strides[d] * (sizes[d] if sizes[d] > 1 else 1)
    return True

