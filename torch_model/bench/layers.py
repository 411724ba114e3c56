"""`alexnet bench layers`: every conv (+bias+ReLU) and pool of the seed's AlexNet, and the two local response
normalizations of the paper's (lrn1, lrn2), timed three ways side by side.

    triton    triton_kernels.conv2d_relu / max_pool2d / lrn.local_response_norm (ours: the ReLU fused into the conv's
              epilogue; the LRN one kernel forward, one backward)
    cudnn     eager PyTorch, F.relu(F.conv2d(x, w, b, ...)) / F.max_pool2d / F.local_response_norm (several
              elementwise kernels: no cuDNN in the last two, "cudnn" names the eager figure), cudnn.benchmark on;
              measured in NCHW and channels_last, the faster one is the reference every ratio is taken against
    compile   torch.compile of the same eager function, mode "max-autotune-no-cudagraphs" by default: the same
              kernel search as "max-autotune" without CUDA graphs, whose static input buffers would add a copy of
              every rotated input to each timed call. Compiles are slow, so by default only the bf16 forward in
              NCHW (--compile-dtypes / --compile-passes / --compile-layouts): inductor lowers a conv's backward
              to aten's convolution_backward, i.e. cuDNN, anyway.

at the seed's shapes (224x224 input, batch 128; lrn1 and lrn2 at the paper variant's, after its conv1 and conv2 on a
227x227 input: 96x55x55 and 256x27x27, torch_model.model.PAPER_LRN), forward and forward+backward, bf16 and
fp32-with-TF32 (for a pool or LRN: fp32 storage). The forward
runs under torch.no_grad() (no activations kept); forward+backward is out = f(x, w, b) then torch.autograd.grad
for w, b and x (not x for conv1: its input is the data). Each result is checked against float64 first (rel_err).

On a machine without CUDA the same command is a smoke test: tiny scaled shapes (resize 68 for both networks,
channels / 16, batch 1: lrn1 6x15x15, lrn2 16x7x7),
Triton in its interpreter, torch's CPU kernels labelled "torch-cpu" in place of cuDNN, torch.compile skipped,
fp32 only, and every row is marked "cpu": true and goes to the CPU's own file. Those numbers are never GPU results.

Each figure is appended to <out-dir>/<machine>.jsonl as soon as it is measured; the table is printed at the end.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from torch_model.bench.common import (REL_ERR_TOL, DTYPES, add_common_flags, append_rows, csv_choices, format_table,
                                      num, positive_int, report_failures)
from torch_model.bench.layer_specs import LayerSpec, alexnet_specs, paper_lrn_specs
from torch_model.bench.timing import (check_dtypes, cudnn_benchmark, describe, import_triton_kernels, machine_info,
                                      matmul_peak, measure_peaks, now_iso, precision, today, torch_dtype)
from torch_model.device import resolve_device

PASSES = ("fwd", "fwd+bwd")  # triton_kernels.testing.PASSES (not imported here: `--help` needs no Triton)
# conv1..pool5 of d2l's AlexNet, then the paper variant's two LRNs: the order the table shows them in
LAYERS = ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "lrn1", "lrn2")
LRN_LAYERS = tuple(name for name in LAYERS if name.startswith("lrn"))
IMPLS = ("triton", "cudnn", "compile")
LAYOUTS = ("nchw", "channels_last")
COMPILE_MODES = ("max-autotune", "max-autotune-no-cudagraphs", "default", "reduce-overhead")
# resize: d2l's input; lrn_resize: the paper variant's, whose conv1 and conv2 give lrn1 and lrn2 their shapes
CPU_DEFAULTS = dict(batch=1, resize=68, lrn_resize=68, channel_div=16, dtypes=["fp32"])
GPU_DEFAULTS = dict(batch=128, resize=224, lrn_resize=227, channel_div=1, dtypes=["bf16", "tf32"])


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (parser.description or "") + (
        ". Per layer: time (median), FLOPs or bytes, TFLOP/s or GB/s, fraction of the peak measured in the same "
        "run, speed-up over the best cuDNN layout. lrn1, lrn2 are the local response normalizations of "
        "alexnet(variant='paper') (not in d2l's model): ours vs torch's F.local_response_norm.")
    parser.add_argument("--batch", type=positive_int, help="batch size (default 128 on a GPU, 1 on a CPU)")
    parser.add_argument("--layers", type=csv_choices(LAYERS, "layer"), default=list(LAYERS),
                        help=f"comma-separated subset of {','.join(LAYERS)} (default: all). conv1..pool5 are "
                             "d2l's AlexNet (the seed's); lrn1,lrn2 are the paper variant's two local response "
                             "normalizations (d2l's model has none), at its shapes after conv1 and conv2: 96x55x55 "
                             "and 256x27x27 on a 227x227 input")
    parser.add_argument("--dtypes", type=csv_choices(DTYPES, "dtype"),
                        help="bf16, tf32 (fp32 storage, TF32 tensor cores), fp32 (TF32 off); "
                             "default bf16,tf32 on a GPU, fp32 on a CPU")
    parser.add_argument("--passes", type=csv_choices(PASSES, "pass"), default=list(PASSES),
                        help="fwd, fwd+bwd (default: both)")
    parser.add_argument("--impls", type=csv_choices(IMPLS, "impl"), default=list(IMPLS),
                        help="triton, cudnn (eager torch; torch-cpu on a CPU), compile (default: all; "
                             "compile is skipped on a CPU)")
    parser.add_argument("--layouts", type=csv_choices(LAYOUTS, "layout"), default=list(LAYOUTS),
                        help="memory layouts for triton and cudnn (default: both)")
    parser.add_argument("--compile-mode", choices=COMPILE_MODES, default="max-autotune-no-cudagraphs",
                        help="torch.compile mode (default: %(default)s: max-autotune's kernel search, no CUDA "
                             "graphs, which would copy each fresh input into a static buffer inside the timing)")
    parser.add_argument("--compile-dtypes", type=csv_choices(DTYPES, "dtype"), default=["bf16"],
                        help="dtypes that get a torch.compile figure (default: bf16; max-autotune compiles take "
                             "~10 s per layer and pass)")
    parser.add_argument("--compile-passes", type=csv_choices(PASSES, "pass"), default=["fwd"],
                        help="passes that get a torch.compile figure (default: fwd; inductor's conv backward is "
                             "aten's, i.e. cuDNN's)")
    parser.add_argument("--compile-layouts", type=csv_choices(LAYOUTS, "layout"), default=["nchw"],
                        help="layouts that get a torch.compile figure (default: nchw)")
    parser.add_argument("--resize", type=positive_int,
                        help="input height/width (default 224 on a GPU, for lrn1/lrn2 the paper's 227; 68 on a CPU)")
    parser.add_argument("--channel-div", type=positive_int,
                        help="divide every channel count by this (default 1 on a GPU, 16 on a CPU)")
    parser.add_argument("--warmup-ms", type=float, default=25.0, help="do_bench warm-up on a GPU (default 25)")
    parser.add_argument("--rep-ms", type=float, default=100.0, help="do_bench timed repetitions on a GPU (default 100)")
    parser.add_argument("--repeat", type=positive_int, default=3,
                        help="timed calls per figure on a CPU (median; default 3: the interpreter is slow)")
    parser.add_argument("--no-check", action="store_true", help="skip the float64 check of each output")
    add_common_flags(parser)


# ----------------------------------------------------------------------------------------------- the ops

def make_op(spec: LayerSpec, impl: str, dtype: str, compile_mode: str):
    """f(x, w, b) -> relu(conv2d(x, w, b)) for a conv, f(x) -> max_pool2d(x) for a pool, f(x) ->
    local_response_norm(x, size, alpha, beta, k) for an LRN, as `impl` computes it."""
    s, p, k = spec.stride, spec.padding, spec.K
    if impl == "triton":
        import triton_kernels

        if spec.kind == "conv":
            # fp32 in Triton's tl.dot defaults to TF32 on a GPU: the precision asked for, explicitly
            extra = {"input_precision": "ieee" if dtype == "fp32" else "tf32"} if dtype != "bf16" else {}
            return lambda x, w, b: triton_kernels.conv2d_relu(x, w, b, stride=s, padding=p, **extra)
        if spec.kind == "lrn":
            from triton_kernels.lrn import local_response_norm

            return lambda x: local_response_norm(x, *spec.lrn)
        return lambda x: triton_kernels.max_pool2d(x, k, s)

    if spec.kind == "conv":
        def eager(x, w, b):
            return F.relu(F.conv2d(x, w, b, stride=s, padding=p))
    elif spec.kind == "lrn":
        def eager(x):
            return F.local_response_norm(x, *spec.lrn)
    else:
        def eager(x):
            return F.max_pool2d(x, k, s)
    if impl == "compile":
        torch._dynamo.reset()  # a fresh cache: every layer/shape compiles on its own, no silent eager fallback
        return torch.compile(eager, mode=compile_mode, dynamic=False, fullgraph=True)
    return eager


def make_inputs(spec: LayerSpec, dtype: str, layout: str, device: torch.device, seed: int, grad: bool):
    """A function i -> (x, w, b, dy) (pools, LRNs: (x, dy)): random data, never zeros; the i-th set of a rotation.
    An LRN's x is scaled so that its window term alpha/size * sum of x^2 is about k (as it is on the paper's ReLU
    outputs: it matters), or the float64 check could not see the window."""
    from triton_kernels.testing import make_inputs as layer_inputs

    # E[alpha/size * sum over the window of x^2] = k (inside the channels)
    scale = (spec.lrn[3] / spec.lrn[1]) ** 0.5 if spec.kind == "lrn" else 1.0
    return lambda i: layer_inputs(spec.kind, (spec.N, spec.C, spec.H, spec.W), (spec.N, spec.F, spec.OH, spec.OW),
                                  spec.K, torch_dtype(dtype), device, seed * 1000 + i, layout, grad,
                                  dx=not spec.first, x_scale=scale)


# ----------------------------------------------------------------------------------------------- the run

def plan(args: argparse.Namespace, device: torch.device) -> tuple[list[tuple], list[str]]:
    """[(layer, dtype, pass, impl, layout), ...] to measure, and what is skipped (said out loud)."""
    skipped = []
    impls = list(args.impls)
    if device.type != "cuda" and "compile" in impls:
        impls.remove("compile")
        skipped.append("torch.compile skipped on a CPU (max-autotune targets the GPU; torch.compile of the Triton "
                       "ops does not run under the interpreter)")
    todo = []
    for layer in args.layers:
        for dtype in args.dtypes:
            for pss in args.passes:
                for impl in impls:
                    if impl == "compile" and (dtype not in args.compile_dtypes or pss not in args.compile_passes):
                        continue
                    for layout in args.compile_layouts if impl == "compile" else args.layouts:
                        todo.append((layer, dtype, pss, impl, layout))
    if "compile" in impls:
        for what, asked, allowed in (("dtypes", args.dtypes, args.compile_dtypes),
                                     ("passes", args.passes, args.compile_passes),
                                     ("layouts", args.layouts, args.compile_layouts)):
            missing = [d for d in asked if d not in allowed]
            if missing:
                skipped.append(f"torch.compile not measured in {','.join(missing)} (--compile-{what} "
                               f"{','.join(allowed)})")
    return todo, skipped


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    device = resolve_device(args.device)
    import_triton_kernels()  # the inputs and the timer are triton_kernels.testing's
    gpu = device.type == "cuda"
    defaults = GPU_DEFAULTS if gpu else CPU_DEFAULTS
    batch = args.batch or defaults["batch"]
    resize = args.resize or defaults["resize"]
    channel_div = args.channel_div or defaults["channel_div"]
    args.dtypes = args.dtypes or defaults["dtypes"]
    check_dtypes(args.dtypes, device)
    if args.warmup_ms <= 0 or args.rep_ms <= 0:
        raise ValueError(f"--warmup-ms and --rep-ms must be > 0, got {args.warmup_ms}, {args.rep_ms}")
    lrn_resize = args.resize or defaults["lrn_resize"]
    specs = {}  # each network's shapes only when one of its layers is asked for (a --resize may fit one only)
    if any(layer not in LRN_LAYERS for layer in args.layers):
        specs.update((s.name, s) for s in alexnet_specs(batch, resize, channel_div) if s.kind != "linear")
    if any(layer in LRN_LAYERS for layer in args.layers):
        specs.update((s.name, s) for s in paper_lrn_specs(batch, lrn_resize, channel_div))
    todo, skipped = plan(args, device)
    if not todo:
        raise ValueError("nothing to measure: --layers/--dtypes/--passes/--impls leave no figure")

    info = machine_info(device)
    base = "cudnn" if gpu else "torch-cpu"
    label = lambda impl: base if impl == "cudnn" else impl  # noqa: E731
    lrn_input = (f" (lrn1, lrn2: the paper variant's, input {lrn_resize}x{lrn_resize})"
                 if any(s.kind == "lrn" for s in specs.values()) else "")
    print(f"alexnet bench layers on {info['device_name']}: batch {batch}, input {resize}x{resize}{lrn_input}"
          + (f", channels / {channel_div}" if channel_div > 1 else "") + f", {len(todo)} figures", flush=True)
    if not gpu:
        print("CPU smoke run: tiny scaled shapes, Triton in its interpreter, torch CPU kernels as 'torch-cpu'; "
              "NOT GPU results", flush=True)
    for line in skipped:
        print(f"note: {line}", flush=True)

    t_run, started = time.perf_counter(), now_iso()
    path = Path(args.out_dir) / f"{info['machine']}.jsonl"
    entries, failures, refs = [], [], {}
    with cudnn_benchmark():
        print("measuring the peaks (matmul, copy) ...", flush=True)
        peak = measure_peaks(device, args.dtypes)
        run_facts = {"bench": "layers", **info, "date": today(), "started": started, "argv": sys.argv[1:],
                     "peak": peak, "resize": resize, "lrn_resize": lrn_resize, "channel_div": channel_div}
        bar = tqdm(todo, desc="layers", unit="figure", disable=args.no_progress, dynamic_ncols=True)
        for layer, dtype, pss, impl, layout in bar:
            what = f"{layer} {dtype} {pss} {label(impl)} {layout}"
            bar.set_postfix_str(what)
            try:
                with precision(dtype):
                    entry = measure_one(specs[layer], dtype, pss, impl, layout, args, device, peak, refs)
            except Exception as exc:  # one broken figure must not cost the whole (GPU) run: record it, go on, exit 1
                failures.append(f"{what}: {type(exc).__name__}: {exc}")
                bar.write(f"FAILED {failures[-1]}")
                continue
            entry["impl"] = label(impl)
            entries.append(entry)
            append_rows(path, [{**run_facts, **entry}])  # at once: a run cut short keeps what it measured

    print()
    print(describe(info, peak))
    print(format_table(*layer_rows(entries, base)))
    print(f"x {base}: the best {base} layout's time over this one's (> 1 = faster than {base}); % peak: of the "
          f"{'matmul' if gpu else 'fp32 matmul'} peak for convs, of the copy bandwidth for pools and LRNs (each "
          f"implementation's own bytes).")
    print(f"{len(entries)} figures in {time.perf_counter() - t_run:.0f} s, appended to {path}")
    for e in entries:
        if e["err_ok"] is False:
            failures.append(f"{e['layer']} {e['dtype']} {e['pass']} {e['impl']} {e['layout']}: WRONG result, "
                            f"rel_err {e['rel_err']:.2e} against float64 > {REL_ERR_TOL[e['dtype']]:.0e} (its "
                            f"time is kept, marked err_ok false)")
    return report_failures(failures)


def measure_one(spec, dtype, pss, impl, layout, args, device, peak, refs) -> dict:
    """One figure (triton_kernels.testing.time_pass), checked against float64 eager torch: the reference of each
    (layer, dtype, pass) is computed once, from NCHW inputs with the same values, and kept for the next figure."""
    from triton_kernels.testing import pass_err, reference, time_pass

    grad = pss == "fwd+bwd"

    def check(got, _inputs):
        key = (spec.name, dtype, grad)
        if key not in refs:
            refs.clear()  # one reference alive at a time (GPU memory)
            with precision("fp32"):
                refs[key] = reference(make_op(spec, "cudnn", "fp32", ""),
                                      make_inputs(spec, dtype, "nchw", device, args.seed, grad)(0))
        return pass_err(got, refs[key])

    t = time_pass(make_op(spec, impl, dtype, args.compile_mode), pss,
                  make_inputs(spec, dtype, layout, device, args.seed, grad), device,
                  check=None if args.no_check else check, warmup_ms=args.warmup_ms, rep_ms=args.rep_ms,
                  repeat=args.repeat)
    ms, err = t["ms"], t["rel_err"]
    flops = spec.flops(pss)
    byte_impl = "torch-cpu" if impl == "cudnn" and device.type != "cuda" else impl  # whose traffic (pools, LRNs)
    nbytes = spec.bytes(pss, torch.finfo(torch_dtype(dtype)).bits // 8, impl=byte_impl)
    mm_peak = matmul_peak(peak, dtype)
    bw_peak = peak["copy_tb_per_s"]
    tflops = flops / (ms * 1e9) if spec.kind == "conv" else None
    gb_per_s = nbytes / (ms * 1e6)
    # an LRN's few FLOPs are elementwise work, not matmul: its floor is its bytes over the copy bandwidth
    flop_floor = flops / (mm_peak * 1e9) if mm_peak and spec.kind == "conv" else 0.0
    return {
        "layer": spec.name, "kind": spec.kind, "dtype": dtype, "pass": pss, "impl": impl, "layout": layout,
        "batch": spec.N, **t, "tflops": tflops, "gb_per_s": gb_per_s, "flops": flops, "bytes": nbytes,
        "peak_fraction": (tflops / mm_peak if mm_peak else None) if spec.kind == "conv" else gb_per_s / (bw_peak * 1e3),
        "floor_ms": max(flop_floor, nbytes / (bw_peak * 1e9)),
        "err_ok": None if err is None else bool(err <= REL_ERR_TOL[dtype]),
        "shape": spec.shapes(), "interpreter": device.type != "cuda" and impl == "triton",
    }


def layer_rows(entries: list[dict], base: str) -> tuple[list[str], list[list]]:
    """One row per figure, in network order: time, work, rate, fraction of peak, speed-up over the best baseline
    (cuDNN on a GPU, torch on a CPU) layout of the same layer, dtype and pass."""
    best: dict[tuple, float] = {}
    for e in entries:
        if e["impl"] == base:
            k = (e["layer"], e["dtype"], e["pass"])
            best[k] = min(best.get(k, float("inf")), e["ms"])
    impl_order = {n: i for i, n in enumerate(["triton", "cudnn", "torch-cpu", "compile"])}
    rows = []
    for e in sorted(entries, key=lambda e: (LAYERS.index(e["layer"]), e["dtype"], e["pass"],
                                            impl_order.get(e["impl"], 9), e["layout"])):
        ref = best.get((e["layer"], e["dtype"], e["pass"]))
        by_bytes = e["kind"] in ("pool", "lrn")
        err = e.get("rel_err")
        rows.append([e["layer"], e["dtype"], e["pass"], e["impl"], e["layout"], e["batch"], num(e["ms"]),
                     num(e["bytes"] / 1e6) if by_bytes else num(e["flops"] / 1e9),
                     num(e["gb_per_s"]) if by_bytes else num(e["tflops"]),
                     "" if e["peak_fraction"] is None else f"{100 * e['peak_fraction']:.0f}",
                     num(ref / e["ms"]) if ref else "",
                     "" if err is None else f"{err:.0e}" + ("" if e["err_ok"] else " WRONG")])
    return ["layer", "dtype", "pass", "impl", "layout", "batch", "ms", "GFLOP | MB", "TFLOP/s | GB/s", "% peak",
            f"x {base}", "err"], rows
