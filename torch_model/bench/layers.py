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
fp32 only, and the file is marked "cpu": true and named after the CPU. Those numbers are never GPU results.
"""
from __future__ import annotations

import argparse
import inspect
import sys
import time

import torch
import torch.nn.functional as F

from torch_model.bench import common as C

LAYERS = C.LAYER_ORDER  # conv1..pool3 of d2l's AlexNet, then lrn1, lrn2 of the paper variant
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
    parser.add_argument("--batch", type=C.positive_int, help="batch size (default 128 on a GPU, 1 on a CPU)")
    parser.add_argument("--layers", type=C.csv_choices(LAYERS, "layer"), default=list(LAYERS),
                        help=f"comma-separated subset of {','.join(LAYERS)} (default: all). conv1..pool3 are "
                             "d2l's AlexNet (the seed's); lrn1,lrn2 are the paper variant's two local response "
                             "normalizations (d2l's model has none), at its shapes after conv1 and conv2: 96x55x55 "
                             "and 256x27x27 on a 227x227 input")
    parser.add_argument("--dtypes", type=C.csv_choices(C.DTYPES, "dtype"),
                        help="bf16, tf32 (fp32 storage, TF32 tensor cores), fp32 (TF32 off); "
                             "default bf16,tf32 on a GPU, fp32 on a CPU")
    parser.add_argument("--passes", type=C.csv_choices(C.PASSES, "pass"), default=list(C.PASSES),
                        help="fwd, fwd+bwd (default: both)")
    parser.add_argument("--impls", type=C.csv_choices(IMPLS, "impl"), default=list(IMPLS),
                        help="triton, cudnn (eager torch; torch-cpu on a CPU), compile (default: all; "
                             "compile is skipped on a CPU)")
    parser.add_argument("--layouts", type=C.csv_choices(LAYOUTS, "layout"), default=list(LAYOUTS),
                        help="memory layouts for triton and cudnn (default: both)")
    parser.add_argument("--compile-mode", choices=COMPILE_MODES, default="max-autotune-no-cudagraphs",
                        help="torch.compile mode (default: %(default)s: max-autotune's kernel search, no CUDA "
                             "graphs, which would copy each fresh input into a static buffer inside the timing)")
    parser.add_argument("--compile-dtypes", type=C.csv_choices(C.DTYPES, "dtype"), default=["bf16"],
                        help="dtypes that get a torch.compile figure (default: bf16; max-autotune compiles take "
                             "~10 s per layer and pass)")
    parser.add_argument("--compile-passes", type=C.csv_choices(C.PASSES, "pass"), default=["fwd"],
                        help="passes that get a torch.compile figure (default: fwd; inductor's conv backward is "
                             "aten's, i.e. cuDNN's)")
    parser.add_argument("--compile-layouts", type=C.csv_choices(LAYOUTS, "layout"), default=["nchw"],
                        help="layouts that get a torch.compile figure (default: nchw)")
    parser.add_argument("--resize", type=C.positive_int,
                        help="input height/width (default 224 on a GPU, for lrn1/lrn2 the paper's 227; 68 on a CPU)")
    parser.add_argument("--channel-div", type=C.positive_int,
                        help="divide every channel count by this (default 1 on a GPU, 16 on a CPU)")
    parser.add_argument("--warmup-ms", type=float, default=25.0, help="do_bench warm-up on a GPU (default 25)")
    parser.add_argument("--rep-ms", type=float, default=100.0, help="do_bench timed repetitions on a GPU (default 100)")
    parser.add_argument("--repeat", type=C.positive_int, default=3,
                        help="timed calls per figure on a CPU (median; default 3: the interpreter is slow)")
    parser.add_argument("--no-check", action="store_true", help="skip the float64 check of each output")
    C.add_common_flags(parser)


# ----------------------------------------------------------------------------------------------- the ops

def _triton_precision_kwargs(fn, dtype: str) -> dict:
    """fp32 in Triton's tl.dot defaults to TF32 on the GPU; pass the precision explicitly when the op takes it."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    if "input_precision" in params and dtype in ("fp32", "tf32"):
        return {"input_precision": "ieee" if dtype == "fp32" else "tf32"}
    return {}


def make_op(spec: C.LayerSpec, impl: str, dtype: str, compile_mode: str):
    """f(x, w, b) -> relu(conv2d(x, w, b)) for a conv, f(x) -> max_pool2d(x) for a pool, f(x) ->
    local_response_norm(x, size, alpha, beta, k) for an LRN, as `impl` computes it."""
    s, p, k = spec.stride, spec.padding, spec.K
    if impl == "triton":
        import triton_kernels

        if spec.kind == "conv":
            extra = _triton_precision_kwargs(triton_kernels.conv2d_relu, dtype)
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


def make_inputs(spec: C.LayerSpec, dtype: str, layout: str, device: torch.device, seed: int, grad: bool):
    """A function i -> (x, w, b, dy) (pools, LRNs: (x, dy)): random data, never zeros; the i-th set of a rotation.
    An LRN's x is scaled so that its window term alpha/size * sum of x^2 is about k (as it is on the paper's ReLU
    outputs: it matters), or the float64 check could not see the window."""
    tdt = C.torch_dtype(dtype)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    N, Cin, H, W, Fo, K = spec.N, spec.C, spec.H, spec.W, spec.F, spec.K

    def make(i: int):
        g = torch.Generator(device=device).manual_seed(seed * 1000 + i)
        rnd = lambda *shape: torch.randn(*shape, generator=g, device=device)  # noqa: E731
        x = rnd(N, Cin, H, W)  # (N, C, H, W)
        if spec.kind == "lrn":
            _, alpha, _, k = spec.lrn
            x = x * (k / alpha) ** 0.5  # E[alpha/size * sum over the window of x^2] = k (inside the channels)
        x = x.to(tdt).contiguous(memory_format=fmt)
        dy = rnd(N, Fo, spec.OH, spec.OW).to(tdt).contiguous(memory_format=fmt)  # (N, F, OH, OW)
        if spec.by_bytes:
            return (x.requires_grad_(grad), dy)
        w = (rnd(Fo, Cin, K, K) * (2.0 / (Cin * K * K)) ** 0.5).to(tdt).contiguous(memory_format=fmt)
        b = (rnd(Fo) * 0.1).to(tdt)
        return (x.requires_grad_(grad and not spec.first), w.requires_grad_(grad), b.requires_grad_(grad), dy)

    return make


def run_pass(op, spec: C.LayerSpec, pss: str, inputs: tuple):
    """One call: forward (no_grad), or forward + the gradients of every input that requires one."""
    *args, dy = inputs
    if pss == "fwd":
        with torch.no_grad():
            return op(*args), []
    out = op(*args)
    return out, list(torch.autograd.grad(out, [t for t in args if t.requires_grad], dy))


def reference(spec: C.LayerSpec, inputs: tuple):
    """Forward and gradients in float64 through eager torch, from the same (rounded) inputs."""
    *args, dy = inputs
    args64 = [a.detach().double().contiguous().requires_grad_(a.requires_grad) for a in args]
    op = make_op(spec, "cudnn", "fp32", "")
    with C.precision("fp32"):
        out = op(*args64)
        wanted = [a for a in args64 if a.requires_grad]
        grads = list(torch.autograd.grad(out, wanted, dy.double())) if wanted else []
    return out.detach(), grads


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    ref_norm = ref.norm().item()
    return (got.detach().double() - ref).norm().item() / max(ref_norm, 1e-30)


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
                    layouts = [l for l in args.layouts] if impl != "compile" else [
                        l for l in args.compile_layouts]
                    if impl == "compile" and (dtype not in args.compile_dtypes or pss not in args.compile_passes):
                        continue
                    for layout in layouts:
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

    device = C.resolve_device(args.device)
    if "triton" in args.impls:
        C.import_triton_kernels()
    gpu = device.type == "cuda"
    defaults = GPU_DEFAULTS if gpu else CPU_DEFAULTS
    batch = args.batch or defaults["batch"]
    resize = args.resize or defaults["resize"]
    channel_div = args.channel_div or defaults["channel_div"]
    args.dtypes = args.dtypes or defaults["dtypes"]
    C.check_dtypes(args.dtypes, device)
    if args.warmup_ms <= 0 or args.rep_ms <= 0:
        raise ValueError(f"--warmup-ms and --rep-ms must be > 0, got {args.warmup_ms}, {args.rep_ms}")
    lrn_resize = args.resize or defaults["lrn_resize"]
    specs = {}  # each network's shapes only when one of its layers is asked for (a --resize may fit one only)
    if any(layer not in LRN_LAYERS for layer in args.layers):
        specs.update((s.name, s) for s in C.alexnet_specs(batch, resize, channel_div) if s.kind != "linear")
    if any(layer in LRN_LAYERS for layer in args.layers):
        specs.update((s.name, s) for s in C.paper_lrn_specs(batch, lrn_resize, channel_div))
    todo, skipped = plan(args, device)
    if not todo:
        raise ValueError("nothing to measure: --layers/--dtypes/--passes/--impls leave no figure")

    info = C.machine_info(device)
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

    t_run, started = time.perf_counter(), C.now_iso()

    def result(entries: list[dict], failures: list[str], complete: bool) -> dict:
        add_ratios(entries, base)
        run_meta = {
            "started": started, "seconds": round(time.perf_counter() - t_run, 1), "complete": complete,
            "argv": sys.argv[1:], "batch": batch, "resize": resize, "lrn_resize": lrn_resize,
            "channel_div": channel_div,
            "compile_mode": args.compile_mode,
            "compile_for": {"dtypes": args.compile_dtypes, "passes": args.compile_passes,
                            "layouts": args.compile_layouts},
            "peak": peak, "skipped": skipped, "failures": failures,
            "forward": "under torch.no_grad(); fwd+bwd = forward + torch.autograd.grad (no dX for conv1)",
            "cudnn_benchmark": True,
        }
        return C.clean_json({**info, "date": C.today(), "peak": peak, "layers": entries,
                             "runs": {"layers": run_meta}})

    with C.cudnn_benchmark():
        print("measuring the peaks (matmul, copy) ...", flush=True)
        peak = C.measure_peaks(device, args.dtypes)
        # the results file is updated after every figure: a run cut short (a timeout) keeps what it measured
        entries, failures = measure_all(todo, specs, args, device, peak, label, tqdm,
                                        save=lambda e, f: C.save_run(args.out_dir, result(e, f, complete=False)))

    final = result(entries, failures, complete=True)
    print()
    print(C.describe(final))
    print(C.format_table(*C.layer_rows(final)))
    print()
    print(C.format_table(*C.summary_rows(final)))
    print(f"x {base}: the best {base} layout's time over this one's (> 1 = faster than {base}); % peak: of the "
          f"{'matmul' if gpu else 'fp32 matmul'} peak for convs, of the copy bandwidth for pools and LRNs (each "
          f"implementation's own bytes).")
    print(f"{len(entries)} figures in {final['runs']['layers']['seconds']:.0f} s")
    C.finish(args.out_dir, final, "layers", args.update_readme)
    for e in entries:
        if e["err_ok"] is False:
            failures.append(f"{e['layer']} {e['dtype']} {e['pass']} {e['impl']} {e['layout']}: WRONG result, "
                            f"rel_err {e['rel_err']:.2e} against float64 > {C.REL_ERR_TOL[e['dtype']]:.0e} (its "
                            f"time is kept, marked err_ok false)")
    return C.report_failures(failures)


def measure_all(todo, specs, args, device, peak, label, tqdm, save=None):
    entries, failures = [], []
    refs: dict[tuple, tuple] = {}
    bar = tqdm(todo, desc="layers", unit="figure", disable=args.no_progress, dynamic_ncols=True)
    for layer, dtype, pss, impl, layout in bar:
        bar.set_postfix_str(f"{layer} {dtype} {pss} {label(impl)} {layout}")
        spec = specs[layer]
        try:
            with C.precision(dtype):
                entry = measure_one(spec, dtype, pss, impl, layout, args, device, peak, refs)
        except Exception as exc:  # one broken figure must not cost the whole (GPU) run: record it, go on, exit 1
            failures.append(f"{layer} {dtype} {pss} {label(impl)} {layout}: {type(exc).__name__}: {exc}")
            bar.write(f"FAILED {failures[-1]}")
            continue
        entry["impl"] = label(impl)
        entries.append(entry)
        if save is not None:
            save(entries, failures)
    return entries, failures


def measure_one(spec, dtype, pss, impl, layout, args, device, peak, refs) -> dict:
    grad = pss == "fwd+bwd"
    make = make_inputs(spec, dtype, layout, device, args.seed, grad)
    first = make(0)
    set_bytes = sum(t.nbytes for t in first)
    rot = C.Rotation(lambda i: first if i == 0 else make(i), set_bytes, device)
    op = make_op(spec, impl, dtype, args.compile_mode)

    # first call: compile / autotune / cuDNN algorithm search happen here; timed as setup, then checked
    C.sync(device)
    t0 = time.perf_counter()
    out, grads = run_pass(op, spec, pss, first)
    C.sync(device)
    setup_s = time.perf_counter() - t0
    err = None
    if not args.no_check:
        key = (spec.name, dtype, grad)
        if key not in refs:
            refs.clear()  # one reference alive at a time (GPU memory)
            refs[key] = reference(spec, make_inputs(spec, dtype, "nchw", device, args.seed, grad)(0))
        ref_out, ref_grads = refs[key]
        errs = [rel_err(out, ref_out)] + [rel_err(g, r) for g, r in zip(grads, ref_grads)]
        err = max(errs)
    del out, grads

    def fn():
        return run_pass(op, spec, pss, rot.next())

    t = C.time_ms(fn, device, warmup_ms=args.warmup_ms, rep_ms=args.rep_ms, repeat=args.repeat)
    ms = t["ms"]
    flops = spec.flops(pss)
    byte_impl = "torch-cpu" if impl == "cudnn" and device.type != "cuda" else impl  # whose traffic (pools, LRNs)
    nbytes = spec.bytes(pss, torch.finfo(C.torch_dtype(dtype)).bits // 8, impl=byte_impl)
    mm_peak = C.matmul_peak(peak, dtype)
    bw_peak = peak["copy_tb_per_s"]
    tflops = flops / (ms * 1e9) if spec.kind == "conv" else None
    gb_per_s = nbytes / (ms * 1e6)
    # an LRN's few FLOPs are elementwise work, not matmul: its floor is its bytes over the copy bandwidth
    flop_floor = flops / (mm_peak * 1e9) if mm_peak and spec.kind == "conv" else 0.0
    floor_ms = max(flop_floor, nbytes / (bw_peak * 1e9))
    return {
        "layer": spec.name, "kind": spec.kind, "dtype": dtype, "pass": pss, "impl": impl, "layout": layout,
        "batch": spec.N, **t,
        "tflops": tflops, "gb_per_s": gb_per_s, "flops": flops, "bytes": nbytes,
        "peak_fraction": (tflops / mm_peak if mm_peak else None) if spec.kind == "conv" else gb_per_s / (bw_peak * 1e3),
        "floor_ms": floor_ms, "rel_err": err,
        "err_ok": None if err is None else bool(err <= C.REL_ERR_TOL[dtype]),
        "setup_s": round(setup_s, 3), "input_sets": len(rot), "shape": spec.shapes(),
        "interpreter": device.type != "cuda" and impl == "triton",
    }


def add_ratios(entries: list[dict], base: str) -> None:
    """vs_baseline: the best baseline layout's time over this entry's (> 1 = faster than cuDNN / torch-cpu)."""
    best: dict[tuple, float] = {}
    for e in entries:
        if e["impl"] == base:
            k = (e["layer"], e["dtype"], e["pass"])
            best[k] = min(best.get(k, float("inf")), e["ms"])
    for e in entries:
        ref = best.get((e["layer"], e["dtype"], e["pass"]))
        e["baseline"] = base
        e["vs_baseline"] = ref / e["ms"] if ref else None
