"""Who ran a benchmark: the machine's short name (it names the results file), versions, the device; the date.
Also the import-order rule every bench obeys (import_triton_kernels)."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from pathlib import Path

import torch


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(device: torch.device) -> dict:
    """Who ran this: the machine's short name (used in the results file's name), versions, device."""
    import numpy

    from importlib import metadata

    try:  # read the version without importing triton: importing it before triton_kernels sets TRITON_INTERPRET
        triton_version = metadata.version("triton")  # would leave triton's own @jit helpers un-interpreted
    except metadata.PackageNotFoundError:  # triton is optional for the torch path (not on this platform)
        triton_version = None
    cpu = device.type != "cuda"
    info = {
        "torch": torch.__version__,
        "triton": triton_version,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu,
    }
    if cpu:
        info["machine"] = f"cpu-{_slug(info['cpu_model'])}-{os.cpu_count()}cores"
        info["device_name"] = f"CPU: {info['cpu_model']} ({os.cpu_count()} cores)"
    else:
        props = torch.cuda.get_device_properties(device)
        name = torch.cuda.get_device_name(device)
        info["machine"] = _slug(name).removeprefix("nvidia-") or "cuda"
        info["device_name"] = name
        info["cuda"] = torch.version.cuda
        info["sm_count"] = props.multi_processor_count
        info["l2_bytes"] = getattr(props, "L2_cache_size", None)
        info["memory_bytes"] = props.total_memory
        info["capability"] = f"{props.major}.{props.minor}"
    return info


def import_triton_kernels() -> None:
    """Import triton_kernels before anything imports triton. On a machine without CUDA, triton_kernels sets
    TRITON_INTERPRET=1, which only takes effect if triton itself is imported afterwards: creating any torch
    optimizer imports torch._dynamo, which imports triton, and then the interpreted kernels fail with
    "Cannot call @triton.jit'd outside of the scope of a kernel"."""
    import triton_kernels  # noqa: F401


def today() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
