"""Where and how a command computes: the device (`resolve_device`), the default backend (`default_backend`), whether
an --amp / --channels-last choice can run there (`check_amp`) and the CPU's default precision (`cpu_default_amp`).
Training and the benchmarks ask these, so each decision is made in one place."""
from __future__ import annotations

import ctypes
import os
import sys
from functools import lru_cache
from pathlib import Path

import torch

AMP_CHOICES = ("none", "bf16")


def resolve_device(name: str) -> torch.device:
    """"auto" is CUDA when there is a GPU, else the CPU; a CUDA device asked for on a machine without one is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return torch.device(name)


def default_backend(device: torch.device, variant: str = "d2l") -> str:
    """Our Triton kernels on a GPU (what the project is about); torch's own kernels on a CPU, where Triton only has
    its interpreter (minutes per batch). Both variants: the same rule."""
    return "triton" if device.type == "cuda" else "torch"


@lru_cache(maxsize=None)
def cpu_bf16_native() -> str | None:
    """The CPU feature that computes bf16 natively (oneDNN then runs bf16 convs and matmuls at about twice fp32's
    rate), or None: 'amx_bf16' or 'avx512_bf16' from /proc/cpuinfo's flags (Linux), else torch's capability
    string ('AVX512_BF16' / 'AMX...' on builds that report it)."""
    try:
        flags = set()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
                break
        for feature in ("amx_bf16", "avx512_bf16"):
            if feature in flags:
                return feature
    except OSError:
        pass
    capability = str(torch.backends.cpu.get_cpu_capability()).lower()
    return capability if "bf16" in capability or "amx" in capability else None


def cpu_default_amp(device: torch.device, backend: str) -> tuple[str, bool, str]:
    """(amp, channels_last, why) when neither flag is given. On a CPU with native bf16 the torch backend trains in
    bf16 autocast with NHWC batches and weights (fp32 master weights and loss): 2.3x the fp32 NCHW images/s on 2
    cores with avx512_bf16 (measured side by side: scripts/cpu_bf16_side_by_side.py). Elsewhere the seed's fp32."""
    if device.type == "cpu" and backend == "torch":
        feature = cpu_bf16_native()
        if feature:
            return "bf16", True, (f"this CPU computes bf16 natively ({feature}): ~2.3x the fp32 images/s; fp32 "
                                  f"master weights and loss; --amp none for the fp32 run")
        return "none", False, "this CPU has no native bf16 (no avx512_bf16/amx_bf16)"
    if backend == "numpy":
        return "none", False, "numpy_ref computes in float32"
    return "none", False, "the seed's precision; --amp bf16 for bf16 autocast"


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -4, -8


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of handing it back to the kernel; True if it was set.

    A training step on the CPU allocates and frees the same ~1 GB of activations and gradients every step (conv1's
    output alone is 128x96x54x54 bf16 = 72 MB). glibc serves any block over 32 MB with its own mmap and unmaps it on
    free, so every step the kernel zero-fills those pages again on first touch: a quarter of the step's CPU time was
    page faults (docs/benchmarks/README.md, CPU section). Here every block comes from one heap (no mmap, one arena),
    which grows in 256 MB steps and is never trimmed: after the first steps the process reuses its own pages. The
    cost is that the process keeps its peak memory until it exits. ALEXNET_GLIBC_MALLOC=1 leaves glibc's defaults."""
    if os.environ.get("ALEXNET_GLIBC_MALLOC") == "1" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:                                  # not glibc (musl, ...): nothing to tune
        return False
    libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    settings = ((_M_MMAP_MAX, 0), (_M_ARENA_MAX, 1), (_M_TOP_PAD, 256 << 20), (_M_TRIM_THRESHOLD, 2**31 - 1))
    return all(libc.mallopt(param, value) == 1 for param, value in settings)


def check_amp(amp: str, backend: str, device: torch.device, channels_last: bool = False) -> None:
    """Refuse an --amp / --channels-last choice the backend cannot run on this device (ValueError naming it)."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"--amp must be one of {AMP_CHOICES}, got {amp!r}")
    if backend == "numpy" and (amp != "none" or channels_last):
        raise ValueError("--amp bf16 and --channels-last are for the torch and triton backends "
                         "(--backend numpy computes in float32, NCHW)")
    if backend == "triton" and amp == "bf16" and device.type != "cuda":
        raise ValueError("--backend triton --amp bf16: without CUDA the Triton kernels run in the interpreter, which "
                         "cannot compute in bfloat16 (dtype torch.bfloat16); use --amp none, or --backend torch")
