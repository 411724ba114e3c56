"""How every benchmark figure is timed: the timer (do_bench on a GPU, perf_counter medians on a CPU), input sets
rotated past the L2, the precision switches (TF32 on/off, cudnn.benchmark), and the matmul and copy peaks measured
in the same run that every figure is set against (`floor_ms = max(FLOPs / matmul peak, bytes / copy bandwidth)`)."""
from __future__ import annotations

import math
import statistics
import time
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Sequence

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


# ----------------------------------------------------------------------------------------------- the timer

def time_ms(fn: Callable[[], object], device: torch.device, *, warmup_ms: float = 25, rep_ms: float = 100,
            repeat: int = 5) -> dict:
    """Median time of fn() in ms, with the 20th/80th percentiles as its spread.

    GPU: triton.testing.do_bench (CUDA events, warm-up, the L2 flushed before every call; fn rotates its inputs
    too). CPU: one warm-up call, then the median of `repeat` perf_counter timings."""
    if device.type == "cuda":
        from triton.testing import do_bench

        med, p20, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        return {"ms": float(med), "ms_p20": float(p20), "ms_p80": float(p80),
                "timer": f"triton.testing.do_bench median (warmup {warmup_ms:g} ms, rep {rep_ms:g} ms)"}
    fn()
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=5, method="inclusive") if len(times) > 1 else [times[0]] * 4
    return {"ms": statistics.median(times), "ms_p20": q[0], "ms_p80": q[3],
            "timer": f"perf_counter median of {len(times)} (CPU)"}


class Rotation:
    """Several input sets used in turn, so repeated calls do not find their inputs already in the cache.
    On the GPU there are enough sets for their inputs together to exceed twice the L2 (60 MB on an H200)."""

    def __init__(self, make: Callable[[int], tuple], set_bytes: int, device: torch.device, max_sets: int = 16):
        if device.type == "cuda":
            l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 60 * 2**20
            n = min(max_sets, max(2, math.ceil(2 * l2 / max(1, set_bytes))))
        else:
            n = 2
        self.sets = [make(i) for i in range(n)]
        self.i = 0

    def __len__(self) -> int:
        return len(self.sets)

    def next(self) -> tuple:
        s = self.sets[self.i % len(self.sets)]
        self.i += 1
        return s


def measure_peaks(device: torch.device, dtypes: Iterable[str] = ("bf16",), progress: bool = True) -> dict:
    """The ceilings every figure of this run is compared with, measured now on this device.

    GPU: an 8192^3 matmul (bf16 always, plus TF32/fp32 when the run measures them) and a 1 GiB device copy.
    CPU: no bf16 or TF32 peak there, so an fp32 matmul (1024^3) and a 64 MiB copy, said so in "how"."""
    gen = torch.Generator(device=device).manual_seed(1234)
    if device.type == "cuda":
        n, copy_elems = 8192, 2**28
    else:
        n, copy_elems = 1024, 2**24
    peak: dict = {"bf16_matmul_tflops": None}
    wanted = ["bf16", *[d for d in dtypes if d != "bf16"]] if device.type == "cuda" else ["fp32"]
    for dtype in wanted:
        a = [torch.randn(n, n, generator=gen, device=device).to(torch_dtype(dtype)) for _ in range(2)]
        b = [torch.randn(n, n, generator=gen, device=device).to(torch_dtype(dtype)) for _ in range(2)]
        rot = iter(range(10**12))

        def mm():
            i = next(rot) % 2
            return a[i] @ b[i]

        with precision(dtype):
            t = time_ms(mm, device, repeat=5)
        peak[f"{dtype}_matmul_tflops"] = 2 * n**3 / (t["ms"] * 1e-3) / 1e12
        del a, b
    src = torch.randn(copy_elems, generator=gen, device=device)
    dst = torch.empty_like(src)
    t = time_ms(lambda: dst.copy_(src), device, repeat=5)
    peak["copy_tb_per_s"] = 2 * src.nbytes / (t["ms"] * 1e-3) / 1e12
    del src, dst
    if device.type == "cuda":
        peak["how"] = (f"{n}x{n}x{n} matmul per dtype (torch, random data, 2 input sets), "
                       f"{copy_elems * 4 / 2**30:.0f} GiB fp32 device copy (read + write counted), do_bench medians")
    else:
        peak["how"] = (f"CPU machine: fp32 {n}x{n}x{n} matmul through torch and a {copy_elems * 4 / 2**20:.0f} MiB "
                       f"copy (read + write counted), perf_counter medians; there is no bf16 peak on a CPU")
    return peak


def matmul_peak(peak: dict, dtype: str) -> float | None:
    """The matmul ceiling for a figure in `dtype` (bf16 / TF32 / fp32); on a CPU the fp32 one."""
    return peak.get(f"{dtype}_matmul_tflops") or peak.get("fp32_matmul_tflops")


@contextmanager
def cudnn_benchmark() -> Iterator[None]:
    """cudnn.benchmark on ("the best cuDNN": its fastest algorithm per shape), restored on exit."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved
