"""`alexnet bench train`: training-step throughput (images/s) of the seed AlexNet per backend, and the full seed run.

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

--seed-run adds, per backend (not compile: the training loop has no compile switch) and dtype, the wall time of the
seed's full run through torch_model.train.fit (10 epochs over 60,000 images plus evaluation on 10,000) and its
test accuracy.

On a machine without CUDA it is a smoke test: batch 2, 2 timed steps, fp32, torch CPU in place of cuDNN, compile
skipped, triton only when asked (the interpreter needs minutes per 224x224 step), a seed run of 1 epoch on 8
images; marked "cpu": true, never GPU results.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time

import torch

from torch_model.bench import common as C

BACKENDS = ("torch", "compile", "triton", "ddp")
COMPILE_MODES = ("max-autotune", "max-autotune-no-cudagraphs", "default", "reduce-overhead")
RESIZE = 224  # the seed model's first Linear takes 256x5x5: the train step runs at the seed's input size
GPU_DEFAULTS = dict(batch=128, steps=20, warmup_steps=3, dtypes=["tf32", "bf16"], epochs=10)
CPU_DEFAULTS = dict(batch=2, steps=2, warmup_steps=1, dtypes=["fp32"], epochs=1)


LAYOUTS = ("nchw", "channels_last")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backends", type=C.csv_choices(BACKENDS, "backend"),
                        help="torch (eager, cuDNN), compile (torch.compile), triton (our kernels), ddp (torch through "
                             "DistributedDataParallel on one device: its overhead); default: all on a "
                             "GPU, torch on a CPU (a 224x224 step through the Triton interpreter takes over 5 "
                             "minutes; ask for it with --backends torch,triton); compile is GPU-only")
    parser.add_argument("--dtypes", type=C.csv_choices(C.DTYPES, "dtype"),
                        help="tf32, bf16 (autocast), fp32 (TF32 off); default tf32,bf16 on a GPU, fp32 on a CPU")
    parser.add_argument("--layouts", type=C.csv_choices(LAYOUTS, "layout"), default=["nchw"],
                        help="nchw and/or channels_last (NHWC weights and batches, `alexnet train --channels-last`); "
                             "default: nchw")
    parser.add_argument("--batch", type=C.positive_int, help="batch size (default 128 on a GPU, 2 on a CPU)")
    parser.add_argument("--steps", type=C.positive_int, help="timed steps per figure (default 20 on a GPU, 2 on a CPU)")
    parser.add_argument("--warmup-steps", type=C.positive_int,
                        help="untimed steps first, the first one reported as setup (default 3 on a GPU, 1 on a CPU)")
    parser.add_argument("--compile-mode", choices=COMPILE_MODES, default="max-autotune",
                        help="torch.compile mode of the compile backend (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (default: %(default)s, the seed's)")
    seed = parser.add_argument_group("the full seed run (--seed-run)")
    seed.add_argument("--seed-run", action="store_true",
                      help="also train through torch_model.train.fit per backend and dtype: wall seconds, test acc")
    seed.add_argument("--epochs", type=C.positive_int, help="seed-run epochs (default 10 on a GPU, 1 on a CPU)")
    seed.add_argument("--limit-train", type=C.positive_int,
                      help="seed-run training images (default all 60,000 on a GPU, 4 batches on a CPU)")
    seed.add_argument("--limit-test", type=C.positive_int,
                      help="seed-run test images (default all 10,000 on a GPU, 4 batches on a CPU)")
    seed.add_argument("--data-dir", help="Fashion-MNIST folder for --seed-run (default: FASHION_MNIST_DIR, ...)")
    C.add_common_flags(parser)


# ----------------------------------------------------------------------------------------------- one figure

def make_bench_learner(backend: str, dtype: str, lr: float, device: torch.device, compile_mode: str,
                       layout: str = "nchw"):
    from torch_model.learners import make_learner

    learner = make_learner("triton" if backend == "triton" else "torch", lr=lr, device=device,
                           amp="bf16" if dtype == "bf16" else "none", channels_last=layout == "channels_last")
    if backend == "ddp":
        return one_process_ddp(learner)
    if backend == "compile":
        torch._dynamo.reset()
        # TorchLearner steps self.net; the compiled module shares its parameters with the optimizer's.
        learner.net = torch.compile(learner.net, mode=compile_mode)
    return learner


def one_process_ddp(learner):
    """`learner` through DDP in a process group of one (gloo on a CPU, NCCL on a GPU; a HashStore, no network):
    what `alexnet bench train --backends ddp` times against the plain step, i.e. the cost of DDP's hooks, gradient
    buckets and all-reduces, and of the step's two small all-reduces, on one device. End the group with
    `end_one_process_group()`."""
    import torch.distributed as dist

    from torch_model.distributed import DEFAULT_TIMEOUT_S, DistContext
    from torch_model.learners import DistributedLearner

    if not dist.is_initialized():
        backend = "nccl" if learner.device.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    ctx = DistContext(0, 1, 0, dist.get_backend(), DEFAULT_TIMEOUT_S, learner.device)
    return DistributedLearner(learner, ctx)


def end_one_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() == 1:
        dist.destroy_process_group()


def measure_step(backend: str, dtype: str, batch: int, steps: int, warmup_steps: int, args, device, peak,
                 layout: str = "nchw") -> dict:
    try:
        return _measure_step(backend, dtype, batch, steps, warmup_steps, args, device, peak, layout)
    finally:
        if backend == "ddp":
            end_one_process_group()


def _measure_step(backend: str, dtype: str, batch: int, steps: int, warmup_steps: int, args, device, peak,
                  layout: str) -> dict:
    torch.manual_seed(args.seed)
    learner = make_bench_learner(backend, dtype, args.lr, device, args.compile_mode, layout)
    learner.train()
    g = torch.Generator(device=device).manual_seed(args.seed)
    # 4 different batches in turn (fresh data each step, as training sees); images in [0, 1) like ToTensor's
    data = [(torch.rand(batch, 1, RESIZE, RESIZE, generator=g, device=device),
             torch.randint(0, 10, (batch,), generator=g, device=device)) for _ in range(4)]
    losses = []
    # which dtype the convs really compute in (autocast casts only the ops it knows; a custom op gets fp32)
    conv_dtypes: set[str] = set()
    hooks = [] if backend == "compile" else [
        m.register_forward_hook(lambda m, i, o: conv_dtypes.add(str(o.dtype).removeprefix("torch.")))
        for m in learner.net.modules() if isinstance(m, torch.nn.Conv2d)]
    C.sync(device)
    t0 = time.perf_counter()
    losses.append(learner.step(*data[0])[0])  # compile / autotune / cuDNN search happen here
    C.sync(device)
    setup_s = time.perf_counter() - t0
    for h in hooks:
        h.remove()
    if dtype == "bf16" and "float32" in conv_dtypes:
        print(f"note: {backend} bf16: the convs ran in float32 under bf16 autocast (an op with no autocast rule "
              f"gets fp32 inputs): this figure is not an all-bf16 step", flush=True)
    for i in range(1, warmup_steps):
        losses.append(learner.step(*data[i % 4])[0])
    times = []
    for i in range(steps):
        X, y = data[(warmup_steps + i) % 4]
        C.sync(device)
        t0 = time.perf_counter()
        loss, _ = learner.step(X, y)  # returns loss.item(): the host waits for the step, as the loop does
        C.sync(device)
        times.append(time.perf_counter() - t0)
        losses.append(loss)
    if not all(math.isfinite(v) for v in losses):
        raise ValueError(f"{backend} {dtype}: the loss became {losses[-1]} (non-finite) during the benchmark")
    step_s = statistics.median(times)
    flops = C.train_step_flops(batch, RESIZE)
    tflops = flops / step_s / 1e12
    mm_peak = C.matmul_peak(peak, dtype)
    q = statistics.quantiles(times, n=5, method="inclusive") if len(times) > 1 else [times[0]] * 4
    return {
        "backend": backend, "dtype": dtype, "layout": layout, "batch": batch, "img_per_s": batch / step_s,
        "img_per_s_mean": batch * len(times) / sum(times), "step_ms": 1e3 * step_s,
        "step_ms_p20": 1e3 * q[0], "step_ms_p80": 1e3 * q[3], "steps": steps, "warmup_steps": warmup_steps,
        "setup_s": round(setup_s, 3), "flops": flops, "tflops": tflops,
        "peak_fraction": tflops / mm_peak if mm_peak else None, "resize": RESIZE,
        "first_loss": losses[0], "last_loss": losses[-1],
        "amp": "bf16" if dtype == "bf16" else "none", "conv_dtypes": sorted(conv_dtypes) or None,
        "compile_mode": args.compile_mode if backend == "compile" else None,
        "timer": "perf_counter per step, synchronized, median",
        "interpreter": device.type != "cuda" and backend == "triton",
    }


def seed_run(backend: str, dtype: str, batch: int, epochs: int, limit_train, limit_test, args, device) -> dict:
    """The seed's training run through the project's own loop (torch_model.train.fit), in a throw-away folder."""
    from torch_model.train import TrainConfig, fit

    with tempfile.TemporaryDirectory(prefix="alexnet-seed-run-") as tmp, C.precision(dtype):
        cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=args.lr, resize=RESIZE, device=str(device),
                          seed=args.seed, data_dir=args.data_dir, out=f"{tmp}/run", backend=backend,
                          amp="bf16" if dtype == "bf16" else "none", limit_train=limit_train,
                          limit_test=limit_test, progress=not args.no_progress,
                          checkpoint=False)  # the seed run's time is training + evaluation, not disk writes
        result = fit(cfg)
    return {
        "backend": backend, "dtype": dtype, "epochs": epochs, "seconds": result.seconds,
        "test_acc": result.test_acc, "batch": batch, "limit_train": limit_train, "limit_test": limit_test,
        "train_images": limit_train or 60000, "status": result.status,
        "examples_per_sec": result.examples_per_sec,
        "history": [{k: h.get(k) for k in ("epoch", "loss", "train_acc", "test_acc", "train_seconds",
                                           "eval_seconds")} for h in result.history],
    }


# ----------------------------------------------------------------------------------------------- the run

def measure_steps(backends, dtypes, batch, steps, warmup_steps, args, device, peak, tqdm, entries, failures,
                  save) -> None:
    """One figure per (backend, dtype, layout), appended to `entries` (or to `failures`), saved after each."""
    todo = [(b, dt, lay) for dt in dtypes for b in backends for lay in args.layouts]
    bar = tqdm(todo, desc="train step", unit="figure", disable=args.no_progress, dynamic_ncols=True)
    for backend, dtype, layout in bar:
        bar.set_postfix_str(f"{backend} {dtype} {layout}")
        try:
            with C.precision(dtype):
                entries.append(measure_step(backend, dtype, batch, steps, warmup_steps, args, device, peak,
                                            layout))
        except Exception as exc:  # record, go on, exit 1: one failure must not cost the whole GPU run
            failures.append(f"train {backend} {dtype} {layout}: {type(exc).__name__}: {exc}")
            bar.write(f"FAILED {failures[-1]}")
            continue
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        save()


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    device = C.resolve_device(args.device)
    if "triton" in (args.backends or ()):
        C.import_triton_kernels()
    gpu = device.type == "cuda"
    d = GPU_DEFAULTS if gpu else CPU_DEFAULTS
    batch = args.batch or d["batch"]
    steps = args.steps or d["steps"]
    warmup_steps = args.warmup_steps or d["warmup_steps"]
    dtypes = args.dtypes or d["dtypes"]
    C.check_dtypes(dtypes, device)
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise ValueError(f"--lr must be a positive number, got {args.lr}")
    seed_flags = [f for f in ("epochs", "limit_train", "limit_test", "data_dir") if getattr(args, f) is not None]
    if seed_flags and not args.seed_run:
        raise ValueError(f"--{seed_flags[0].replace('_', '-')} is a --seed-run setting: add --seed-run")
    skipped = []
    if args.backends is None and not gpu:
        skipped.append("triton not measured by default on a CPU: one 224x224 training step through the Triton "
                       "interpreter takes over 5 minutes (--backends torch,triton to insist)")
    backends = list(args.backends or (BACKENDS if gpu else ["torch"]))
    if not gpu and "compile" in backends:
        backends.remove("compile")
        skipped.append("torch.compile skipped on a CPU (max-autotune targets the GPU; torch.compile of the Triton "
                       "ops does not run under the interpreter)")
    if not backends:
        raise ValueError("--backends: nothing left to measure on this machine (compile is GPU-only)")
    seed_backends = [b for b in backends if b not in ("compile", "ddp")]
    if args.seed_run and "compile" in backends:
        skipped.append("no seed run for compile: torch_model.train has no torch.compile switch")
    if args.seed_run and "ddp" in backends:
        skipped.append("no seed run for ddp: DDP training runs under torchrun (docs/distributed.md)")

    info = C.machine_info(device)
    print(f"alexnet bench train on {info['device_name']}: batch {batch}, {steps} timed steps after "
          f"{warmup_steps} warm-up, backends {','.join(backends)}, dtypes {','.join(dtypes)}", flush=True)
    if not gpu:
        print("CPU smoke run: torch CPU kernels, Triton in its interpreter; NOT GPU results", flush=True)
    for line in skipped:
        print(f"note: {line}", flush=True)

    t_run, started = time.perf_counter(), C.now_iso()
    entries: list[dict] = []
    seeds: list[dict] = []
    failures: list[str] = []

    def result(complete: bool) -> dict:
        ref = {(e["dtype"], e["batch"]): e["img_per_s"] for e in entries if e["backend"] == "torch"}
        for e in entries:
            r = ref.get((e["dtype"], e["batch"]))
            e["vs_torch"] = e["img_per_s"] / r if r else None
        run_meta = {"started": started, "seconds": round(time.perf_counter() - t_run, 1), "complete": complete,
                    "argv": sys.argv[1:], "batch": batch, "steps": steps, "warmup_steps": warmup_steps,
                    "compile_mode": args.compile_mode, "peak": peak, "skipped": skipped, "failures": failures,
                    "cudnn_benchmark": True}
        out = {**info, "date": C.today(), "peak": peak, "train": entries, "runs": {"train": run_meta}}
        if args.seed_run:
            out["seed_run"] = seeds
            out["runs"]["seed_run"] = {"started": started, "argv": sys.argv[1:], "complete": complete}
        return C.clean_json(out)

    def save() -> None:  # after every figure: a run cut short (a timeout) keeps what it measured
        C.save_run(args.out_dir, result(complete=False))

    with C.cudnn_benchmark():
        print("measuring the peaks (matmul, copy) ...", flush=True)
        peak = C.measure_peaks(device, dtypes)
        measure_steps(backends, dtypes, batch, steps, warmup_steps, args, device, peak, tqdm, entries, failures,
                      save)
        if args.seed_run:
            epochs = args.epochs or d["epochs"]
            limit_train = args.limit_train or (None if gpu else 4 * batch)
            limit_test = args.limit_test or (None if gpu else 4 * batch)
            for dtype in dtypes:
                for backend in seed_backends:
                    print(f"seed run: {backend} {dtype}, {epochs} epoch(s), batch {batch}", flush=True)
                    try:
                        seeds.append(seed_run(backend, dtype, batch, epochs, limit_train, limit_test, args, device))
                    except Exception as exc:  # no data too: the step figures above are kept and written
                        failures.append(f"seed run {backend} {dtype}: {type(exc).__name__}: {exc}")
                        print(f"FAILED {failures[-1]}", flush=True)
                        continue
                    save()

    final = result(complete=True)
    print()
    print(C.describe(final))
    print(C.format_table(*C.train_rows(final)))
    print(f"one step = {C.train_step_flops(1) / 1e9:.2f} GFLOP per image (3x forward of every conv and linear, conv1 "
          f"2x); % peak: of the {'matmul peak of the dtype' if gpu else 'fp32 matmul peak'} measured above")
    if args.seed_run:
        print()
        print(C.format_table(*C.seed_rows(final)))
    print(f"done in {final['runs']['train']['seconds']:.0f} s")
    C.finish(args.out_dir, final, "train", args.update_readme)
    return C.report_failures(failures)
