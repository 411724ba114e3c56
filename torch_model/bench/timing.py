"""Who ran a benchmark and against what it is judged: the machine's facts (its short name names the results file),
the date, the precision switches (TF32 on/off, cudnn.benchmark), and the matmul and copy peaks measured in the same
run that every figure is set against (`floor_ms = max(FLOPs / matmul peak, bytes / copy bandwidth)`).

The kernels' own timer and input rotation are triton_kernels/testing.py's. The benches that time no kernel (cpu,
numpy, loader) never import triton_kernels: Triton is optional off Linux x86-64, and importing triton_kernels on
a machine without CUDA turns on its interpreter. So a CPU figure here is timed by cpu_time_ms.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch


# ----------------------------------------------------------------------------------------------- the machine

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
    """Who ran this: the machine's short name (the results file's name), versions, the device."""
    import numpy

    from importlib import metadata

    try:  # the version without importing triton: imported before triton_kernels sets TRITON_INTERPRET, triton
        triton_version = metadata.version("triton")  # would leave its own @jit helpers un-interpreted
    except metadata.PackageNotFoundError:  # triton is optional for the torch path (not on this platform)
        triton_version = None
    cpu = device.type != "cuda"
    info = {"torch": torch.__version__, "triton": triton_version, "numpy": numpy.__version__,
            "python": platform.python_version(), "platform": platform.platform(), "cpu_model": _cpu_model(),
            "cpu_count": os.cpu_count(), "cpu": cpu}
    if cpu:
        info["machine"] = f"cpu-{_slug(info['cpu_model'])}-{os.cpu_count()}cores"
        info["device_name"] = f"CPU: {info['cpu_model']} ({os.cpu_count()} cores)"
    else:
        props = torch.cuda.get_device_properties(device)
        name = torch.cuda.get_device_name(device)
        info.update(machine=_slug(name).removeprefix("nvidia-") or "cuda", device_name=name, cuda=torch.version.cuda,
                    sm_count=props.multi_processor_count, l2_bytes=getattr(props, "L2_cache_size", None),
                    memory_bytes=props.total_memory, capability=f"{props.major}.{props.minor}")
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


# ----------------------------------------------------------------------------------------------- precision

@contextmanager
def precision(dtype: str) -> Iterator[None]:
    """TF32 on for "tf32" (cuDNN convs and cuBLAS/inductor matmuls), off for "fp32"; "bf16" leaves it on (the
    fp32 parts of an autocast step then use TF32, as a tuned training run would). Restored on exit."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    on = dtype != "fp32"
    torch.backends.cudnn.allow_tf32 = on
    torch.backends.cuda.matmul.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@contextmanager
def cudnn_benchmark() -> Iterator[None]:
    """cudnn.benchmark on ("the best cuDNN": its fastest algorithm per shape), restored on exit."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def torch_dtype(dtype: str) -> torch.dtype:
    return torch.bfloat16 if dtype == "bf16" else torch.float32


def check_dtypes(dtypes: Sequence[str], device: torch.device, flag: str = "--dtypes") -> None:
    """bf16 and TF32 are GPU figures: the Triton interpreter computes bf16 wrongly and a CPU has no TF32."""
    if device.type == "cuda":
        return
    bad = [d for d in dtypes if d != "fp32"]
    if bad:
        raise ValueError(f"{flag} {','.join(bad)}: on a CPU only fp32 is measured (no TF32 there, and the Triton "
                         f"interpreter does not support bf16); use {flag} fp32 or run on a GPU")


# ----------------------------------------------------------------------------------------------- the peaks

def cpu_time_ms(fn: Callable[[], object], repeat: int = 5) -> dict:
    """triton_kernels.testing.time_ms's CPU timer: one warm-up call, then the median of `repeat` perf_counter
    timings, with the 20th/80th percentiles."""
    fn()
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=5, method="inclusive") if len(times) > 1 else [times[0]] * 4
    return {"ms": statistics.median(times), "ms_p20": q[0], "ms_p80": q[3],
            "timer": f"perf_counter median of {len(times)} (CPU)"}


def _time_ms(fn: Callable[[], object], device: torch.device) -> dict:
    if device.type == "cuda":
        from triton_kernels.testing import time_ms

        return time_ms(fn, device)
    return cpu_time_ms(fn)


def matmul_rate(n: int, dtype: torch.dtype, device: torch.device) -> dict:
    """An n^3 matmul through torch, two random input sets in turn: its median time and TFLOP/s."""
    gen = torch.Generator(device=device).manual_seed(1234)
    a = [torch.randn(n, n, generator=gen, device=device).to(dtype) for _ in range(2)]
    b = [torch.randn(n, n, generator=gen, device=device).to(dtype) for _ in range(2)]
    turn = iter(range(10**12))

    def mm():
        i = next(turn) % 2
        return a[i] @ b[i]

    t = _time_ms(mm, device)
    return {"n": n, "dtype": str(dtype).removeprefix("torch."), "ms": t["ms"],
            "tflops": 2 * n**3 / (t["ms"] * 1e-3) / 1e12, "timer": t["timer"]}


def measure_peaks(device: torch.device, dtypes: Iterable[str] = ("bf16",)) -> dict:
    """The ceilings every figure of this run is compared with, measured now on this device.

    GPU: an 8192^3 matmul (bf16 always, plus TF32/fp32 when the run measures them) and a 1 GiB device copy.
    CPU: no bf16 or TF32 peak there, so an fp32 matmul (1024^3) and a 64 MiB copy, said so in "how"."""
    gpu = device.type == "cuda"
    n, copy_elems = (8192, 2**28) if gpu else (1024, 2**24)
    peak: dict = {"bf16_matmul_tflops": None}
    for dtype in ["bf16", *[d for d in dtypes if d != "bf16"]] if gpu else ["fp32"]:
        with precision(dtype):
            peak[f"{dtype}_matmul_tflops"] = matmul_rate(n, torch_dtype(dtype), device)["tflops"]
    src = torch.randn(copy_elems, generator=torch.Generator(device=device).manual_seed(1234), device=device)
    dst = torch.empty_like(src)
    t = _time_ms(lambda: dst.copy_(src), device)
    peak["copy_tb_per_s"] = 2 * src.nbytes / (t["ms"] * 1e-3) / 1e12
    del src, dst
    if gpu:
        peak["how"] = (f"{n}x{n}x{n} matmul per dtype (torch, random data, 2 input sets), "
                       f"{copy_elems * 4 / 2**30:.0f} GiB fp32 device copy (read + write counted), do_bench medians")
    else:
        peak["how"] = (f"CPU machine: fp32 {n}x{n}x{n} matmul through torch and a {copy_elems * 4 / 2**20:.0f} MiB "
                       f"copy (read + write counted), perf_counter medians; there is no bf16 peak on a CPU")
    return peak


def matmul_peak(peak: dict, dtype: str) -> float | None:
    """The matmul ceiling for a figure in `dtype` (bf16 / TF32 / fp32); on a CPU the fp32 one."""
    return peak.get(f"{dtype}_matmul_tflops") or peak.get("fp32_matmul_tflops")


def describe(info: dict, peak: dict) -> str:
    """One line: the device, the versions and the peaks measured in this run."""
    rates = ", ".join(f"{d} matmul {peak[f'{d}_matmul_tflops']:.3g} TFLOP/s" for d in ("bf16", "tf32", "fp32")
                      if peak.get(f"{d}_matmul_tflops"))
    line = (f"{info['device_name']}, {today()}, torch {info['torch']}, triton {info['triton']}; measured peaks: "
            f"{rates}, copy {peak['copy_tb_per_s']:.3g} TB/s")
    return line + ("; a CPU: smoke-test numbers, Triton in its interpreter, NOT GPU results" if info["cpu"] else "")
