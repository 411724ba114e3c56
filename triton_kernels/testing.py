"""What checking and timing a kernel takes, shared by the lessons (triton_kernels/lessons/harness.py) and the
benchmarks above them (`alexnet bench layers|lessons`): random inputs for one layer, one forward or forward +
backward pass, the float64 reference and the relative error against it, and the timer with its rotating input
sets (do_bench on a GPU, as the Triton tutorials time themselves; perf_counter medians on a CPU).

Passes: "fwd" is the forward under torch.no_grad(); "fwd+bwd" is the forward, then torch.autograd.grad of every
input that requires a gradient.
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Callable

import torch

PASSES = ("fwd", "fwd+bwd")


def make_inputs(kind: str, x_shape: tuple, y_shape: tuple, k: int, dtype: torch.dtype, device, seed: int = 0,
                layout: str = "nchw", grad: bool = False, dx: bool = True, x_scale: float = 1.0) -> tuple:
    """Random inputs (never zeros) for one layer, x (N, C, H, W) and dy (N, F, OH, OW): (x, w, b, dy) for a conv,
    its weight (F, C, k, k) He-scaled and its bias small; (x, dy) for a pool or an LRN. grad: the parameters (and x
    unless dx is False: a first layer's input is the data) require gradients."""
    g = torch.Generator(device=device).manual_seed(seed)
    rnd = lambda *shape: torch.randn(*shape, generator=g, device=device)  # noqa: E731
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = rnd(*x_shape)
    if x_scale != 1.0:
        x = x * x_scale
    x = x.to(dtype).contiguous(memory_format=fmt)
    if kind != "conv":
        return x.requires_grad_(grad), rnd(*y_shape).to(dtype).contiguous(memory_format=fmt)
    c, f = x_shape[1], y_shape[1]
    w = (rnd(f, c, k, k) * (2.0 / (c * k * k)) ** 0.5).to(dtype).contiguous(memory_format=fmt)
    b = (rnd(f) * 0.1).to(dtype)
    dy = rnd(*y_shape).to(dtype).contiguous(memory_format=fmt)
    return x.requires_grad_(grad and dx), w.requires_grad_(grad), b.requires_grad_(grad), dy


def run_pass(op, pss: str, inputs: tuple) -> tuple:
    """One call: the forward under no_grad ("fwd"), or forward + the gradients of the inputs that want one."""
    *args, dy = inputs
    if pss == "fwd":
        with torch.no_grad():
            return op(*args), []
    out = op(*args)
    return out, list(torch.autograd.grad(out, [a for a in args if a.requires_grad], dy))


def reference(op, inputs: tuple) -> tuple:
    """op's forward and gradients in float64, from the same (rounded) inputs."""
    *args, dy = inputs
    args64 = [a.detach().double().requires_grad_(a.requires_grad) for a in args]
    out = op(*args64)
    wanted = [a for a in args64 if a.requires_grad]
    return out.detach(), list(torch.autograd.grad(out, wanted, dy.double())) if wanted else []


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """||got - ref|| / ||ref|| over the elements that are not NaN; inf when the NaNs are not in the same places."""
    got = got.detach().double()
    nan = torch.isnan(ref)
    if not torch.equal(torch.isnan(got), nan):
        return float("inf")
    got, ref = got[~nan], ref[~nan]
    return (got - ref).norm().item() / max(ref.norm().item(), 1e-30)


def pass_err(got: tuple, ref: tuple) -> float:
    """The worst rel_err of a pass: its output and every gradient, (out, grads) against (ref_out, ref_grads)."""
    return max([rel_err(got[0], ref[0])] + [rel_err(g, r) for g, r in zip(got[1], ref[1])])


def time_ms(fn: Callable[[], object], device, *, warmup_ms: float = 25, rep_ms: float = 100,
            repeat: int = 3) -> dict:
    """Median time of fn() in ms, with the 20th/80th percentiles as its spread.

    GPU: triton.testing.do_bench (CUDA events, warm-up, the L2 flushed before every call). CPU: one warm-up call,
    then the median of `repeat` perf_counter timings."""
    if torch.device(device).type == "cuda":
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
    On a GPU there are enough sets for their inputs together to exceed twice the L2 (60 MB on an H200)."""

    def __init__(self, make: Callable[[int], tuple], set_bytes: int, device, max_sets: int = 16):
        device = torch.device(device)
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


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_pass(op, pss: str, make: Callable[[int], tuple], device, check=None, **timer) -> dict:
    """One figure: op's first call on make(0) timed apart (setup_s: compiling, autotuning, cuDNN's algorithm
    search) and checked (rel_err = check(its (out, grads), the inputs), e.g. pass_err against `reference`), then
    timed on input sets rotated past the L2."""
    first = make(0)
    sync(device)
    t0 = time.perf_counter()
    got = run_pass(op, pss, first)
    sync(device)
    setup_s = time.perf_counter() - t0
    err = None if check is None else check(got, first)
    del got
    rot = Rotation(lambda i: first if i == 0 else make(i), sum(t.nbytes for t in first), device)
    t = time_ms(lambda: run_pass(op, pss, rot.next()), device, **timer)
    return {**t, "rel_err": err, "setup_s": round(setup_s, 3), "input_sets": len(rot)}
