"""`alexnet bench numpy`: numpy_ref's fast path against torch on the CPU, same weights, same thread count.

Per layer (each Conv2d, MaxPool2d and Linear of the seed's AlexNet, forward + backward on that layer's real
input) and for the whole network (forward, cross-entropy, backward), at batch 8 by default. The napkin math:

    conv    FLOPs = 2 * N * F * OH * OW * (C/G) * KH * KW forward, twice that backward (dx and dweight)
    linear  FLOPs = 2 * N * in * out forward, twice that backward
    pool    no multiply-adds: a copy-bound op, its FLOP column is empty

GFLOP/s = FLOPs / time. The goal is the whole network within 1.5x of torch's time. NumPy's BLAS and
torch's intra-op pool are both set to --threads (threadpoolctl sets the BLAS one; without it NumPy keeps its
default and the report says so). Times are medians of --repeat rounds after one warm-up, numpy and torch
alternating so both meet the same load; the CPU-time ratio (process_time, all threads) is the steadier figure
on a machine shared with other jobs.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

GOAL_RATIO = 1.5


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=8, help="images per batch (default 8)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for NumPy's BLAS and for torch (default: torch's default, the core count)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement; the median is shown")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--whole-only", action="store_true", help="skip the per-layer rows")
    parser.add_argument("--json", metavar="PATH", help="also write the results (with machine and versions) here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _layer_flops(layer, x_shape: tuple, out_shape: tuple) -> int | None:
    """Forward FLOPs of one layer (multiply + add = 2), None for the copy-bound pool."""
    import numpy_ref

    if isinstance(layer, numpy_ref.Conv2d):
        F, Cg, KH, KW = layer.weight.shape
        N, _, OH, OW = out_shape
        return 2 * N * F * OH * OW * Cg * KH * KW
    if isinstance(layer, numpy_ref.Linear):
        return 2 * x_shape[0] * layer.in_features * layer.out_features
    return None


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    import numpy_ref
    from numpy_ref.functional import cross_entropy_backward, cross_entropy_forward
    from torch_model.bench.common import clean_json, format_table
    from torch_model.bench.timing import machine_info, now_iso
    from torch_model.files import atomic_write
    from torch_model.model import alexnet

    for name in ("batch", "repeat"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    threads = torch.get_num_threads() if args.threads is None else args.threads
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=threads, user_api="blas")
        blas_note = f"NumPy BLAS threads set to {threads} (threadpoolctl)"
    except ImportError:
        limiter = None
        blas_note = "threadpoolctl not installed: NumPy's BLAS keeps its default thread count"

    dtype = np.dtype(args.dtype)
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    torch.manual_seed(args.seed)
    tnet = alexnet().to(tdtype).eval()          # eval: dropout off on both sides, the same function
    net = numpy_ref.alexnet(dtype=dtype, init=False).eval()
    net.load_state_dict({k: v.numpy() for k, v in tnet.state_dict().items()})
    rng = np.random.default_rng(args.seed)
    x = rng.uniform(0, 1, (args.batch, 1, 224, 224)).astype(dtype)              # (N, 1, 224, 224)
    y = rng.integers(0, 10, args.batch)                                        # (N,)

    # every compute layer's own input, from one forward pass
    inputs, h = [], x
    for layer in net:
        inputs.append(h)
        h = layer.forward(h)
    net.clear_cache()
    outputs = inputs[1:] + [h]
    total_flops = sum(_layer_flops(layer, inputs[i].shape, outputs[i].shape) or 0 for i, layer in enumerate(net))
    compute = (numpy_ref.Conv2d, numpy_ref.MaxPool2d, numpy_ref.Linear)
    picked = [] if args.whole_only else [i for i, layer in enumerate(net) if isinstance(layer, compute)]
    rows, records = [], []
    bar = tqdm(total=len(picked) + 1, desc="bench numpy", unit="row", disable=args.no_progress, leave=False)
    try:
        for i in picked:
            layer, tlayer, xi = net[i], tnet[i], inputs[i]
            out = layer.forward(xi)
            dout = rng.standard_normal(out.shape).astype(dtype)                # like out, never zeros
            xt, doutt = torch.from_numpy(xi).requires_grad_(True), torch.from_numpy(dout)

            def numpy_fn(layer=layer, xi=xi, dout=dout):
                layer.forward(xi)
                layer.backward(dout)
                layer.zero_grad()

            def torch_fn(tlayer=tlayer, xt=xt, doutt=doutt):
                tlayer(xt).backward(doutt)
                tlayer.zero_grad(set_to_none=True)
                xt.grad = None

            records.append(_measure(f"{i} {type(layer).__name__}", tuple(out.shape),
                                    _layer_flops(layer, xi.shape, out.shape), numpy_fn, torch_fn, args.repeat))
            bar.update()

        xt, yt = torch.from_numpy(x), torch.from_numpy(y)

        def numpy_whole():
            loss, cache = cross_entropy_forward(net.forward(x), y)
            net.backward(cross_entropy_backward(1.0, cache))
            net.zero_grad()

        def torch_whole():
            F.cross_entropy(tnet(xt), yt).backward()
            tnet.zero_grad(set_to_none=True)

        whole = _measure("whole AlexNet", (args.batch, 10), total_flops, numpy_whole, torch_whole, args.repeat)
        records.append(whole)
        bar.update()
    finally:
        bar.close()
        if limiter is not None:
            limiter.restore_original_limits()

    headers = ["layer", "output", "GFLOP fwd+bwd", "numpy ms", "torch ms", "numpy/torch", "numpy GFLOP/s",
               "torch GFLOP/s", "CPU-time ratio"]
    for r in records:
        gf = r["flops_fwd_bwd"] / 1e9 if r["flops_fwd_bwd"] else None
        rows.append([r["name"], "x".join(map(str, r["shape"])), f"{gf:.2f}" if gf else "",
                     f"{r['numpy_ms']:.1f}", f"{r['torch_ms']:.1f}", f"{r['ratio']:.2f}",
                     f"{gf / r['numpy_ms'] * 1e3:.1f}" if gf else "", f"{gf / r['torch_ms'] * 1e3:.1f}" if gf else "",
                     f"{r['cpu_ratio']:.2f}" if r["cpu_ratio"] else ""])
    print(f"numpy_ref vs torch {torch.__version__} on the CPU: forward + backward, batch {args.batch}, {args.dtype}, "
          f"NCHW, {threads} thread(s); {blas_note}")
    print(format_table(headers, rows))
    verdict = "within" if whole["ratio"] <= GOAL_RATIO else "NOT within"
    print(f"\nwhole network: numpy {whole['numpy_ms']:.0f} ms vs torch {whole['torch_ms']:.0f} ms = "
          f"{whole['ratio']:.2f}x, {verdict} the {GOAL_RATIO}x goal "
          f"({whole['flops_fwd_bwd'] / 1e9:.1f} GFLOP of multiply-adds per step); in CPU time "
          f"{whole['numpy_cpu_ms']:.0f} ms vs {whole['torch_cpu_ms']:.0f} ms = {whole['cpu_ratio']:.2f}x")
    if args.json:
        info = machine_info(torch.device("cpu"))
        data = {"bench": "numpy", "date": now_iso(), **info, "dtype": args.dtype, "layout": "NCHW", "batch": args.batch,
                "threads": threads, "blas_threads": blas_note, "repeat": args.repeat, "rows": records,
                "goal_ratio": GOAL_RATIO}
        text = json.dumps(clean_json(data), indent=1, allow_nan=False) + "\n"
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(Path(args.json), lambda f: f.write(text), mode="w")
        print(f"wrote {args.json}")
    return 0


def _measure(name, shape, flops_fwd, numpy_fn, torch_fn, repeat) -> dict:
    """One warm-up each, then `repeat` rounds alternating numpy and torch, so both meet the same machine load.
    Wall time (perf_counter) and process CPU time (process_time: all threads' CPU seconds, blind to time spent
    waiting for a core, so steadier on a shared machine); medians of each."""
    import statistics
    import time

    numpy_fn()
    torch_fn()
    wall: dict[str, list[float]] = {"numpy": [], "torch": []}
    cpu: dict[str, list[float]] = {"numpy": [], "torch": []}
    for _ in range(repeat):
        for key, fn in (("numpy", numpy_fn), ("torch", torch_fn)):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[key].append((time.perf_counter() - w0) * 1e3)
            cpu[key].append((time.process_time() - c0) * 1e3)
    n, t = statistics.median(wall["numpy"]), statistics.median(wall["torch"])
    nc, tc = statistics.median(cpu["numpy"]), statistics.median(cpu["torch"])
    return {"name": name, "shape": list(shape), "flops_fwd_bwd": 3 * flops_fwd if flops_fwd else None,
            "numpy_ms": n, "torch_ms": t, "ratio": n / t, "numpy_cpu_ms": nc, "torch_cpu_ms": tc,
            "cpu_ratio": nc / tc if tc > 0 else None}
