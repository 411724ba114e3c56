"""What `alexnet bench layers` and `alexnet bench train` share: the machine, the timer, the peaks measured in the
same run, the napkin math, the results file (read, validate, merge, atomic write), tables and bar charts.

The napkin math, per layer (N batch, C channels in, F filters out, H/W input, OH/OW output, K kernel):

    conv forward      FLOPs = 2 * N * F * OH * OW * C * K * K        (multiply + add; bias and ReLU left out: < 0.1%)
    conv backward     FLOPs = 2 * forward (dW and dX), 1 * forward for conv1 (its input is the data: no dX)
    conv bytes        forward: x + w + b + y;  backward: dy + y (ReLU mask) + x + w + dx + dw + db
    pool bytes        forward: x + y;  backward: dy + x (the argmax is recomputed) + dx   (pools do no matmul work)
    linear            as a 1x1 conv: FLOPs = 2 * N * in * out forward, twice that backward

Each measured time is set against two ceilings measured in the same run on the same device: a large matrix product
(bf16 on the GPU, also TF32 / fp32 as the run needs; fp32 on a CPU) and a large device-to-device copy (bytes read +
bytes written). `floor_ms = max(FLOPs / matmul peak, bytes / copy bandwidth)` is the time no kernel can beat by much;
`peak_fraction` is the achieved rate over the ceiling that bounds the layer (matmul for convs, copy for pools).

`python -m torch_model.bench.common --readme docs/benchmarks/README.md` re-renders the README's results tables from
the newest GPU results file; CPU (interpreter) files are never rendered there.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch

from torch_model.device import resolve_device  # noqa: F401  (C.resolve_device in the benches)
from torch_model.files import atomic_write

DEFAULT_OUT_DIR = Path("docs/benchmarks/results")
DEFAULT_README = Path("docs/benchmarks/README.md")
DTYPES = ("bf16", "tf32", "fp32")        # fp32 = strict fp32 (TF32 off); on a CPU the only one there is
PASSES = ("fwd", "fwd+bwd")
GOAL = {"conv_fwd_bf16": 1.10, "conv_fwd_tf32": 1.0, "conv_fwd+bwd": 1.0, "pool_fwd+bwd": 1.2}
# relative error (||out - ref|| / ||ref|| against float64) above which a figure is flagged as wrong, per dtype
REL_ERR_TOL = {"fp32": 1e-4, "tf32": 5e-3, "bf16": 5e-2}


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


# ----------------------------------------------------------------------------------------------- napkin math

@dataclass(frozen=True)
class LayerSpec:
    """One conv (+bias+ReLU), pool or linear of the seed's AlexNet, at a batch and input size.
    N batch, C channels in, F filters out, H/W input height/width, K kernel."""
    name: str
    kind: str          # "conv" | "pool" | "linear"
    N: int
    C: int
    H: int
    W: int
    F: int
    K: int
    stride: int
    padding: int
    first: bool = False  # the first layer: its input is the data, so the backward computes no dX

    @property
    def OH(self) -> int:
        # OH = (H + 2*pad - (K-1) - 1) // stride + 1
        return (self.H + 2 * self.padding - self.K) // self.stride + 1

    @property
    def OW(self) -> int:
        return (self.W + 2 * self.padding - self.K) // self.stride + 1

    def shapes(self) -> dict:
        return {"N": self.N, "C": self.C, "H": self.H, "W": self.W, "F": self.F, "K": self.K,
                "stride": self.stride, "padding": self.padding, "OH": self.OH, "OW": self.OW}

    def flops(self, passes: str = "fwd") -> int:
        """Multiply-adds counted as 2 FLOPs; pools count 0 (they are judged by bytes)."""
        if self.kind == "pool":
            return 0
        fwd = 2 * self.N * self.F * self.OH * self.OW * self.C * self.K * self.K
        if passes == "fwd":
            return fwd
        return fwd * (2 if self.first else 3)  # + dW (+ dX)

    def bytes(self, passes: str = "fwd", itemsize: int = 4) -> int:
        """The fewest bytes the pass must move through device memory (each tensor read or written once)."""
        x = self.N * self.C * self.H * self.W
        y = self.N * self.F * self.OH * self.OW
        if self.kind == "pool":
            fwd = x + y
            bwd = y + x + x                                # dy, x (recompute the argmax), dx
        else:
            w = self.F * self.C * self.K * self.K
            b = self.F
            fwd = x + w + b + y
            bwd = y + y + x + w + (0 if self.first else x) + w + b  # dy, y, x, w, dx, dw, db
        return itemsize * (fwd if passes == "fwd" else fwd + bwd)


def alexnet_specs(batch: int = 128, resize: int = 224, channel_div: int = 1) -> list[LayerSpec]:
    """conv1..conv5, pool1..pool3, fc1..fc3 of the seed's nn.Sequential, with their input shapes, read off the
    model itself (built on the meta device: no memory). channel_div > 1 scales every channel count down (a CPU
    smoke run in the interpreter); the first conv keeps its 1 input channel."""
    from torch import nn

    from torch_model.model import alexnet

    if batch < 1 or resize < 1 or channel_div < 1:
        raise ValueError(f"batch, resize and channel_div must be >= 1, got {batch}, {resize}, {channel_div}")
    with torch.device("meta"):
        net = alexnet(init=False)
    specs: list[LayerSpec] = []
    C, H, W = 1, resize, resize
    counts = {"conv": 0, "pool": 0, "linear": 0}
    prefix = {"conv": "conv", "pool": "pool", "linear": "fc"}

    def scaled(c: int) -> int:
        return c if c == 1 else max(1, c // channel_div)

    for m in net:
        if isinstance(m, nn.Conv2d):
            kind, F, K, s, p = "conv", scaled(m.out_channels), m.kernel_size[0], m.stride[0], m.padding[0]
        elif isinstance(m, nn.MaxPool2d):
            kind, F, K, s, p = "pool", C, m.kernel_size, m.stride, m.padding
        elif isinstance(m, nn.Linear):
            kind, F, K, s, p = "linear", m.out_features, 1, 1, 0
            F = F if m.out_features <= 10 else max(1, F // channel_div)
            C, H, W = C * H * W, 1, 1
        else:
            continue
        counts[kind] += 1
        spec = LayerSpec(f"{prefix[kind]}{counts[kind]}", kind, batch, C, H, W, F, K, s, p, first=not specs)
        if spec.OH < 1 or spec.OW < 1:
            raise ValueError(f"--resize {resize}: {spec.name} gets a {H}x{W} input, smaller than its {K}x{K} window")
        specs.append(spec)
        C, H, W = F, spec.OH, spec.OW
    return specs


def train_step_flops(batch: int, resize: int = 224) -> int:
    """FLOPs of one training step of the seed AlexNet: forward + backward of every conv and linear."""
    return sum(s.flops("fwd+bwd") for s in alexnet_specs(batch, resize) if s.kind != "pool")


# ----------------------------------------------------------------------------------------------- results file

LAYER_KEY = ("layer", "dtype", "pass", "impl", "layout", "batch")
TRAIN_KEY = ("backend", "dtype", "layout", "batch")
SEED_KEY = ("backend", "dtype", "epochs", "batch", "limit_train", "limit_test")
SECTION_KEYS = {"layers": LAYER_KEY, "train": TRAIN_KEY, "seed_run": SEED_KEY}
REQUIRED = {
    "layers": {"layer": str, "dtype": str, "pass": str, "impl": str, "layout": str, "batch": int, "ms": float,
               "tflops": (float, type(None))},
    "train": {"backend": str, "dtype": str, "batch": int, "img_per_s": float},
    "seed_run": {"backend": str, "dtype": str, "epochs": int, "seconds": float, "test_acc": float},
}
GPU_IMPLS = ("triton", "cudnn", "compile")
CPU_IMPLS = ("triton", "torch-cpu")


def results_path(out_dir: str | os.PathLike, machine: str, date: str) -> Path:
    return Path(out_dir) / f"{date}-{machine}.json"


def validate_results(data: object, where: str = "results") -> dict:
    """Raise ValueError listing everything that does not match the issue's schema; return the data."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
    for key, typ in (("machine", str), ("date", str), ("torch", str), ("cpu", bool)):
        if not isinstance(data.get(key), typ):
            problems.append(f"{key!r} missing or not a {typ.__name__}")
    if not (data.get("triton") is None or isinstance(data.get("triton"), str)):
        problems.append("'triton' must be a version string or null")
    peak = data.get("peak")
    cpu = data.get("cpu") is True
    if not isinstance(peak, dict):
        problems.append("'peak' missing or not an object")
    else:
        for key in ("bf16_matmul_tflops", "copy_tb_per_s"):
            value = peak.get(key, "missing")
            ok = isinstance(value, (int, float)) and value > 0 or (cpu and key == "bf16_matmul_tflops" and value is None)
            if not ok:
                problems.append(f"peak.{key} = {value!r} (a positive number{'; null allowed on a CPU' if cpu else ''})")
    impls = CPU_IMPLS + ("compile",) if cpu else GPU_IMPLS
    for section, fields in REQUIRED.items():
        entries = data.get(section, [])
        if not isinstance(entries, list):
            problems.append(f"{section!r} must be a list")
            continue
        for i, e in enumerate(entries):
            if not isinstance(e, dict):
                problems.append(f"{section}[{i}] is not an object")
                continue
            for name, typ in fields.items():
                value = e.get(name, "<missing>")
                types = typ if isinstance(typ, tuple) else (typ,)
                if float in types and isinstance(value, int) and not isinstance(value, bool):
                    continue
                if not isinstance(value, types) or isinstance(value, bool):
                    problems.append(f"{section}[{i}].{name} = {value!r}")
            if section == "layers":
                if e.get("pass") not in PASSES:
                    problems.append(f"layers[{i}].pass = {e.get('pass')!r}, not one of {PASSES}")
                if e.get("impl") not in impls:
                    problems.append(f"layers[{i}].impl = {e.get('impl')!r}, not one of {impls}")
            if e.get("dtype") not in DTYPES:
                problems.append(f"{section}[{i}].dtype = {e.get('dtype')!r}, not one of {DTYPES}")
    if problems:
        raise ValueError(f"{where} does not match the results schema: " + "; ".join(problems[:12])
                         + (f" (+{len(problems) - 12} more)" if len(problems) > 12 else ""))
    return data


def load_results(path: str | os.PathLike) -> dict | None:
    """The results file at path, validated; None when there is none yet."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); move it away or pass another --out-dir") from exc
    return validate_results(data, str(path))


def _key(entry: dict, key: Sequence[str]) -> tuple:
    return tuple(entry.get(k) for k in key)


def merge_results(old: dict | None, new: dict) -> dict:
    """`new` (one run: metadata plus some of layers/train/seed_run) folded into `old` (the file so far).
    An entry of `new` replaces the old entry with the same key (layer, dtype, pass, impl, layout, batch for layers;
    backend, dtype, batch for train; ...); all other old entries stay. Top-level metadata and the peak become the
    new run's; each entry keeps the peak_fraction of its own run, and runs[section] records each run."""
    if old is not None and old.get("cpu") != new.get("cpu"):
        raise ValueError("refusing to merge CPU and GPU results into one file")
    merged = dict(old or {})
    for k, v in new.items():
        if k in SECTION_KEYS or k == "runs":
            continue
        merged[k] = v
    for section, key in SECTION_KEYS.items():
        entries = list(merged.get(section, []))
        if section in new:
            fresh = {_key(e, key) for e in new[section]}
            entries = [e for e in entries if _key(e, key) not in fresh] + list(new[section])
        merged[section] = entries
    runs = dict(merged.get("runs", {}))
    runs.update(new.get("runs", {}))
    merged["runs"] = runs
    return merged


def atomic_write_bytes(path: str | os.PathLike, write: Callable[[object], None], mode: str = "wb") -> None:
    """Write through a temporary file in the same folder, then os.replace: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write, mode=mode)


def write_json(path: str | os.PathLike, data: dict) -> None:
    text = json.dumps(data, indent=1, sort_keys=False, allow_nan=False, default=str) + "\n"
    atomic_write_bytes(path, lambda f: f.write(text), mode="w")


def save_run(out_dir: str | os.PathLike, run: dict) -> tuple[Path, dict]:
    """Merge one run into <out_dir>/<date>-<machine>.json (atomic) and return (path, merged file)."""
    validate_results({**run, **{s: run.get(s, []) for s in SECTION_KEYS}}, "this run")
    path = results_path(out_dir, run["machine"], run["date"])
    merged = validate_results(merge_results(load_results(path), run), str(path))
    write_json(path, merged)
    return path, merged


def clean_json(value):
    """NaN/inf -> None, so the file stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------- tables

def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], markdown: bool = False) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = lambda r: "  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in cells[1:]])


def _f(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _g(value: float | None) -> str:
    """3 significant figures, without an exponent for everyday magnitudes (0.00123, 12.3, 4560)."""
    if value is None:
        return ""
    if value == 0 or 1e-4 <= abs(value) < 1e6:
        digits = max(0, 2 - math.floor(math.log10(abs(value)))) if value else 0
        return f"{value:.{digits}f}"
    return f"{value:.2e}"


def baseline_impl(data: dict) -> str:
    return "torch-cpu" if data.get("cpu") else "cudnn"


def best_by_impl(data: dict) -> dict[tuple, dict]:
    """(layer, dtype, pass, impl) -> its fastest layout's entry."""
    best: dict[tuple, dict] = {}
    for e in data.get("layers", []):
        k = (e["layer"], e["dtype"], e["pass"], e["impl"])
        if k not in best or e["ms"] < best[k]["ms"]:
            best[k] = e
    return best


def layer_rows(data: dict) -> tuple[list[str], list[list]]:
    """One row per (layer, dtype, pass, impl, layout): time, work, rate, fraction of peak, speed-up vs the best
    baseline (cuDNN on the GPU, torch on a CPU) layout."""
    base = baseline_impl(data)
    best = best_by_impl(data)
    headers = ["layer", "dtype", "pass", "impl", "layout", "batch", "ms", "GFLOP | MB", "TFLOP/s | GB/s",
               "% peak", f"x {base}", "err"]
    order = {n: i for i, n in enumerate(["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool3"])}
    impl_order = {n: i for i, n in enumerate(["triton", "cudnn", "torch-cpu", "compile"])}
    rows = []
    for e in sorted(data.get("layers", []), key=lambda e: (order.get(e["layer"], 99), e["dtype"], e["pass"],
                                                           impl_order.get(e["impl"], 9), e["layout"])):
        ref = best.get((e["layer"], e["dtype"], e["pass"], base))
        ratio = ref["ms"] / e["ms"] if ref else None
        is_pool = e.get("kind") == "pool" or e["layer"].startswith("pool")
        work = _g(e.get("bytes", 0) / 1e6) if is_pool else _g(e.get("flops", 0) / 1e9)
        rate = _g(e.get("gb_per_s")) if is_pool else _g(e.get("tflops"))
        frac = e.get("peak_fraction")
        err = e.get("rel_err")
        err_s = "" if err is None else f"{err:.0e}" + ("" if e.get("err_ok", True) else " WRONG")
        rows.append([e["layer"], e["dtype"], e["pass"], e["impl"], e["layout"], e["batch"], _g(e["ms"]),
                     work, rate, _f(None if frac is None else 100 * frac, ".0f"), _g(ratio), err_s])
    return headers, rows


def goal(layer: str, dtype: str, pss: str) -> tuple[float, float | None] | None:
    """Issue 5's goal for a Triton figure: (minimum speed-up over cuDNN, minimum fraction of peak or None)."""
    if layer.startswith("pool"):
        return (1.2, 0.70) if pss == "fwd+bwd" else None
    if pss == "fwd+bwd":
        return (1.0, None)
    if dtype == "bf16":
        return (1.10, None if layer == "conv1" else 0.50)
    return (1.0, None) if dtype == "tf32" else None


def summary_rows(data: dict) -> tuple[list[str], list[list]]:
    """One row per (layer, dtype, pass): the best layout of each implementation side by side, and the goal."""
    base = baseline_impl(data)
    best = best_by_impl(data)
    headers = ["layer", "dtype", "pass", "GFLOP | MB", f"{base} ms", "triton ms", "TFLOP/s | GB/s", "% peak",
               f"triton x {base}", "compile ms", f"compile x {base}", "goal", "met"]
    order = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool3"]
    groups = sorted({(e["layer"], e["dtype"], e["pass"]) for e in data.get("layers", [])},
                    key=lambda k: (order.index(k[0]) if k[0] in order else 99, k[1], k[2]))
    rows = []
    for layer, dtype, pss in groups:
        ref, tri, comp = (best.get((layer, dtype, pss, i)) for i in (base, "triton", "compile"))
        any_e = ref or tri or comp
        is_pool = layer.startswith("pool")
        work = _g(any_e.get("bytes", 0) / 1e6) if is_pool else _g(any_e.get("flops", 0) / 1e9)
        cell = lambda e: "" if e is None else f"{_g(e['ms'])} ({e['layout']})"  # noqa: E731
        ratio = lambda e: _g(ref["ms"] / e["ms"]) if e and ref else ""  # noqa: E731
        rate = frac = ""
        met = ""
        g = goal(layer, dtype, pss)
        if tri is not None:
            rate = _g(tri.get("gb_per_s") if is_pool else tri.get("tflops"))
            frac = _f(None if tri.get("peak_fraction") is None else 100 * tri["peak_fraction"], ".0f")
            if g and ref and not data.get("cpu"):
                ok = ref["ms"] / tri["ms"] >= g[0] and (g[1] is None or (tri.get("peak_fraction") or 0) >= g[1])
                met = "WRONG" if tri.get("err_ok") is False else "yes" if ok else "no"
        goal_s = "" if g is None else f">= {g[0]:.2f}x" + ("" if g[1] is None else
                                                             f", >= {100 * g[1]:.0f}% {'copy' if is_pool else 'peak'}")
        rows.append([layer, dtype, pss, work, cell(ref), cell(tri), rate, frac, ratio(tri), cell(comp), ratio(comp),
                     goal_s, met])
    return headers, rows


def train_rows(data: dict) -> tuple[list[str], list[list]]:
    headers = ["backend", "dtype", "layout", "batch", "img/s", "step ms", "TFLOP/s", "% peak", "x torch",
               "convs ran in"]
    ref: dict = {}  # the best eager-torch figure (over layouts) per (dtype, batch): what "x torch" divides by
    for e in data.get("train", []):
        if e["backend"] == "torch":
            ref[(e["dtype"], e["batch"])] = max(ref.get((e["dtype"], e["batch"]), 0), e["img_per_s"])
    rows = []
    for e in sorted(data.get("train", []),
                    key=lambda e: (e["dtype"], e["batch"], e["backend"], e.get("layout") or "nchw")):
        r = ref.get((e["dtype"], e["batch"]))
        frac = e.get("peak_fraction")
        rows.append([e["backend"], e["dtype"], e.get("layout") or "nchw", e["batch"], _g(e["img_per_s"]),
                     _g(e.get("step_ms")),
                     _g(e.get("tflops")), _f(None if frac is None else 100 * frac, ".0f"),
                     _f(r and e["img_per_s"] / r, ".2f"), ",".join(e.get("conv_dtypes") or [])])
    return headers, rows


def seed_rows(data: dict) -> tuple[list[str], list[list]]:
    headers = ["backend", "dtype", "epochs", "train images", "seconds", "test acc", "status"]
    rows = [[e["backend"], e["dtype"], e["epochs"], e.get("train_images", ""), _f(e["seconds"], ".1f"),
             _f(e["test_acc"], ".4f"), e.get("status", "")] for e in data.get("seed_run", [])]
    return headers, rows


def describe(data: dict) -> str:
    peak = data.get("peak", {})
    parts = [f"{data.get('device_name', data['machine'])}, {data['date']}, torch {data['torch']}, "
             f"triton {data.get('triton')}"]
    if data.get("cpu"):
        parts.append(f"CPU machine: fp32 matmul peak {_f(peak.get('fp32_matmul_tflops'), '.3f')} TFLOP/s, copy "
                     f"{_f(peak.get('copy_tb_per_s'), '.3f')} TB/s. Triton runs in its interpreter: these are "
                     f"smoke-test numbers, NOT GPU results")
    else:
        rates = ", ".join(f"{d} matmul {peak[f'{d}_matmul_tflops']:.0f} TFLOP/s" for d in DTYPES
                          if peak.get(f"{d}_matmul_tflops"))
        parts.append(f"measured peaks: {rates}, copy {peak.get('copy_tb_per_s', 0):.2f} TB/s")
    return "; ".join(parts)


def render_markdown(data: dict) -> str:
    """The README's results section for one GPU results file."""
    if data.get("cpu"):
        raise ValueError(f"{data.get('machine')}: a CPU (interpreter) results file is never rendered as results")
    out = [f"Measured on {describe(data)}.", ""]
    for title, rows_of in (("Per layer (each implementation's best layout)", summary_rows),
                           ("Training step", train_rows), ("Full seed run", seed_rows)):
        headers, rows = rows_of(data)
        out += [f"### {title}", "", format_table(headers, rows, markdown=True) if rows else "(not measured)", ""]
    return "\n".join(out).rstrip() + "\n"


BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def latest_gpu_results(results_dir: str | os.PathLike) -> Path | None:
    """The newest (by the date in its name) results file from a GPU; CPU files are skipped."""
    found = []
    for p in Path(results_dir).glob("*.json"):
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and data.get("cpu") is False:
            found.append((p.name, p))
    return max(found)[1] if found else None


def update_readme(readme: str | os.PathLike = DEFAULT_README, results_dir: str | os.PathLike = DEFAULT_OUT_DIR) -> Path | None:
    """Replace the text between the README's results markers with the newest GPU file's tables."""
    readme = Path(readme)
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme}: no {BEGIN} ... {END} markers to put the results between")
    latest = latest_gpu_results(results_dir)
    if latest is None:
        body = (f"No GPU results file in {results_dir} yet: the H200 run is still owed. "
                f"CPU smoke results are never shown here.\n")
    else:
        data = load_results(latest)
        body = f"From [`{latest.name}`](results/{latest.name}).\n\n" + render_markdown(data)
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    new = f"{head}{BEGIN}\n{body}{END}{tail}"
    atomic_write_bytes(readme, lambda f: f.write(new), mode="w")
    return latest


# ----------------------------------------------------------------------------------------------- plots

def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save_png(fig, path: Path) -> None:
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png"))


def _banner(data: dict) -> str:
    base = f"{data.get('device_name', data['machine'])} - {data['date']} - torch {data['torch']}, triton {data.get('triton')}"
    return base + ("\nCPU smoke run, Triton in its interpreter: NOT GPU results" if data.get("cpu") else "")


def _grouped_bars(ax, groups: list, series: list[str], value: Callable[[str, object], float | None]) -> None:
    """One cluster of bars per group, one bar per series (value None: no bar), each bar labelled."""
    width = 0.8 / max(1, len(series))
    for j, name in enumerate(series):
        xs, ys = [], []
        for i, group in enumerate(groups):
            y = value(name, group)
            if y is not None:
                xs.append(i + (j - (len(series) - 1) / 2) * width)
                ys.append(y)
        bars = ax.bar(xs, ys, width, label=name)
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
    ax.grid(axis="y", alpha=0.3)


def _finish_figure(fig, data: dict, path: Path) -> Path:
    fig.suptitle(_banner(data), fontsize=8)
    fig.tight_layout()
    _save_png(fig, path)
    _plt().close(fig)
    return path


def plot_layers(data: dict, path: Path) -> Path | None:
    """Per-layer speed-up over the best baseline layout (cuDNN, or torch on a CPU): one panel per dtype x pass,
    one bar per implementation (its best layout). Above 1 = faster than the baseline."""
    entries = data.get("layers", [])
    if not entries:
        return None
    plt = _plt()
    base = baseline_impl(data)
    best = best_by_impl(data)
    panels = sorted({(e["dtype"], e["pass"]) for e in entries})
    order = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool3"]
    layers = [n for n in order if any(e["layer"] == n for e in entries)]
    impls = [i for i in ("triton", "compile") if any(e["impl"] == i for e in entries)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6.0, 1.1 * len(layers) + 2), 2.8 * len(panels) + 0.8),
                             dpi=110, squeeze=False)
    for ax, (dtype, pss) in zip(axes[:, 0], panels):
        def speedup(impl, layer):
            e, ref = best.get((layer, dtype, pss, impl)), best.get((layer, dtype, pss, base))
            return ref["ms"] / e["ms"] if e and ref else None
        _grouped_bars(ax, layers, impls, speedup)
        ax.axhline(1.0, color="k", lw=0.8, label=f"{base} (its best layout) = 1")
        ax.set_xticks(range(len(layers)), layers)
        ax.set_ylabel(f"x {base} (higher = faster)")
        ax.set_title(f"{dtype}, {pss}", fontsize=9)
        ax.legend(fontsize=7)
    return _finish_figure(fig, data, path)


def plot_train(data: dict, path: Path) -> Path | None:
    """Training-step images/s per backend, grouped by dtype."""
    entries = data.get("train", [])
    if not entries:
        return None
    plt = _plt()
    groups = sorted({(e["dtype"], e["batch"]) for e in entries})
    def label(e: dict) -> str:  # a backend, with its layout when it is not the default NCHW
        layout = e.get("layout") or "nchw"
        return e["backend"] if layout == "nchw" else f"{e['backend']} ({layout})"

    order = {"torch": 0, "compile": 1, "triton": 2}
    series = sorted({label(e) for e in entries}, key=lambda s: (order.get(s.split()[0], 9), s))
    img_per_s = {(label(e), e["dtype"], e["batch"]): e["img_per_s"] for e in entries}
    fig, ax = plt.subplots(figsize=(max(5.0, 2.2 * len(groups) + 2), 3.8), dpi=110)
    _grouped_bars(ax, groups, series, lambda name, group: img_per_s.get((name, *group)))
    ax.set_xticks(range(len(groups)), [f"{d}, batch {b}" for d, b in groups])
    ax.set_ylabel("training images / s")
    ax.legend(fontsize=8)
    return _finish_figure(fig, data, path)


def finish(out_dir: str | os.PathLike, run: dict, section: str, readme: str | os.PathLike | None) -> Path:
    """Merge the run into its results file, redraw both charts from the merged file, print where they are."""
    path, merged = save_run(out_dir, run)
    stem = path.with_suffix("")
    written = [path]
    for plot, suffix in ((plot_layers, "layers"), (plot_train, "train")):
        png = plot(merged, Path(f"{stem}-{suffix}.png"))
        if png is not None:
            written.append(png)
    print("wrote " + ", ".join(str(p) for p in written))
    if run.get("cpu"):
        print("(a CPU smoke run: do not commit it as a result; GPU results come from a CUDA machine)")
    if readme is not None:
        latest = update_readme(readme, out_dir)
        print(f"{readme}: results tables " + (f"rendered from {latest}" if latest else "say the GPU run is owed"))
    return path


@contextmanager
def cudnn_benchmark() -> Iterator[None]:
    """cudnn.benchmark on ("the best cuDNN": its fastest algorithm per shape), restored on exit."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def report_failures(failures: list[str]) -> int:
    """Print the figures that failed (each was recorded and the run went on); the exit status: 1 if any."""
    if failures:
        print(f"{len(failures)} figure(s) FAILED:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
    return 1 if failures else 0


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA if there is one) | cpu | cuda[:N]")
    parser.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR),
                        help="where <date>-<machine>.json and its PNG charts go (default: %(default)s)")
    parser.add_argument("--update-readme", nargs="?", const=str(DEFAULT_README), default=None, metavar="README",
                        help="afterwards, re-render the results tables in README (default %(const)s) from the "
                             "newest GPU results file in --out-dir")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def csv_choices(allowed: Sequence[str], name: str) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated subset of `allowed` (or "all"), in the order given, no repeats."""
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if items == ["all"]:
            return list(allowed)
        bad = [t for t in items if t not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"invalid {name} {','.join(bad) or repr(text)} "
                                             f"(choose a comma-separated list from: {', '.join(allowed)}, or all)")
        return list(dict.fromkeys(items))
    parse.__name__ = name
    return parse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torch_model.bench.common",
                                     description="re-render the benchmark README's results tables")
    parser.add_argument("--readme", default=str(DEFAULT_README))
    parser.add_argument("--results-dir", default=str(DEFAULT_OUT_DIR))
    parser.add_argument("--print", dest="show", metavar="RESULTS_JSON",
                        help="instead: print the tables of one results file (CPU files included, labelled)")
    args = parser.parse_args(argv)
    try:
        if args.show:
            data = load_results(args.show)
            if data is None:
                raise ValueError(f"{args.show}: no such file")
            print(describe(data))
            for rows_of in (layer_rows, summary_rows, train_rows, seed_rows):
                headers, rows = rows_of(data)
                if rows:
                    print("\n" + format_table(headers, rows))
            return 0
        latest = update_readme(args.readme, args.results_dir)
        print(f"{args.readme}: " + (f"tables from {latest}" if latest else "no GPU results yet (says the run is owed)"))
        return 0
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
