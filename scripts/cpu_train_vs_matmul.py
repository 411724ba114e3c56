"""`alexnet train`'s own examples/sec against the CPU's bf16 matmul, measured in one run, glibc's malloc defaults
against keep_freed_memory.

    python scripts/cpu_train_vs_matmul.py [--rounds 2] [--limit-train 3840]

A bf16 4096^3 matmul (6 after 2 warm-ups, timed together), then `alexnet train --limit-train N --limit-test 128
--epochs 1 --no-checkpoint --no-pictures` with ALEXNET_GLIBC_MALLOC=1 (glibc's defaults) and without (what the
command sets: torch_model.device.keep_freed_memory), --rounds times interleaved, then the matmul again. Prints each
run's examples/sec and the best of each allocator as TFLOP/s (5.6 GFLOP per training image) and as a fraction of
the mean of the two matmul figures.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import torch

FLOP_PER_IMAGE = 5.6e9   # one training step: 3x the forward FLOPs of every conv and linear, 2x for conv1


def matmul_tflops(n: int = 4096, reps: int = 6) -> float:
    a, b = torch.randn(n, n).bfloat16(), torch.randn(n, n).bfloat16()
    for _ in range(2):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="runs per allocator, interleaved (default 2)")
    parser.add_argument("--limit-train", type=int, default=3840, help="training images per run (default 3840)")
    args = parser.parse_args()
    if args.rounds < 1 or args.limit_train < 1:
        parser.error("--rounds and --limit-train must be >= 1")
    before = matmul_tflops()
    print(f"bf16 matmul {before:.3f} TFLOP/s", flush=True)
    rates: dict[str, list[float]] = {"1": [], "0": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            for glibc in ("1", "0"):
                out = os.path.join(tmp, f"run-{rnd}-{glibc}")
                cmd = [sys.executable, "-m", "torch_model", "train", "--limit-train", str(args.limit_train),
                       "--limit-test", "128", "--epochs", "1", "--no-checkpoint", "--no-pictures", "--no-progress",
                       "--out", out]
                p = subprocess.run(cmd, env=dict(os.environ, ALEXNET_GLIBC_MALLOC=glibc), capture_output=True,
                                   text=True)
                found = re.search(r"([\d.]+) examples/sec", p.stdout)
                if p.returncode or not found:
                    print(f"alexnet train failed (exit {p.returncode}): {p.stderr.strip()[-500:]}", file=sys.stderr)
                    return 1
                rates[glibc].append(float(found.group(1)))
                print(f"round {rnd + 1} ALEXNET_GLIBC_MALLOC={glibc}: {found.group(1)} examples/sec", flush=True)
    after = matmul_tflops()
    print(f"bf16 matmul {after:.3f} TFLOP/s", flush=True)
    peak = (before + after) / 2
    for glibc, name in (("1", "glibc defaults"), ("0", "keep_freed_memory")):
        best = max(rates[glibc])
        print(f"{name}: best {best:.1f} examples/sec x 5.6 GFLOP = {best * FLOP_PER_IMAGE / 1e12:.3f} TFLOP/s = "
              f"{best * FLOP_PER_IMAGE / 1e12 / peak:.1%} of the bf16 matmul ({peak:.3f} TFLOP/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
