"""`alexnet bench train`: training-step throughput (images/s) of the seed AlexNet, four ways (--impls), and the
full seed run.

    torch     eager PyTorch (cuDNN convs, cuBLAS linears)
    compile   the same model through torch.compile(mode="max-autotune") (forward and backward compiled)
    triton    torch_model.alexnet(backend="triton"): our conv+ReLU and pool kernels, torch's linears
    ddp       the torch step through DistributedDataParallel in a process group of one (distributed.py's step, as
              `torchrun ... train` runs it): against torch, the cost of DDP's hooks and all-reduces on one device

Each figure is one `learner.step(X, y)` as the training loop calls it (forward, cross-entropy, backward, SGD
update, the loss read back to the host), batch 128 of random 1x224x224 images, timed step by step after warm-up
(the first step, where compiling and autotuning happen, is reported as setup_s); img/s = batch / median step.
The napkin math: one step is 3x the forward FLOPs of every conv and linear (2x for conv1: no dX), ~5.56 GFLOP per
image, so ~712 GFLOP at batch 128; TFLOP/s and the fraction of the matmul peak measured in the same run.
Dtypes: tf32 (fp32 weights, TF32 tensor cores), bf16 (autocast), fp32 (TF32 off).

--seed-run adds, for torch and triton and per dtype, the wall time of the seed's full run through
torch_model.train.fit (10 epochs over 60,000 images plus evaluation on 10,000) and its test accuracy.

On a machine without CUDA it is a smoke test: batch 2, 2 timed steps, fp32, torch CPU in place of cuDNN, compile
skipped, triton only when asked (the interpreter needs minutes per 224x224 step), a seed run of 1 epoch on 8
images; marked "cpu": true, never GPU results. Each figure is appended to <out-dir>/<machine>.jsonl as soon as it
is measured; the table is printed at the end.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from torch_model.bench.common import (DTYPES, add_common_flags, append_rows, csv_choices, format_table, num,
                                      positive_int, report_failures)
from torch_model.bench.layer_specs import train_step_flops
from torch_model.bench.timing import (check_dtypes, cudnn_benchmark, describe, import_triton_kernels, machine_info,
                                      matmul_peak, measure_peaks, now_iso, precision, sync, today)
from torch_model.device import resolve_device

IMPLS = ("torch", "compile", "triton", "ddp")
COMPILE_MODES = ("max-autotune", "max-autotune-no-cudagraphs", "default", "reduce-overhead")
RESIZE = 224  # the seed model's first Linear takes 256x5x5: the train step runs at the seed's input size
GPU_DEFAULTS = dict(batch=128, steps=20, warmup_steps=3, dtypes=["tf32", "bf16"], epochs=10)
CPU_DEFAULTS = dict(batch=2, steps=2, warmup_steps=1, dtypes=["fp32"], epochs=1)
LAYOUTS = ("nchw", "channels_last")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--impls", "--backends", dest="impls", type=csv_choices(IMPLS, "impl"),
                        help="torch (eager, cuDNN), compile (torch.compile), triton (our kernels), ddp (torch through "
                             "DistributedDataParallel on one device: its overhead); default: all on a "
                             "GPU, torch on a CPU (a 224x224 step through the Triton interpreter takes over 5 "
                             "minutes; ask for it with --impls torch,triton); compile is GPU-only")
    parser.add_argument("--dtypes", type=csv_choices(DTYPES, "dtype"),
                        help="tf32, bf16 (autocast), fp32 (TF32 off); default tf32,bf16 on a GPU, fp32 on a CPU")
    parser.add_argument("--layouts", type=csv_choices(LAYOUTS, "layout"), default=["nchw"],
                        help="nchw and/or channels_last (NHWC weights and batches, `alexnet train --channels-last`); "
                             "default: nchw")
    parser.add_argument("--batch", type=positive_int, help="batch size (default 128 on a GPU, 2 on a CPU)")
    parser.add_argument("--steps", type=positive_int, help="timed steps per figure (default 20 on a GPU, 2 on a CPU)")
    parser.add_argument("--warmup-steps", type=positive_int,
                        help="untimed steps first, the first one reported as setup (default 3 on a GPU, 1 on a CPU)")
    parser.add_argument("--compile-mode", choices=COMPILE_MODES, default="max-autotune",
                        help="torch.compile mode of the compile figures (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (default: %(default)s, the seed's)")
    seed = parser.add_argument_group("the full seed run (--seed-run)")
    seed.add_argument("--seed-run", action="store_true",
                      help="also train through torch_model.train.fit (torch, triton) per dtype: wall seconds, test acc")
    seed.add_argument("--epochs", type=positive_int, help="seed-run epochs (default 10 on a GPU, 1 on a CPU)")
    seed.add_argument("--limit-train", type=positive_int,
                      help="seed-run training images (default all 60,000 on a GPU, 4 batches on a CPU)")
    seed.add_argument("--limit-test", type=positive_int,
                      help="seed-run test images (default all 10,000 on a GPU, 4 batches on a CPU)")
    seed.add_argument("--data-dir", help="Fashion-MNIST folder for --seed-run (default: FASHION_MNIST_DIR, ...)")
    add_common_flags(parser)


# ----------------------------------------------------------------------------------------------- one figure

def make_bench_learner(impl: str, dtype: str, lr: float, device: torch.device, compile_mode: str,
                       layout: str = "nchw"):
    """The learner `alexnet train` builds for the model's kernels (triton for impl triton, else torch's), then
    wrapped by DDP (impl ddp) or its net compiled (impl compile)."""
    from torch_model.learners import make_learner

    learner = make_learner("triton" if impl == "triton" else "torch", lr=lr, device=device,
                           amp="bf16" if dtype == "bf16" else "none", channels_last=layout == "channels_last")
    if impl == "ddp":
        return one_process_ddp(learner)
    if impl == "compile":
        torch._dynamo.reset()
        # TorchLearner steps self.net; the compiled module shares its parameters with the optimizer's.
        learner.net = torch.compile(learner.net, mode=compile_mode)
    return learner


def one_process_ddp(learner):
    """`learner` through DDP in a process group of one (gloo on a CPU, NCCL on a GPU; a HashStore, no network):
    what `alexnet bench train --impls ddp` times against the plain step, i.e. the cost of DDP's hooks, gradient
    buckets and all-reduces, and of the step's two small all-reduces, on one device. End the group with
    `end_one_process_group()`."""
    import torch.distributed as dist

    from torch_model.distributed import DEFAULT_TIMEOUT_S, DistContext
    from torch_model.learners import DistributedLearner

    if not dist.is_initialized():
        dist.init_process_group("nccl" if learner.device.type == "cuda" else "gloo", store=dist.HashStore(), rank=0,
                                world_size=1)
    ctx = DistContext(0, 1, 0, dist.get_backend(), DEFAULT_TIMEOUT_S, learner.device)
    return DistributedLearner(learner, ctx)


def end_one_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() == 1:
        dist.destroy_process_group()


def random_batches(batch: int, seed: int, device: torch.device = torch.device("cpu")) -> list[tuple]:
    """4 different batches to use in turn (fresh data each step, as training sees): images in [0, 1) like
    ToTensor's, (N, 1, 224, 224), and labels 0..9, (N,)."""
    g = torch.Generator(device=device).manual_seed(seed)
    return [(torch.rand(batch, 1, RESIZE, RESIZE, generator=g, device=device),
             torch.randint(0, 10, (batch,), generator=g, device=device)) for _ in range(4)]


def time_steps(learner, data: list, warmup_steps: int, steps: int, device: torch.device, after_first=None) -> dict:
    """warmup_steps untimed steps (the first, where compiling, autotuning, cuDNN's search or oneDNN's primitives
    happen, timed apart as setup_s; after_first() runs after it), then `steps` timed one by one between two
    synchronizations (learner.step reads the loss back: the host waits for the step, as the loop does), with the
    process's minor page faults over the timed steps (getrusage)."""
    import resource

    sync(device)
    t0 = time.perf_counter()
    losses = [learner.step(*data[0])[0]]
    sync(device)
    setup_s = time.perf_counter() - t0
    if after_first is not None:
        after_first()
    for i in range(1, warmup_steps):
        losses.append(learner.step(*data[i % len(data)])[0])
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = []
    for i in range(steps):
        sync(device)
        t0 = time.perf_counter()
        losses.append(learner.step(*data[(warmup_steps + i) % len(data)])[0])
        sync(device)
        times.append(time.perf_counter() - t0)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    if not all(math.isfinite(v) for v in losses):
        raise ValueError(f"the loss became {losses[-1]} (non-finite) during the benchmark")
    step_s, batch = statistics.median(times), data[0][0].shape[0]
    q = statistics.quantiles(times, n=5, method="inclusive") if len(times) > 1 else [times[0]] * 4
    return {"img_per_s": batch / step_s, "img_per_s_mean": batch * len(times) / sum(times), "step_ms": 1e3 * step_s,
            "step_ms_p20": 1e3 * q[0], "step_ms_p80": 1e3 * q[3], "steps": steps, "warmup_steps": warmup_steps,
            "setup_s": round(setup_s, 3), "minor_faults_per_step": faults / steps, "first_loss": losses[0],
            "last_loss": losses[-1], "timer": "perf_counter per step, synchronized, median"}


def measure_step(impl: str, dtype: str, batch: int, steps: int, warmup_steps: int, args, device, peak,
                 layout: str = "nchw") -> dict:
    torch.manual_seed(args.seed)
    learner = make_bench_learner(impl, dtype, args.lr, device, args.compile_mode, layout)
    try:
        learner.train()
        # which dtype the convs really compute in (autocast casts only the ops it knows; a custom op gets fp32)
        conv_dtypes: set[str] = set()
        hooks = [] if impl == "compile" else [
            m.register_forward_hook(lambda m, i, o: conv_dtypes.add(str(o.dtype).removeprefix("torch.")))
            for m in learner.net.modules() if isinstance(m, torch.nn.Conv2d)]
        t = time_steps(learner, random_batches(batch, args.seed, device), warmup_steps, steps, device,
                       after_first=lambda: [h.remove() for h in hooks])
    finally:
        if impl == "ddp":
            end_one_process_group()
    if dtype == "bf16" and "float32" in conv_dtypes:
        print(f"note: {impl} bf16: the convs ran in float32 under bf16 autocast (an op with no autocast rule "
              f"gets fp32 inputs): this figure is not an all-bf16 step", flush=True)
    flops = train_step_flops(batch, RESIZE)
    tflops = flops / t["step_ms"] / 1e9
    mm_peak = matmul_peak(peak, dtype)
    return {"impl": impl, "dtype": dtype, "layout": layout, "batch": batch, **t, "flops": flops, "tflops": tflops,
            "peak_fraction": tflops / mm_peak if mm_peak else None, "resize": RESIZE,
            "amp": "bf16" if dtype == "bf16" else "none", "conv_dtypes": sorted(conv_dtypes) or None,
            "compile_mode": args.compile_mode if impl == "compile" else None,
            "interpreter": device.type != "cuda" and impl == "triton"}


def fit_in_tmp(quiet: bool = False, **settings):
    """torch_model.train.fit at the seed's input size in a throw-away folder, no checkpoints (the time measured is
    training and evaluation, not disk writes); settings are TrainConfig's; quiet: no log lines."""
    from torch_model.config import TrainConfig, resolve_config
    from torch_model.train import fit

    with tempfile.TemporaryDirectory(prefix="alexnet-bench-") as tmp:
        cfg = resolve_config(TrainConfig(resize=RESIZE, out=f"{tmp}/run", checkpoint=False, **settings))
        return fit(cfg, log=lambda line: None) if quiet else fit(cfg)


def seed_run(impl: str, dtype: str, batch: int, epochs: int, limit_train, limit_test, args, device) -> dict:
    """The seed's training run through the project's own loop (torch_model.train.fit)."""
    with precision(dtype):
        result = fit_in_tmp(epochs=epochs, batch_size=batch, lr=args.lr, device=str(device), seed=args.seed,
                            data_dir=args.data_dir, backend=impl, amp="bf16" if dtype == "bf16" else "none",
                            limit_train=limit_train, limit_test=limit_test, progress=not args.no_progress)
    return {
        "impl": impl, "dtype": dtype, "epochs": epochs, "seconds": result.seconds,
        "test_acc": result.test_acc, "batch": batch, "limit_train": limit_train, "limit_test": limit_test,
        "train_images": limit_train or 60000, "status": result.status,
        "examples_per_sec": result.examples_per_sec,
        "history": [{k: h.get(k) for k in ("epoch", "loss", "train_acc", "test_acc", "train_seconds",
                                           "eval_seconds")} for h in result.history],
    }


# ----------------------------------------------------------------------------------------------- the run

def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    device = resolve_device(args.device)
    if "triton" in (args.impls or ()):
        import_triton_kernels()
    gpu = device.type == "cuda"
    d = GPU_DEFAULTS if gpu else CPU_DEFAULTS
    batch = args.batch or d["batch"]
    steps = args.steps or d["steps"]
    warmup_steps = args.warmup_steps or d["warmup_steps"]
    dtypes = args.dtypes or d["dtypes"]
    check_dtypes(dtypes, device)
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise ValueError(f"--lr must be a positive number, got {args.lr}")
    seed_flags = [f for f in ("epochs", "limit_train", "limit_test", "data_dir") if getattr(args, f) is not None]
    if seed_flags and not args.seed_run:
        raise ValueError(f"--{seed_flags[0].replace('_', '-')} is a --seed-run setting: add --seed-run")
    skipped = []
    if args.impls is None and not gpu:
        skipped.append("triton not measured by default on a CPU: one 224x224 training step through the Triton "
                       "interpreter takes over 5 minutes (--impls torch,triton to insist)")
    impls = list(args.impls or (IMPLS if gpu else ["torch"]))
    if not gpu and "compile" in impls:
        impls.remove("compile")
        skipped.append("torch.compile skipped on a CPU (max-autotune targets the GPU; torch.compile of the Triton "
                       "ops does not run under the interpreter)")
    if not impls:
        raise ValueError("--impls: nothing left to measure on this machine (compile is GPU-only)")
    if args.seed_run and "compile" in impls:
        skipped.append("no seed run for compile: torch_model.train has no torch.compile switch")
    if args.seed_run and "ddp" in impls:
        skipped.append("no seed run for ddp: DDP training runs under torchrun (docs/distributed.md)")

    info = machine_info(device)
    print(f"alexnet bench train on {info['device_name']}: batch {batch}, {steps} timed steps after "
          f"{warmup_steps} warm-up, {','.join(impls)}, dtypes {','.join(dtypes)}", flush=True)
    if not gpu:
        print("CPU smoke run: torch CPU kernels, Triton in its interpreter; NOT GPU results", flush=True)
    for line in skipped:
        print(f"note: {line}", flush=True)

    t_run = time.perf_counter()
    path = Path(args.out_dir) / f"{info['machine']}.jsonl"
    entries, seeds, failures = [], [], []
    with cudnn_benchmark():
        print("measuring the peaks (matmul, copy) ...", flush=True)
        peak = measure_peaks(device, dtypes)
        run_facts = {**info, "date": today(), "started": now_iso(), "argv": sys.argv[1:], "peak": peak}
        todo = [(i, dt, lay) for dt in dtypes for i in impls for lay in args.layouts]
        bar = tqdm(todo, desc="train step", unit="figure", disable=args.no_progress, dynamic_ncols=True)
        for impl, dtype, layout in bar:
            bar.set_postfix_str(f"{impl} {dtype} {layout}")
            try:
                with precision(dtype):
                    entries.append(measure_step(impl, dtype, batch, steps, warmup_steps, args, device, peak, layout))
            except Exception as exc:  # record, go on, exit 1: one failure must not cost the whole GPU run
                failures.append(f"train {impl} {dtype} {layout}: {type(exc).__name__}: {exc}")
                bar.write(f"FAILED {failures[-1]}")
                continue
            finally:
                if gpu:
                    torch.cuda.empty_cache()
            append_rows(path, [{"bench": "train", **run_facts, **entries[-1]}])  # a run cut short keeps it
        if args.seed_run:
            epochs = args.epochs or d["epochs"]
            limit_train = args.limit_train or (None if gpu else 4 * batch)
            limit_test = args.limit_test or (None if gpu else 4 * batch)
            for dtype in dtypes:
                for impl in [i for i in impls if i in ("torch", "triton")]:
                    print(f"seed run: {impl} {dtype}, {epochs} epoch(s), batch {batch}", flush=True)
                    try:
                        seeds.append(seed_run(impl, dtype, batch, epochs, limit_train, limit_test, args, device))
                    except Exception as exc:  # no data too: the step figures above are kept and written
                        failures.append(f"seed run {impl} {dtype}: {type(exc).__name__}: {exc}")
                        print(f"FAILED {failures[-1]}", flush=True)
                        continue
                    append_rows(path, [{"bench": "train --seed-run", **run_facts, **seeds[-1]}])

    print()
    print(describe(info, peak))
    print(format_table(*step_rows(entries)))
    print(f"one step = {train_step_flops(1) / 1e9:.2f} GFLOP per image (3x forward of every conv and linear, conv1 "
          f"2x); % peak: of the {'matmul peak of the dtype' if gpu else 'fp32 matmul peak'} measured above")
    if seeds:
        print()
        print(format_table(["impl", "dtype", "epochs", "train images", "seconds", "test acc", "status"],
                           [[e["impl"], e["dtype"], e["epochs"], e["train_images"], f"{e['seconds']:.1f}",
                             f"{e['test_acc']:.4f}", e["status"]] for e in seeds]))
    print(f"done in {time.perf_counter() - t_run:.0f} s, appended to {path}")
    return report_failures(failures)


def step_rows(entries: list[dict]) -> tuple[list[str], list[list]]:
    """One row per figure; x torch: its img/s over the best eager-torch figure's (over layouts) at its dtype and
    batch."""
    ref: dict = {}
    for e in entries:
        if e["impl"] == "torch":
            ref[(e["dtype"], e["batch"])] = max(ref.get((e["dtype"], e["batch"]), 0), e["img_per_s"])
    rows = []
    for e in sorted(entries, key=lambda e: (e["dtype"], e["batch"], e["impl"], e["layout"])):
        r = ref.get((e["dtype"], e["batch"]))
        frac = e["peak_fraction"]
        rows.append([e["impl"], e["dtype"], e["layout"], e["batch"], num(e["img_per_s"]), num(e["step_ms"]),
                     num(e["tflops"]), "" if frac is None else f"{100 * frac:.0f}",
                     f"{e['img_per_s'] / r:.2f}" if r else "", ",".join(e["conv_dtypes"] or [])])
    return ["impl", "dtype", "layout", "batch", "img/s", "step ms", "TFLOP/s", "% peak", "x torch",
            "convs ran in"], rows
