"""`alexnet bench cpu`: where the CPU training step's time goes, layer by layer, set against the CPU's own matmul.

One run measures, on torch's threads (--threads to pick): the reference rates (a bf16 --matmul-size^3 matmul, an
fp32 one too with --amp none, and the copy bandwidth of timing.measure_peaks); the step (learner.step(X, y) of the
learner `alexnet train` builds here, batch 128 of random 1x224x224 images: img/s, TFLOP/s, the fraction of the
matmul rate, minor page faults per step); the profile (--profile-steps more steps under torch.profiler, every op's
self time in exactly one row, so the rows add up to the profiled step); and the real loop beside it
(torch_model.train.fit for one epoch on --loop-train images). --compare-malloc runs all of it in two child
processes, glibc's malloc defaults (ALEXNET_GLIBC_MALLOC=1) and torch_model.device.keep_freed_memory (what the CLI
sets), --rounds times alternately, and prints them side by side (medians over the rounds).

How an op finds its row (forward hooks open a record_function range around every layer's forward and note the
autograd nodes it made; the backward's events carry their node's sequence number): the first of python, alloc/fill,
casts, layout, conv<k>, fc<k>, pool<k>, relu, dropout, loss, optimizer, other that applies, and each row's napkin
work (FLOPs for GEMM rows from layer_specs, bytes for the others): docs/benchmarks/README.md, "The CPU training
step", tells both in full.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from numpy_ref.model import layer_names as alexnet_layer_names
from torch_model.bench.common import append_rows, clean_json, format_table, num, positive_int, report_failures
from torch_model.bench.layer_specs import POOL_TRAFFIC, alexnet_specs, train_step_flops
from torch_model.bench.timing import machine_info, matmul_rate, measure_peaks, now_iso, today
from torch_model.bench.train import RESIZE, fit_in_tmp, make_bench_learner, random_batches, time_steps
from torch_model.files import atomic_write

CPU = torch.device("cpu")
# Not under docs/benchmarks/results/: that folder holds the GPU benches' results files (one JSON object each, one
# schema, rendered into the README) and ignores their CPU smoke runs (*-cpu-*). These are real CPU measurements,
# one JSON line appended per run, one file per machine, and are meant to be committed.
DEFAULT_OUT_DIR = Path("docs/benchmarks/cpu")
MALLOC_ENV = "ALEXNET_GLIBC_MALLOC"
ALLOCATORS = ("glibc_defaults", "keep_freed_memory")       # --compare-malloc's two children, in the order run
SHORT = {"glibc_defaults": "glibc", "keep_freed_memory": "kept"}
# what a --compare-malloc line says once for both runs: the machine (machine_info's keys) and the step's settings
SETTINGS = ("machine", "device_name", "cpu_model", "cpu_count", "cpu", "torch", "triton", "numpy", "python",
            "platform", "date", "threads", "batch", "amp", "layout", "why", "resize", "lr", "seed", "flops_per_image")
DEFAULTS = dict(batch=128, steps=10, warmup_steps=3, profile_steps=3, matmul_size=4096, loop_train=1280,
                loop_test=128)

ALLOC_FILL = frozenset({"aten::empty", "aten::empty_strided", "aten::empty_like", "aten::new_empty",
                        "aten::new_empty_strided", "aten::resize_", "aten::fill_", "aten::zero_", "aten::zeros",
                        "aten::zeros_like", "aten::new_zeros", "aten::ones", "aten::ones_like", "aten::full",
                        "aten::full_like"})
CONVERT = frozenset({"aten::to", "aten::_to_copy", "aten::contiguous", "aten::clone"})
GEMM = frozenset({"aten::mm", "aten::addmm", "aten::matmul", "aten::bmm"})
RANGE = "alexnet."                        # this bench's record_function ranges: alexnet.step, alexnet.fwd.<layer>
ENGINE = "autograd::engine::evaluate_function: "
ACCUMULATE = "torch::autograd::AccumulateGrad"
KINDS = ("gemm", "pool", "elementwise", "optimizer", "cast", "layout", "alloc", "other")
COLOURS = dict(zip(KINDS, ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:red", "tab:brown", "tab:pink",
                           "tab:gray")))
PREFIX = ((nn.Conv2d, "conv"), (nn.MaxPool2d, "pool"), (nn.Linear, "fc"), (nn.ReLU, "relu"),
          (nn.Dropout, "dropout"), (nn.Flatten, "flatten"))


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--amp", choices=("bf16", "none"),
                        help="bf16: autocast with channels_last weights and batches; none: the seed's fp32 NCHW "
                             "(default: what `alexnet train` picks on this CPU)")
    parser.add_argument("--batch", type=positive_int, default=DEFAULTS["batch"], help="default: %(default)s")
    parser.add_argument("--steps", type=positive_int, default=DEFAULTS["steps"],
                        help="timed steps (default: %(default)s)")
    parser.add_argument("--warmup-steps", type=positive_int, default=DEFAULTS["warmup_steps"],
                        help="untimed steps first, the first one reported as setup (default: %(default)s)")
    parser.add_argument("--profile-steps", type=positive_int, default=DEFAULTS["profile_steps"],
                        help="steps under torch.profiler after the timed ones (default: %(default)s)")
    parser.add_argument("--threads", type=positive_int, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--matmul-size", type=positive_int, default=DEFAULTS["matmul_size"], metavar="N",
                        help="the reference matmul is N x N x N (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (default: %(default)s, the seed's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model and the random batches")
    loop = parser.add_argument_group("the training loop beside the bare step")
    loop.add_argument("--no-loop", action="store_true", help="skip torch_model.train.fit (needs no data)")
    loop.add_argument("--loop-train", type=positive_int,
                      help=f"training images for the loop's one epoch (default: {DEFAULTS['loop_train']})")
    loop.add_argument("--loop-test", type=positive_int,
                      help=f"test images it evaluates (default: {DEFAULTS['loop_test']})")
    loop.add_argument("--data-dir", help="Fashion-MNIST folder (default: FASHION_MNIST_DIR, ...)")
    malloc = parser.add_argument_group("glibc's malloc against keep_freed_memory")
    malloc.add_argument("--compare-malloc", action="store_true",
                        help=f"run everything in two child processes, {MALLOC_ENV}=1 (glibc's defaults) and "
                             f"keep_freed_memory, and print them side by side")
    malloc.add_argument("--rounds", type=positive_int, default=1,
                        help="--compare-malloc: run the pair this many times, alternating; medians are printed "
                             "(default: %(default)s)")
    parser.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR),
                        help="where <machine>.jsonl (one line appended per run) and <machine>-<amp>-step-profile.png "
                             "go (default: %(default)s)")
    parser.add_argument("--child-json", help=argparse.SUPPRESS)  # --compare-malloc's children write here, only here


# ----------------------------------------------------------------------------------------------- the rows

@dataclass(frozen=True)
class Row:
    """One line of the profile table: what it computes and its napkin work (FLOPs for GEMMs, else bytes)."""
    name: str
    kind: str               # one of KINDS
    what: str
    flops: int = 0
    bytes: int | None = None


def layer_names(net: nn.Module) -> list[tuple[str, str, nn.Module]]:
    """(name, kind, module) for every layer of the Sequential: the names numpy_ref.model.layer_names gives (conv1..
    conv5, relu1.., pool1, pool2, pool5, flatten, fc6..fc8, drop6, drop7), the kinds the profile's rows group by."""
    return [(name, next(p for t, p in PREFIX if isinstance(m, t)), m)
            for name, m in zip(alexnet_layer_names(net), net.children())]


def output_elements(batch: int) -> dict[str, int]:
    """Each layer's output elements at this batch, the seed model run on the meta device (no memory)."""
    from torch_model.model import alexnet

    with torch.device("meta"):
        net = alexnet(init=False)
        x = torch.empty(batch, 1, RESIZE, RESIZE)
    out = {}
    for name, _, m in layer_names(net):
        x = m(x)
        out[name] = x.numel()
    return out


def step_rows(batch: int, amp: str) -> list[Row]:
    """The profile's rows in table order, with their napkin work for one step at `batch`."""
    from torch_model.model import alexnet

    b = 2 if amp == "bf16" else 4
    specs = alexnet_specs(batch, RESIZE)
    elements = output_elements(batch)
    _, record, dx_writes = POOL_TRAFFIC["torch-cpu"]
    rows: list[Row] = []
    pool_dx = 0
    for s in specs:
        fwd = s.flops("fwd")
        if s.kind == "conv":
            rows += [Row(f"{s.name} fwd", "gemm", "mkldnn_convolution", fwd),
                     Row(f"{s.name} bwd", "gemm", "convolution_backward: " + ("dW" if s.first else "dX + dW"),
                         s.flops("fwd+bwd") - fwd)]
        elif s.kind == "linear":
            rows += [Row(f"{s.name} fwd", "gemm", "addmm", fwd), Row(f"{s.name} dX", "gemm", "mm", fwd),
                     Row(f"{s.name} dW", "gemm", "mm, bias sum", s.flops("fwd+bwd") - 2 * fwd)]
        else:
            x, y = s.N * s.C * s.H * s.W, s.N * s.F * s.OH * s.OW
            pool_dx += b * x
            rows += [Row(f"{s.name} fwd", "pool", "read x, write y and int64 indices", bytes=b * (x + y) + record * y),
                     Row(f"{s.name} bwd", "pool", "read dy and indices, scatter into dx",
                         bytes=b * y + record * y + (dx_writes - 1) * b * x)]
    relu = sum(n for name, n in elements.items() if name.startswith("relu"))
    drop = sum(n for name, n in elements.items() if name.startswith("drop"))
    logits = elements["fc8"]
    with torch.device("meta"):
        params = sum(p.numel() for p in alexnet(init=False).parameters())
    casts = 6 * (2 * params + batch * RESIZE * RESIZE + 2 * logits) if amp == "bf16" else None
    rows += [
        Row("relu fwd", "elementwise", "clamp_min, 7 layers", bytes=2 * relu * b),
        Row("relu bwd", "elementwise", "threshold_backward", bytes=3 * relu * b),
        Row("dropout fwd", "elementwise", "bernoulli_, div_, mul", bytes=3 * drop * b),
        Row("dropout bwd", "elementwise", "mul by the mask", bytes=3 * drop * b),
        Row("loss fwd", "elementwise", "log_softmax, nll_loss (fp32)", bytes=2 * logits * 4),
        Row("loss bwd", "elementwise", "their backwards", bytes=3 * logits * 4),
        Row("optimizer", "optimizer", "SGD p -= lr*g, zero_grad, AccumulateGrad", bytes=12 * params),
        Row("casts", "cast", "autocast: weights, input to bf16; grads to fp32" if casts else "dtype copies",
            bytes=casts),
        Row("layout", "layout", "contiguous/clone/to copies, flatten", bytes=None),
        Row("alloc/fill", "alloc", "empty, fill_, zero_ (bytes: the pools' zeroed dx)", bytes=pool_dx),
        Row("python", "other", "Python between ops, hooks", bytes=None),
        Row("other", "other", "loss.item(), detach, ...", bytes=None),
    ]
    return rows


# ----------------------------------------------------------------------------------------------- the profile

class Labels:
    """Forward hooks on every layer (and the loss): a record_function range around its forward, and the autograd
    nodes its forward made, by (sequence number, node name), so the backward's events find their layer."""

    def __init__(self, learner):
        from torch.autograd.profiler import record_function

        self._record_function = record_function
        layers = layer_names(learner.net)
        layers.append(("loss", "loss", learner.loss_fn))
        self.kinds = {name: kind for name, kind, _ in layers}
        self.nodes: dict[tuple[int, str], str] = {}
        self.fc_shapes = {name: (m.in_features, m.out_features) for name, kind, m in layers if kind == "fc"}
        self._open: dict[str, object] = {}
        self._handles = []
        for name, _, m in layers:
            self._handles.append(m.register_forward_pre_hook(self._enter(name)))
            self._handles.append(m.register_forward_hook(self._exit(name)))

    def _enter(self, name: str):
        def hook(module, inputs):
            self._open[name] = self._record_function(f"{RANGE}fwd.{name}").__enter__()
        return hook

    def _exit(self, name: str):
        def hook(module, inputs, output):
            stack = [output.grad_fn] if torch.is_tensor(output) else []
            while stack:                              # the nodes this layer made: back to the previous layer's
                node = stack.pop()
                if node is None:
                    continue
                key = (node._sequence_nr(), node.name())
                if key in self.nodes:
                    continue
                self.nodes[key] = name
                stack += [fn for fn, _ in node.next_functions]
            self._open.pop(name).__exit__(None, None, None)
        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


@dataclass
class Profile:
    events: list            # torch.profiler FunctionEvents of every profiled step
    rows_of: list[str]      # the row each event's self time went to, aligned with events
    steps: int
    wall_s: float           # perf_counter over the profiled steps (the profiler's overhead included)


def profile_steps(learner, data: list, steps: int) -> Profile:
    """`steps` learner.step calls under torch.profiler (CPU ops, shapes), each inside an alexnet.step range."""
    from torch.profiler import ProfilerActivity, profile, record_function

    labels = Labels(learner)
    try:
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            t0 = time.perf_counter()
            for i in range(steps):
                with record_function(f"{RANGE}step"):
                    learner.step(*data[i % len(data)])
            wall = time.perf_counter() - t0
    finally:
        labels.remove()
    events = list(prof.events())
    batch = data[0][0].shape[0]
    return Profile(events, attribute(events, labels, batch), steps, wall)


def _subtree(e):
    yield e
    for c in e.cpu_children:
        yield from _subtree(c)


def _is_cast(copy) -> bool:
    dtypes = [d for d in (copy.input_dtypes or [])[:2] if d]
    return len(set(dtypes)) > 1


def attribute(events: list, labels: Labels, batch: int) -> list[str]:
    """The row of every event's self time (the rules of this module's docstring), aligned with `events`."""
    converts: dict[int, str | None] = {}      # id(convert op) -> "casts" | "layout" | None (copied nothing)

    def conversion(e) -> str | None:
        if id(e) not in converts:
            copies = [c for c in _subtree(e) if c.name == "aten::copy_"]
            converts[id(e)] = None if not copies else "casts" if any(map(_is_cast, copies)) else "layout"
        return converts[id(e)]

    def context(e):
        if e.name.startswith(f"{RANGE}fwd."):
            return "fwd", e.name.removeprefix(f"{RANGE}fwd."), None
        if e.name == f"{RANGE}step":
            return "step", None, None
        if e.name.startswith("Optimizer."):
            return "optimizer", None, None
        node = e.name.removeprefix(ENGINE)
        if node == ACCUMULATE:
            return "optimizer", None, None
        if (e.sequence_nr, node) in labels.nodes:
            return "bwd", labels.nodes[(e.sequence_nr, node)], node
        if e.name.startswith(ENGINE):
            return "bwd", None, node
        return None

    # fc backward: which mm is dX (grad (N, out) @ W (out, in)); the first such in its node if shapes can't tell
    dx: set[int] = set()
    for e in events:
        ctx = context(e) if e.name.startswith(ENGINE) else None
        if ctx and ctx[1] in labels.fc_shapes:
            fan_in, fan_out = labels.fc_shapes[ctx[1]]
            gemms = sorted((g for g in _subtree(e) if g.name in GEMM and not _gemm_parent(g)),
                           key=lambda g: g.time_range.start)
            matches = [g for g in gemms if [s for s in g.input_shapes if s][-2:] == [[batch, fan_out],
                                                                                    [fan_out, fan_in]]]
            if matches:
                dx.add(id(matches[0]))

    def row_in(ctx, gemm) -> str:
        where, name, node = ctx
        if where == "optimizer":
            return "optimizer"
        if where == "step":
            return "other"
        if where == "bwd" and node == "ToCopyBackward0":
            return "casts"
        if name is None:
            return "other"
        kind = labels.kinds[name]
        if kind in ("relu", "dropout", "loss"):
            return f"{kind} {where}"
        if kind == "flatten":
            return "layout"
        if kind == "fc" and where == "bwd":
            return f"{name} dX" if gemm is not None and id(gemm) in dx else f"{name} dW"
        if kind in ("conv", "fc", "pool"):
            return f"{name} {where}"
        return "other"

    rows = []
    for e in events:
        if e.name.startswith(RANGE):
            rows.append("python")
            continue
        if e.name in ALLOC_FILL:
            rows.append("alloc/fill")
            continue
        if e.name == "aten::copy_" and _is_cast(e):
            rows.append("casts")
            continue
        row, gemm, a = "other", None, e
        while a is not None:
            ctx = context(a)
            if ctx is not None:
                row = row_in(ctx, gemm)
                break
            if a.name in CONVERT and conversion(a) is not None:
                row = conversion(a)
                break
            if a.name in GEMM and gemm is None:
                gemm = a
            a = a.cpu_parent
        rows.append(row)
    return rows


def _gemm_parent(e) -> bool:
    p = e.cpu_parent
    while p is not None:
        if p.name in GEMM:
            return True
        p = p.cpu_parent
    return False


def summarize(prof: Profile, rows: list[Row], ref_tflops: float, copy_gb_per_s: float) -> dict:
    """ms per step, share, rate and the ops of every row; the totals they must add up to."""
    unknown = set(prof.rows_of) - {r.name for r in rows}
    if unknown:  # a row attribute() names but step_rows does not: a bug here, never a silent loss
        raise AssertionError(f"rows without a definition: {sorted(unknown)}")
    us: Counter = Counter()
    ops: dict[str, Counter] = {r.name: Counter() for r in rows}
    for e, row in zip(prof.events, prof.rows_of):
        us[row] += e.self_cpu_time_total
        ops[row][_op_name(e, where=row in ("alloc/fill", "casts", "layout"))] += e.self_cpu_time_total
    total_us = sum(e.self_cpu_time_total for e in prof.events)
    roots_us = sum(e.cpu_time_total for e in prof.events if e.cpu_parent is None)
    out = []
    for r in rows:
        ms = us[r.name] / 1e3 / prof.steps
        entry = {"row": r.name, "kind": r.kind, "what": r.what, "flops": r.flops or None, "bytes": r.bytes,
                 "ms": ms, "share": us[r.name] / total_us if total_us else 0.0,
                 "ops": {k: v / 1e3 / prof.steps for k, v in ops[r.name].most_common(6)}}
        _rates(entry, ref_tflops, copy_gb_per_s)
        out.append(entry)
    return {"steps": prof.steps, "events": len(prof.events), "wall_ms": 1e3 * prof.wall_s / prof.steps,
            "total_ms": total_us / 1e3 / prof.steps, "roots_ms": roots_us / 1e3 / prof.steps, "rows": out}


def _short(name: str) -> str:
    return name.removeprefix("aten::").removeprefix(RANGE).replace(ENGINE, "engine: ")


def _op_name(e, where: bool) -> str:
    """The op's name; where=True adds the op it ran inside (fill_ in max_pool2d_with_indices_backward, ...)."""
    if not where or not e.name.startswith("aten::"):
        return _short(e.name)
    p = e.cpu_parent
    while p is not None and (p.name in ALLOC_FILL or p.name in CONVERT or p.name == "aten::copy_"):
        p = p.cpu_parent
    return _short(e.name) + ("" if p is None else f" in {_short(p.name)}")


def _rates(entry: dict, ref_tflops: float, copy_gb_per_s: float) -> None:
    ms = entry["ms"]
    tflops = entry["flops"] / (ms * 1e9) if entry["flops"] and ms > 0 else None
    gb_per_s = entry["bytes"] / (ms * 1e6) if entry["bytes"] and ms > 0 else None
    entry.update(tflops=tflops, gb_per_s=gb_per_s,
                 peak_fraction=tflops / ref_tflops if tflops else gb_per_s / copy_gb_per_s if gb_per_s else None)


# ----------------------------------------------------------------------------------------------- measuring

def training_loop(batch: int, amp: str, channels_last: bool, lr: float, seed: int, data_dir, limit_train: int,
                  limit_test: int) -> dict:
    """One epoch of the real loop (torch_model.train.fit) in a throw-away folder: d2l's examples/sec."""
    result = fit_in_tmp(quiet=True, epochs=1, batch_size=batch, lr=lr, device="cpu", seed=seed, data_dir=data_dir,
                        backend="torch", amp=amp, channels_last=channels_last, limit_train=limit_train,
                        limit_test=limit_test, progress=False, pictures=False)
    if result.status != "completed":
        raise ValueError(f"the training loop ended {result.status!r}")
    first = result.history[0]
    return {"examples_per_sec": result.examples_per_sec, "images": first["examples"],
            "train_seconds": first["train_seconds"], "seconds": result.seconds, "limit_test": limit_test,
            "loss": first["loss"]}


def recorded_argv() -> list[str]:
    """The command line as a results line records it: without --child-json and its path (a temporary file the
    parent reads back, nothing to reproduce)."""
    argv = sys.argv[1:]
    if "--child-json" in argv:
        i = argv.index("--child-json")
        argv = argv[:i] + argv[i + 2:]
    return argv


def allocator() -> str:
    """How this process's malloc treats freed memory (the CLI set it before the command; set again to know)."""
    from torch_model.device import keep_freed_memory

    if os.environ.get(MALLOC_ENV) == "1":
        return f"glibc defaults ({MALLOC_ENV}=1)"
    return "glibc keeps freed memory (keep_freed_memory)" if keep_freed_memory() else "the C library's defaults"


def measure(args, amp: str, channels_last: bool, why: str) -> dict:
    """The whole measurement in this process: matmul, timed steps, profile, loop."""
    info = machine_info(CPU)
    started = now_iso()
    result = {**info, "date": today(), "started": started, "threads": torch.get_num_threads(),
              "allocator": allocator(), "batch": args.batch, "amp": amp,
              "layout": "channels_last" if channels_last else "nchw", "why": why, "resize": RESIZE, "lr": args.lr,
              "seed": args.seed, "argv": recorded_argv()}
    say(f"alexnet bench cpu on {info['device_name']}: torch {info['torch']}, {result['threads']} threads, "
        f"{result['allocator']}; batch {args.batch}, amp {amp}, {result['layout']} ({why})")
    say(f"the matmul rate: {args.matmul_size}^3 bf16{'' if amp == 'bf16' else ' and fp32'} ...")
    matmul = {"bf16": matmul_rate(args.matmul_size, torch.bfloat16, CPU)}
    if amp != "bf16":
        matmul["fp32"] = matmul_rate(args.matmul_size, torch.float32, CPU)
    ref = matmul["bf16" if amp == "bf16" else "fp32"]["tflops"]
    peaks = measure_peaks(CPU)
    copy_gb_per_s = 1e3 * peaks["copy_tb_per_s"]
    result.update(matmul=matmul, ref_dtype="bf16" if amp == "bf16" else "fp32", ref_tflops=ref,
                  copy_gb_per_s=copy_gb_per_s, flops_per_image=train_step_flops(1, RESIZE))

    torch.manual_seed(args.seed)
    learner = make_bench_learner("torch", "bf16" if amp == "bf16" else "fp32", args.lr, CPU, None,
                                 "channels_last" if channels_last else "nchw")
    learner.train()
    data = random_batches(args.batch, args.seed, CPU)
    say(f"the step: {args.warmup_steps} warm-up + {args.steps} timed ...")
    step = time_steps(learner, data, args.warmup_steps, args.steps, CPU)
    tflops = train_step_flops(args.batch, RESIZE) / (step["step_ms"] * 1e-3) / 1e12
    result["step"] = {**step, "flops": train_step_flops(args.batch, RESIZE), "tflops": tflops,
                      "peak_fraction": tflops / ref, "bf16_fraction": tflops / matmul["bf16"]["tflops"]}
    say(f"the profile: {args.profile_steps} steps under torch.profiler ...")
    prof = profile_steps(learner, data, args.profile_steps)
    result["profile"] = summarize(prof, step_rows(args.batch, amp), ref, copy_gb_per_s)
    del learner, prof, data
    result["loop"] = None
    if not args.no_loop:
        say(f"the training loop: torch_model.train.fit, 1 epoch of {args.loop_train} images ...")
        result["loop"] = training_loop(args.batch, amp, channels_last, args.lr, args.seed, args.data_dir,
                                       args.loop_train, args.loop_test)
    return clean_json(result)


# ----------------------------------------------------------------------------------------------- printing

def _work(r: dict) -> str:
    return f"{num(r['flops'] / 1e9)} GFLOP" if r["flops"] else f"{num(r['bytes'] / 1e6)} MB" if r["bytes"] else ""


def _rate(r: dict) -> str:
    return f"{num(r['tflops'])} TFLOP/s" if r["tflops"] else f"{num(r['gb_per_s'])} GB/s" if r["gb_per_s"] else ""


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.0f}%" if x >= 0.01 else f"{100 * x:.1f}%"


def profile_table(result: dict) -> str:
    rows = []
    for r in result["profile"]["rows"]:
        top = ", ".join(f"{k} {num(v)}" for k, v in list(r["ops"].items())[:2])
        rows.append([r["row"], r["kind"], _work(r), num(r["ms"]), _pct(r["share"]), _rate(r),
                     _pct(r["peak_fraction"]), top])
    p = result["profile"]
    rows.append(["total", "", "", num(p["total_ms"]), "100%", "", "", f"{p['events']} events"])
    return format_table(["row", "kind", "work", "ms/step", "share", "rate", "% mm|copy", "top ops (ms)"], rows)


def summary_lines(result: dict) -> list[str]:
    s, p, mm = result["step"], result["profile"], result["matmul"]
    lines = [f"matmul {mm['bf16']['n']}^3 bf16: {num(mm['bf16']['tflops'])} TFLOP/s"
             + (f", fp32: {num(mm['fp32']['tflops'])} TFLOP/s" if "fp32" in mm else "")
             + f"; copy {num(result['copy_gb_per_s'])} GB/s",
             f"step: {num(s['img_per_s'])} img/s ({num(s['step_ms'])} ms, p20-p80 {num(s['step_ms_p20'])}-"
             f"{num(s['step_ms_p80'])}), {num(result['flops_per_image'] / 1e9)} GFLOP per image -> "
             f"{num(s['tflops'])} TFLOP/s = {_pct(s['peak_fraction'])} of the {result['ref_dtype']} matmul"
             + ("" if result["ref_dtype"] == "bf16" else f" ({_pct(s['bf16_fraction'])} of bf16's)")
             + f"; {num(s['minor_faults_per_step'])} minor page faults per step",
             f"profiled: {num(p['wall_ms'])} ms per step ({100 * (p['wall_ms'] / s['step_ms'] - 1):+.0f}% against "
             f"the timed step: the profiler's own cost, and noise); rows from {p['steps']} steps"]
    loop = result.get("loop")
    lines.append("the alexnet train loop beside it: " + (
        f"{num(loop['examples_per_sec'])} img/s (torch_model.train.fit, {loop['images']} images, set-up and "
        f"data loading included) against the bare step's {num(s['img_per_s'])}" if loop else "not run (--no-loop)"))
    return lines


def compare_tables(results: dict[str, dict]) -> str:
    g, k = (results[a] for a in ALLOCATORS)
    summary = []

    def pair(label, get, better=min):
        a, b = get(g), get(k)
        if a is None and b is None:
            return
        ratio = (a / b if better is min else b / a) if a and b else None
        summary.append([label, num(a), num(b), num(ratio)])

    pair("img/s (timed steps)", lambda r: r["step"]["img_per_s"], max)
    pair("step ms", lambda r: r["step"]["step_ms"])
    pair("% of the matmul", lambda r: 100 * r["step"]["peak_fraction"], max)
    pair("minor page faults per step", lambda r: r["step"]["minor_faults_per_step"])
    pair("profiled step ms", lambda r: r["profile"]["wall_ms"])
    pair("loop img/s (fit)", lambda r: r["loop"]["examples_per_sec"] if r["loop"] else None, max)
    pair("bf16 matmul TFLOP/s", lambda r: r["matmul"]["bf16"]["tflops"], max)
    first = format_table(["", "glibc", "kept", "kept better by x"], summary)
    rows = []
    for a, b in zip(g["profile"]["rows"], k["profile"]["rows"]):
        rows.append([a["row"], _work(a), num(a["ms"]), num(b["ms"]), _pct(a["share"]), _pct(b["share"]),
                     _rate(a), _rate(b), num(a["ms"] / b["ms"]) if b["ms"] > 0 else ""])
    rows.append(["total", "", num(g["profile"]["total_ms"]), num(k["profile"]["total_ms"]), "100%", "100%", "", "",
                 num(g["profile"]["total_ms"] / k["profile"]["total_ms"])])
    second = format_table(["row", "work", "ms glibc", "ms kept", "share glibc", "share kept", "rate glibc",
                             "rate kept", "glibc/kept"], rows)
    return first + "\n\n" + second


def say(line: str) -> None:
    print(line, flush=True)


# ----------------------------------------------------------------------------------------------- the files

def plot_profile(results: dict[str, dict], path: Path, title: str) -> Path:
    """Horizontal bars, ms per step per row, coloured by kind; one bar per run (a pair with --compare-malloc)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    labels = list(results)
    first = results[labels[0]]["profile"]["rows"]
    n, width = len(first), 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(9, 0.22 * n * max(1, len(labels) * 0.7) + 1.5), dpi=110)
    styles = [dict(hatch="//", alpha=0.55), dict(alpha=1.0)] if len(labels) == 2 else [dict(alpha=1.0)]
    for j, (label, style) in enumerate(zip(labels, styles)):
        rows = results[label]["profile"]["rows"]
        ys = [i + (j - (len(labels) - 1) / 2) * width for i in range(n)]
        bars = ax.barh(ys, [r["ms"] for r in rows], width, color=[COLOURS[r["kind"]] for r in rows],
                       edgecolor="black", linewidth=0.3, **style)
        ax.bar_label(bars, labels=[num(r["ms"]) for r in rows], fontsize=6, padding=2)
    ax.set_yticks(range(n), [r["row"] for r in first], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ms per training step (torch.profiler, self time)")
    handles = [Patch(color=COLOURS[k], label=k) for k in KINDS if any(r["kind"] == k for r in first)]
    if len(labels) == 2:
        handles += [Patch(facecolor="white", edgecolor="black", hatch="//", label=labels[0]),
                    Patch(facecolor="grey", edgecolor="black", label=labels[1])]
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
    return path


def _title(result: dict, img_per_s: dict[str, float]) -> str:
    rates = ", ".join(f"{num(v)} img/s" if len(img_per_s) == 1 else f"{k} {num(v)} img/s"
                      for k, v in img_per_s.items())
    return (f"{result['device_name']}, torch {result['torch']}, {result['threads']} threads, {result['date']}\n"
            f"training step, batch {result['batch']}, amp {result['amp']}, {result['layout']}: {rates}")


def save(out_dir: str, line: dict, results: dict[str, dict]) -> list[Path]:
    """Append the run's line to <out_dir>/<machine>.jsonl and draw <machine>-<amp>-step-profile.png beside it."""
    first = next(iter(results.values()))
    path = append_rows(Path(out_dir) / f"{first['machine']}.jsonl", [line])
    png = plot_profile(results, path.parent / f"{first['machine']}-{first['amp']}-step-profile.png",  # one per amp
                       _title(first, {k: r["step"]["img_per_s"] for k, r in results.items()}))
    return [path, png]


# ----------------------------------------------------------------------------------------------- --compare-malloc

def child_argv(args, amp: str, json_path: str) -> list[str]:
    argv = ["--amp", amp, "--batch", str(args.batch), "--steps", str(args.steps), "--warmup-steps",
            str(args.warmup_steps), "--profile-steps", str(args.profile_steps), "--matmul-size",
            str(args.matmul_size), "--lr", repr(args.lr), "--seed", str(args.seed), "--child-json", json_path]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if args.no_loop:
        argv.append("--no-loop")
    else:
        argv += ["--loop-train", str(args.loop_train), "--loop-test", str(args.loop_test)]
        if args.data_dir:
            argv += ["--data-dir", args.data_dir]
    return argv


def median_result(results: list[dict]) -> dict:
    """One allocator's rounds as one result: the median of every time and count, the rates recomputed."""
    out = json.loads(json.dumps(results[-1]))
    if len(results) == 1:
        return out
    med = lambda get: statistics.median(get(r) for r in results)  # noqa: E731
    for key in ("img_per_s", "step_ms", "minor_faults_per_step", "tflops", "peak_fraction", "bf16_fraction"):
        out["step"][key] = med(lambda r: r["step"][key])
    for key in ("wall_ms", "total_ms", "roots_ms"):
        out["profile"][key] = med(lambda r: r["profile"][key])
    for i, row in enumerate(out["profile"]["rows"]):
        row["ms"] = med(lambda r: r["profile"]["rows"][i]["ms"])
        row["share"] = row["ms"] / out["profile"]["total_ms"] if out["profile"]["total_ms"] else 0.0
        _rates(row, out["ref_tflops"], out["copy_gb_per_s"])
    if out.get("loop"):
        out["loop"]["examples_per_sec"] = med(lambda r: r["loop"]["examples_per_sec"])
    out["matmul"]["bf16"]["tflops"] = med(lambda r: r["matmul"]["bf16"]["tflops"])
    out["rounds"] = len(results)
    return out


def compare_malloc(args, amp: str) -> int:
    """Each round: a child with glibc's defaults, then one with keep_freed_memory; their results side by side."""
    runs: dict[str, list[dict]] = {a: [] for a in ALLOCATORS}
    started = now_iso()
    with tempfile.TemporaryDirectory(prefix="alexnet-bench-cpu-") as tmp:
        for rnd in range(args.rounds):
            for alloc in ALLOCATORS:
                env = dict(os.environ)
                if alloc == "glibc_defaults":
                    env[MALLOC_ENV] = "1"
                else:
                    env.pop(MALLOC_ENV, None)
                json_path = f"{tmp}/{alloc}-{rnd}.json"
                say(f"== round {rnd + 1}/{args.rounds}: {alloc.replace('_', ' ')} "
                    f"({MALLOC_ENV}={env.get(MALLOC_ENV, 'unset')}) ==")
                cmd = [sys.executable, "-m", "torch_model", "bench", "cpu", *child_argv(args, amp, json_path)]
                done = subprocess.run(cmd, env=env)
                if done.returncode != 0:
                    return report_failures([f"{alloc} round {rnd + 1}: the child exited {done.returncode} "
                                              f"(its output is above); nothing was written"])
                runs[alloc].append(json.loads(Path(json_path).read_text()))
    results = {a: median_result(rs) for a, rs in runs.items()}
    print()
    print(compare_tables(results))
    print(f"medians over {args.rounds} round(s), each a fresh process; glibc = glibc's malloc defaults "
          f"({MALLOC_ENV}=1), kept = keep_freed_memory; rows are torch.profiler self times per step")
    g = results["glibc_defaults"]
    line = {"mode": "compare-malloc", **{k: g[k] for k in SETTINGS if k in g}, "started": started,
            "argv": recorded_argv(), "rounds": args.rounds, "runs": runs}
    written = save(args.out_dir, line, {SHORT[a]: results[a] for a in ALLOCATORS})
    say("wrote " + ", ".join(map(str, written)))
    return 0


# ----------------------------------------------------------------------------------------------- the command

def run(args: argparse.Namespace) -> int:
    from torch_model.device import cpu_default_amp

    if args.rounds != 1 and not args.compare_malloc:
        raise ValueError("--rounds alternates the two allocators of --compare-malloc: add --compare-malloc")
    loop_flags = [f for f in ("loop_train", "loop_test", "data_dir") if getattr(args, f) is not None]
    if args.no_loop and loop_flags:
        raise ValueError(f"--{loop_flags[0].replace('_', '-')} sets the training loop's run: drop --no-loop")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise ValueError(f"--lr must be a positive number, got {args.lr}")
    if args.amp is None:
        amp, channels_last, why = cpu_default_amp(CPU, "torch")
        why = f"alexnet train's default here: {why}"
    else:
        amp, channels_last = args.amp, args.amp == "bf16"
        why = "--amp bf16 (with channels_last)" if amp == "bf16" else "--amp none: the seed's fp32 NCHW"
    if not args.no_loop:
        args.loop_train = args.loop_train or DEFAULTS["loop_train"]
        args.loop_test = args.loop_test or DEFAULTS["loop_test"]
        from torch_model.data import find_data_dir

        try:  # before minutes of measuring: the loop needs the data
            find_data_dir(args.data_dir)
        except ValueError as exc:
            raise ValueError(f"{exc} (or --no-loop: everything but the training loop)") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compare_malloc:
        return compare_malloc(args, amp)

    result = measure(args, amp, channels_last, why)
    if args.child_json:
        Path(args.child_json).write_text(json.dumps(result, allow_nan=False))
        say(f"done: {num(result['step']['img_per_s'])} img/s, "
            f"{num(result['step']['minor_faults_per_step'])} minor page faults per step")
        return 0
    print()
    for line in summary_lines(result):
        print(line)
    print()
    print(profile_table(result))
    print("work: GEMM rows in FLOPs, the others in bytes moved (napkin, from the shapes); % mm|copy: of the "
          f"{result['ref_dtype']} matmul rate (GEMM rows) or of the copy bandwidth (rows with bytes)")
    written = save(args.out_dir, {"mode": "single", **result}, {"this run": result})
    say("wrote " + ", ".join(map(str, written)))
    return 0
