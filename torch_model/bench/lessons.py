"""`alexnet bench lessons`: every step of triton_kernels/lessons on AlexNet's layers, from step 1 to cuDNN.

    conv1..conv5  step1_direct_conv, step2_implicit_gemm, step3_tap_walk (forward), step4_backward and
                  step4b_fused_backward (fwd+bwd)
    pool1..pool3  step5_pool_direct (forward), step6_pool_argmax (forward, fwd+bwd)
each beside `production` (triton_kernels.conv2d_relu / max_pool2d, what the lessons lead to) and `cudnn` (eager
torch, cudnn.benchmark on, NCHW and channels_last: the faster is the reference of every ratio). Every conv step
computes relu(conv2d(x, w) + b). A step runs in the layout it is written for (steps 3, 4 and 4b: channels_last,
the rest NCHW), production convs in channels_last. Each figure is checked against float64 before it is timed.
The inputs, ops, references and chains come from triton_kernels/lessons/harness.py, which each step also uses to
check and time itself (`python -m triton_kernels.lessons.<step>`); this module adds the results file and charts.

GPU: batch 128 at 224x224, bf16 (the tensor-core path). On a CPU it is a labelled smoke run: each layer's
kernel/stride/padding at the lessons' small sizes (a few channels, images of 5..23 pixels, batch 1), fp32, Triton
in its interpreter, torch's CPU kernels as `torch-cpu`; never GPU results. The figures go to the results file's
`lessons` section and `<date>-<machine>-lessons.png` (per layer, each step's speed relative to cuDNN).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from torch_model.bench import common as C
from torch_model.bench.report import _g

# The layers, passes and (step, pass) chains are the lessons' own (triton_kernels/lessons: harness.LAYERS,
# harness.PASSES, CHAINS), imported lazily so that `alexnet bench numpy` never imports Triton; tests hold them equal.
LAYERS = ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool3")
GPU_DEFAULTS = dict(batch=128, dtype="bf16")
CPU_DEFAULTS = dict(batch=1, dtype="fp32")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layers", type=C.csv_choices(LAYERS, "layer"), default=list(LAYERS),
                        help=f"comma-separated subset of {','.join(LAYERS)} (default: all)")
    parser.add_argument("--passes", type=C.csv_choices(C.PASSES, "pass"), default=list(C.PASSES),
                        help="fwd, fwd+bwd (default: both)")
    parser.add_argument("--batch", type=C.positive_int, help="batch size (default 128 on a GPU, 1 on a CPU)")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), help="default bf16 on a GPU, fp32 on a CPU")
    parser.add_argument("--warmup-ms", type=float, default=25.0, help="do_bench warm-up on a GPU (default 25)")
    parser.add_argument("--rep-ms", type=float, default=100.0, help="do_bench timed repetitions on a GPU (default 100)")
    parser.add_argument("--repeat", type=C.positive_int, default=1, help="timed calls per figure on a CPU (median)")
    C.add_common_flags(parser)


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


def layer_spec(layer: str, inputs: tuple) -> C.LayerSpec:
    """The napkin math of one layer at the inputs' real shapes (the CPU smoke sizes included)."""
    from triton_kernels.lessons import harness

    x = inputs[0]
    n, c, h, w = x.shape
    if layer in harness.POOLS:
        _, k, s, p, _ = harness.POOLS[layer]
        return C.LayerSpec(layer, "pool", n, c, h, w, c, k, s, p)
    _, _, k, s, p, _ = harness.CONVS[layer]
    return C.LayerSpec(layer, "conv", n, c, h, w, inputs[1].shape[0], k, s, p, first=layer == "conv1")


def measure(layer: str, pss: str, impl: str, layout: str, batch: int, dtype: str, device: torch.device,
            seed: int = 0, warmup_ms: float = 25, rep_ms: float = 100, repeat: int = 1) -> dict:
    """One figure: checked against float64 on its first call, then timed (do_bench on a GPU)."""
    from triton_kernels.lessons import harness

    small = device.type != "cuda"
    tdt = C.torch_dtype(dtype)
    make = lambda i: harness.make_inputs(layer, batch, tdt, device, seed * 1000 + i, small, layout,  # noqa: E731
                                         grad=pss == "fwd+bwd")
    first = make(0)
    op = harness.make_op(impl, layer)
    t0 = time.perf_counter()
    out, grads = harness.run_pass(op, pss, first)
    C.sync(device)
    setup_s = time.perf_counter() - t0
    ref_out, ref_grads = harness.reference(layer, first)
    err = max([harness.rel_err(out, ref_out)] + [harness.rel_err(g, r) for g, r in zip(grads, ref_grads)])
    rot = C.Rotation(lambda i: first if i == 0 else make(i), sum(t.nbytes for t in first), device)
    t = C.time_ms(lambda: harness.run_pass(op, pss, rot.next()), device, warmup_ms=warmup_ms, rep_ms=rep_ms,
                  repeat=repeat)
    spec = layer_spec(layer, first)
    base = "cudnn" if device.type == "cuda" else "torch-cpu"
    byte_impl = base if impl == "cudnn" else "triton"  # pools: whose traffic (the lessons' records are ours)
    nbytes = spec.bytes(pss, torch.finfo(tdt).bits // 8, impl=byte_impl)
    flops = spec.flops(pss)
    return {"layer": layer, "kind": spec.kind, "step": base if impl == "cudnn" else impl, "dtype": dtype,
            "pass": pss, "layout": layout, "batch": batch, **t, "flops": flops, "bytes": nbytes,
            "tflops": flops / (t["ms"] * 1e9) if spec.kind == "conv" else None, "gb_per_s": nbytes / (t["ms"] * 1e6),
            "rel_err": err, "err_ok": bool(err <= C.REL_ERR_TOL[dtype]),
            "setup_s": round(setup_s, 3), "shape": spec.shapes(), "interpreter": small and impl != "cudnn"}


def add_ratios(entries: list[dict]) -> None:
    """vs_cudnn: the best baseline layout's time over this one's; vs_previous: the previous step's over this."""
    from triton_kernels.lessons import CHAINS

    best, by = {}, {}
    for e in entries:
        k = (e["layer"], e["pass"])
        if e["step"] in ("cudnn", "torch-cpu"):
            best[k] = min(best.get(k, float("inf")), e["ms"])
        by[(*k, e["step"])] = e
    for e in entries:
        k = (e["layer"], e["pass"])
        e["vs_cudnn"] = best[k] / e["ms"] if k in best else None
        chain = CHAINS[(e["kind"], e["pass"])]
        prev = by.get((*k, chain[chain.index(e["step"]) - 1])) if e["step"] in chain[1:] else None
        e["vs_previous"] = prev["ms"] / e["ms"] if prev else None


def table(entries: list[dict]) -> str:
    rows = [[e["layer"], e["pass"], e["step"], e["layout"], _g(e["ms"]),
             _g(e["tflops"]) if e["kind"] == "conv" else _g(e["gb_per_s"]),
             _g(e.get("vs_cudnn")), _g(e.get("vs_previous")), f"{e['rel_err']:.0e}"
             + ("" if e["err_ok"] else " WRONG")] for e in entries]
    return C.format_table(["layer", "pass", "step", "layout", "ms", "TFLOP/s | GB/s", "x cudnn", "x previous", "err"],
                          rows)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    device = C.resolve_device(args.device)
    C.import_triton_kernels()
    gpu = device.type == "cuda"
    defaults = GPU_DEFAULTS if gpu else CPU_DEFAULTS
    batch, dtype = args.batch or defaults["batch"], args.dtype or defaults["dtype"]
    C.check_dtypes([dtype], device, "--dtype")
    todo = plan(args.layers, args.passes)
    info = C.machine_info(device)
    print(f"alexnet bench lessons on {info['device_name']}: batch {batch}, {dtype}, {len(todo)} figures", flush=True)
    if not gpu:
        print("CPU smoke run: the lessons' small sizes, Triton in its interpreter, torch CPU kernels as 'torch-cpu'; "
              "NOT GPU results", flush=True)
    t_run, started = time.perf_counter(), C.now_iso()
    peak = C.measure_peaks(device, [dtype])
    entries, failures = [], []

    def result(complete: bool) -> dict:
        add_ratios(entries)
        run_meta = {"started": started, "seconds": round(time.perf_counter() - t_run, 1), "complete": complete,
                    "argv": sys.argv[1:], "batch": batch, "dtype": dtype, "small_sizes": not gpu,
                    "failures": failures}
        return C.clean_json({**info, "date": C.today(), "peak": peak, "lessons": entries,
                             "runs": {"lessons": run_meta}})

    with C.cudnn_benchmark():
        for layer, pss, impl, layout in tqdm(todo, desc="lessons", unit="figure", disable=args.no_progress):
            try:
                with C.precision(dtype):
                    entries.append(measure(layer, pss, impl, layout, batch, dtype, device, args.seed,
                                           args.warmup_ms, args.rep_ms, args.repeat))
            except Exception as exc:  # one broken figure is recorded, the run goes on, the exit status is 1
                failures.append(f"{layer} {pss} {impl} {layout}: {type(exc).__name__}: {exc}")
            C.save_run(args.out_dir, result(complete=False))  # a run cut short keeps what it measured
    failures += [f"{e['layer']} {e['pass']} {e['step']} {e['layout']}: WRONG result, rel_err {e['rel_err']:.1e}"
                 for e in entries if not e["err_ok"]]
    final = result(complete=True)
    print(table(entries))
    C.finish(args.out_dir, final, "lessons", args.update_readme)
    return C.report_failures(failures)
