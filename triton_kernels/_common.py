"""What every kernel file (conv.py, pool.py, lrn.py) needs, defined once: the interpreter flag, argument checks, the
launch helper and the layout rule.

Every check raises ValueError naming the argument and the shape/value it got, and runs BEFORE anything is
allocated or launched, so a refused call writes nothing.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence

import torch

# Without CUDA every kernel runs in the Triton interpreter on CPU tensors. TRITON_INTERPRET must be set before
# any @triton.jit runs (the decorator picks the interpreted function at definition time), and this module is
# the first thing `import triton_kernels` imports. Set TRITON_INTERPRET=0 yourself to opt out.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"  # kernels run interpreted, CPU tensors allowed

# Dtypes the kernels are written (and tested) for: fp32 accumulation inside (fp64 for fp64 inputs: gradient
# checks), output in the input dtype.
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# Dtypes the interpreter gets wrong (checked: a bf16 conv is off by ~1e10 with triton 3.6 and 3.9; a bf16 pool
# returns wrong values and indices with 3.9 and fails with 3.6): refused there, with the dtype named.
# fp16 and fp64 come out right in the interpreter (tests/test_triton_conv.py, test_triton_pool.py check both).
INTERPRETER_WRONG_DTYPES = (torch.bfloat16,)

# (BLOCK, num_warps) of the elementwise-style kernels (pool, LRN: one output element per lane). On the GPU the
# autotuner picks per (size, layout); the interpreter runs program instances one by one in Python and benchmarks every
# config without caching, so it gets a single one.
ELEMENTWISE_GPU_CONFIGS = [(256, 4), (512, 4), (1024, 4), (1024, 8)]  # 2, 4, 8, 4 elements per thread
ELEMENTWISE_INTERPRET_CONFIGS = [(256, 4)]


def elementwise_configs() -> list:
    """triton.Config list for an autotuned kernel with one BLOCK meta-parameter (the pool and LRN kernels)."""
    import triton

    configs = ELEMENTWISE_INTERPRET_CONFIGS if INTERPRET else ELEMENTWISE_GPU_CONFIGS
    return [triton.Config({"BLOCK": block}, num_warps=warps, num_stages=1) for block, warps in configs]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:2])


def check_interpreter_stack(triton_version: str, numpy_version: str) -> None:
    """triton < 3.7's interpreter converts 1-element arrays to Python ints, which numpy >= 2.4 refuses: every
    `for k in range(0, K, BLOCK_K)` in a kernel fails with "only 0-dimensional arrays can be converted to
    Python scalars" (an upstream interpreter bug; triton 3.6 fails, 3.8 and 3.9 work, checked).
    Raised at import under the interpreter, so the error names the cause instead of a kernel line."""
    if _version(triton_version) < (3, 7) and _version(numpy_version) >= (2, 4):
        raise ImportError(
            f"triton {triton_version}'s interpreter does not work with numpy {numpy_version} (numpy >= 2.4 refuses "
            f"its array-to-int conversions, an upstream bug fixed in later triton). On this machine "
            f"without CUDA the kernels run in that interpreter: install numpy < 2.4 or triton >= 3.8")


if INTERPRET:
    import numpy
    import triton

    check_interpreter_stack(triton.__version__, numpy.__version__)


def launcher(kernel):
    """What to index with [grid] to launch `kernel` from inside a torch.library.triton_op: wrap_triton(kernel) on
    the GPU (so torch.compile traces the kernel into its graph), the kernel itself under the interpreter
    (eager calls need no wrapper there, and torch < 2.13's wrap_triton refuses interpreted kernels)."""
    if INTERPRET:
        return kernel
    from torch.library import wrap_triton

    return wrap_triton(kernel)


def pair(value, name: str, minimum: int | None = None) -> tuple[int, int]:
    """int, or a sequence of one or two ints (torch's `_pair`) -> (h, w); each entry >= minimum if given."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        out = (value, value)
    elif (isinstance(value, Sequence) and not isinstance(value, str) and len(value) in (1, 2)
          and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        out = (value[0], value[0]) if len(value) == 1 else (value[0], value[1])
    else:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if minimum is not None and min(out) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return (int(out[0]), int(out[1]))


def check_tensor(t, name: str, ndims: Sequence[int] | None = None, shapes: str | None = None,
                 allow_empty: bool = False, min_ndim: int | None = None) -> None:
    """t is a torch.Tensor with t.dim() in ndims, or at least min_ndim dims (`shapes` spells them for the message,
    e.g. "(N, C, H, W) or (C, H, W)"), a dtype the kernels support (and, under the interpreter, compute right), not
    empty unless allow_empty."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if (ndims is not None and t.dim() not in tuple(ndims)) or (min_ndim is not None and t.dim() < min_ndim):
        want = shapes or (" or ".join(f"{n}-D" for n in ndims) if ndims is not None else f"at least {min_ndim}-D")
        raise ValueError(f"{name} must be {want}, got shape {tuple(t.shape)}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"{name} dtype must be one of {SUPPORTED_DTYPES}, got {t.dtype} (shape {tuple(t.shape)})")
    if INTERPRET and t.dtype in INTERPRETER_WRONG_DTYPES:
        raise ValueError(f"{name} dtype {t.dtype} is not supported in the Triton interpreter (it computes wrong "
                         f"values there): use float32, float16 or float64 on this machine, {t.dtype} on a GPU")
    if t.numel() == 0 and not allow_empty:
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
    if dev.type == "cpu" and INTERPRET:
        return dev
    hint = (" (CPU tensors run only in the Triton interpreter, TRITON_INTERPRET=1, set automatically by "
            "`import triton_kernels` without CUDA)") if dev.type == "cpu" else ""
    raise ValueError(f"{first_name} must be on a CUDA device, got {dev} (shape {tuple(first.shape)}){hint}")


def check_same_dtype(**tensors: torch.Tensor | None) -> torch.dtype:
    """All given tensors (None ones skipped) share one dtype."""
    named = [(n, t) for n, t in tensors.items() if t is not None]
    first_name, first = named[0]
    for n, t in named[1:]:
        if t.dtype != first.dtype:
            raise ValueError(f"{n} dtype {t.dtype} differs from {first_name} dtype {first.dtype}")
    return first.dtype


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
