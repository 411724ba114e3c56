"""`alexnet bench lessons`: every step of triton_kernels/lessons on AlexNet's layers, from step 1 to cuDNN.

    conv1..conv5         step1_direct_conv, step2_implicit_gemm, step3_tap_walk (forward), step4_backward and
                         step4b_fused_backward (fwd+bwd)
    pool1, pool2, pool5  step5_pool_direct (forward), step6_pool_argmax (forward, fwd+bwd)
each beside `production` (triton_kernels.conv2d_relu / max_pool2d, what the lessons lead to) and `cudnn` (eager
torch, cudnn.benchmark on, NCHW and channels_last: the faster is the reference of every ratio). Every conv step
computes relu(conv2d(x, w) + b). A step runs in the layout it is written for (steps 3, 4 and 4b: channels_last,
the rest NCHW), production convs in channels_last. Each figure is the lessons' own (harness.figure: checked against
float64, then timed, as a step times itself with `python -m triton_kernels.lessons.<step>`); this module adds the
napkin math and appends each figure to <out-dir>/<machine>.jsonl.

GPU: batch 128 at 224x224, bf16 (the tensor-core path). On a CPU it is a labelled smoke run: each layer's
kernel/stride/padding at the lessons' small sizes (a few channels, images of 5..23 pixels, batch 1), fp32, Triton
in its interpreter, torch's CPU kernels as `torch-cpu`; never GPU results.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from torch_model.bench.common import (add_common_flags, append_rows, csv_choices, format_table, num, positive_int,
                                      report_failures)
from torch_model.bench.layer_specs import LayerSpec
from torch_model.bench.layers import PASSES
from torch_model.bench.timing import (check_dtypes, cudnn_benchmark, describe, import_triton_kernels, machine_info,
                                      measure_peaks, now_iso, precision, today, torch_dtype)
from torch_model.device import resolve_device

# The layers are the lessons' own (harness.LAYERS, imported lazily so that `--help` never imports Triton; the tests
# hold them equal).
LAYERS = ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5")
GPU_DEFAULTS = dict(batch=128, dtype="bf16")
CPU_DEFAULTS = dict(batch=1, dtype="fp32")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layers", type=csv_choices(LAYERS, "layer"), default=list(LAYERS),
                        help=f"comma-separated subset of {','.join(LAYERS)} (default: all)")
    parser.add_argument("--passes", type=csv_choices(PASSES, "pass"), default=list(PASSES),
                        help="fwd, fwd+bwd (default: both)")
    parser.add_argument("--batch", type=positive_int, help="batch size (default 128 on a GPU, 1 on a CPU)")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), help="default bf16 on a GPU, fp32 on a CPU")
    parser.add_argument("--warmup-ms", type=float, default=25.0, help="do_bench warm-up on a GPU (default 25)")
    parser.add_argument("--rep-ms", type=float, default=100.0, help="do_bench timed repetitions on a GPU (default 100)")
    parser.add_argument("--repeat", type=positive_int, default=1, help="timed calls per figure on a CPU (median)")
    add_common_flags(parser)


def plan(layers, passes) -> list[tuple[str, str, str, str]]:
    """[(layer, pass, impl, layout), ...]: every step of each chain, production, cuDNN in both layouts."""
    from triton_kernels.lessons import CHAINS, harness

    todo = []
    for layer in layers:
        kind = "pool" if layer in harness.POOLS else "conv"
        for pss in passes:
            for impl in CHAINS[(kind, pss)]:
                todo.append((layer, pss, impl, harness.layout_of(impl, kind)))
            todo += [(layer, pss, "cudnn", "nchw"), (layer, pss, "cudnn", "channels_last")]
    return todo


def napkin(e: dict, tdt: torch.dtype, base: str) -> dict:
    """A figure's FLOPs and bytes at its real shapes (the CPU smoke sizes included), and its rates."""
    from triton_kernels.lessons import harness

    (n, c, h, w), f = e["x_shape"], e["dy_shape"][1]
    if e["kind"] == "pool":
        _, k, s, p, _ = harness.POOLS[e["layer"]]
    else:
        _, _, k, s, p, _ = harness.CONVS[e["layer"]]
    spec = LayerSpec(e["layer"], e["kind"], n, c, h, w, f, k, s, p, first=e["layer"] == "conv1")
    # pools: whose traffic (the lessons' argmax records are ours)
    nbytes = spec.bytes(e["pass"], torch.finfo(tdt).bits // 8, impl=base if e["impl"] == "cudnn" else "triton")
    flops = spec.flops(e["pass"])
    return {"flops": flops, "bytes": nbytes, "tflops": flops / (e["ms"] * 1e9) if spec.kind == "conv" else None,
            "gb_per_s": nbytes / (e["ms"] * 1e6), "shape": spec.shapes()}


def table(entries: list[dict]) -> str:
    """One row per figure, with its speed over the faster cuDNN layout and over the previous step of its chain."""
    from triton_kernels.lessons import CHAINS

    best, by = {}, {}
    for e in entries:
        k = (e["layer"], e["pass"])
        if e["step"] in ("cudnn", "torch-cpu"):
            best[k] = min(best.get(k, float("inf")), e["ms"])
        by[(*k, e["step"])] = e
    rows = []
    for e in entries:
        k = (e["layer"], e["pass"])
        chain = CHAINS[(e["kind"], e["pass"])]
        prev = by.get((*k, chain[chain.index(e["step"]) - 1])) if e["step"] in chain[1:] else None
        rows.append([e["layer"], e["pass"], e["step"], e["layout"], num(e["ms"]),
                     num(e["tflops"]) if e["kind"] == "conv" else num(e["gb_per_s"]),
                     num(best[k] / e["ms"]) if k in best else "", num(prev["ms"] / e["ms"]) if prev else "",
                     f"{e['rel_err']:.0e}" + ("" if e["err_ok"] else " WRONG")])
    return format_table(["layer", "pass", "step", "layout", "ms", "TFLOP/s | GB/s", "x cudnn", "x previous", "err"],
                        rows)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    device = resolve_device(args.device)
    import_triton_kernels()
    from triton_kernels.lessons import harness

    gpu = device.type == "cuda"
    defaults = GPU_DEFAULTS if gpu else CPU_DEFAULTS
    batch, dtype = args.batch or defaults["batch"], args.dtype or defaults["dtype"]
    check_dtypes([dtype], device, "--dtype")
    tdt = torch_dtype(dtype)
    base = "cudnn" if gpu else "torch-cpu"
    todo = plan(args.layers, args.passes)
    info = machine_info(device)
    print(f"alexnet bench lessons on {info['device_name']}: batch {batch}, {dtype}, {len(todo)} figures", flush=True)
    if not gpu:
        print("CPU smoke run: the lessons' small sizes, Triton in its interpreter, torch CPU kernels as 'torch-cpu'; "
              "NOT GPU results", flush=True)
    path = Path(args.out_dir) / f"{info['machine']}.jsonl"
    entries, failures = [], []
    with cudnn_benchmark():
        peak = measure_peaks(device, [dtype])
        run_facts = {"bench": "lessons", **info, "date": today(), "started": now_iso(), "argv": sys.argv[1:],
                     "peak": peak, "dtype": dtype, "small_sizes": not gpu}
        for layer, pss, impl, layout in tqdm(todo, desc="lessons", unit="figure", disable=args.no_progress):
            try:
                with precision(dtype):
                    e = harness.figure(layer, pss, impl, batch, tdt, device, args.seed, small=not gpu, layout=layout,
                                       warmup_ms=args.warmup_ms, rep_ms=args.rep_ms, repeat=args.repeat)
            except Exception as exc:  # one broken figure is recorded, the run goes on, the exit status is 1
                failures.append(f"{layer} {pss} {impl} {layout}: {type(exc).__name__}: {exc}")
                continue
            e = {**e, "step": base if impl == "cudnn" else impl, **napkin(e, tdt, base),
                 "interpreter": not gpu and impl != "cudnn"}
            entries.append(e)
            append_rows(path, [{**run_facts, **e}])  # at once: a run cut short keeps what it measured
    failures += [f"{e['layer']} {e['pass']} {e['step']} {e['layout']}: WRONG result, rel_err {e['rel_err']:.1e}"
                 for e in entries if not e["err_ok"]]
    print(describe(info, peak))
    print(table(entries))
    print(f"appended to {path}")
    return report_failures(failures)
