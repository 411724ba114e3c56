"""`alexnet train`'s own examples/sec against the CPU's bf16 matmul, measured in one run: this checkout, the same
with glibc's malloc defaults, and optionally another checkout of the project (the code before a change).

    python scripts/cpu_train_vs_matmul.py [--rounds 2] [--limit-train 3840] [--baseline OTHER_CHECKOUT]

A bf16 4096^3 matmul (the median time of torch_model.bench.timing.matmul_rate, as `alexnet bench cpu` times it)
before every round and after the last; in each round
`alexnet train --limit-train N --limit-test 128 --epochs 1 --no-checkpoint --no-pictures` once per contestant:
this checkout as the command runs it (torch_model.device.keep_freed_memory), the same with ALEXNET_GLIBC_MALLOC=1
(glibc's defaults), and with --baseline the other checkout's code (`git worktree add ../before HEAD~1`). Prints
each run's examples/sec, and each contestant's best as TFLOP/s (5.6 GFLOP per training image) and as a fraction
of the mean of the matmul figures.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

import torch

from torch_model.bench.timing import matmul_rate

FLOP_PER_IMAGE = 5.6e9   # one training step: 3x the forward FLOPs of every conv and linear, 2x for conv1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="runs per contestant, interleaved (default 2)")
    parser.add_argument("--limit-train", type=int, default=3840, help="training images per run (default 3840)")
    parser.add_argument("--baseline", metavar="CHECKOUT", help="also run another checkout of the project")
    args = parser.parse_args()
    if args.rounds < 1 or args.limit_train < 1:
        parser.error("--rounds and --limit-train must be >= 1")
    if args.baseline and not os.path.isdir(os.path.join(args.baseline, "torch_model")):
        parser.error(f"--baseline {args.baseline}: no torch_model/ in it (expected a checkout of this project)")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    contestants = {"glibc defaults": (here, dict(ALEXNET_GLIBC_MALLOC="1")), "this checkout": (here, {})}
    if args.baseline:   # run from there: `python -m torch_model` imports the package of the working folder first
        other = os.path.abspath(args.baseline)
        contestants[f"baseline {args.baseline}"] = (other, dict(PYTHONPATH=other))
    matmuls: list[float] = []

    def matmul() -> None:
        matmuls.append(matmul_rate(4096, torch.bfloat16, torch.device("cpu"))["tflops"])
        print(f"bf16 matmul {matmuls[-1]:.3f} TFLOP/s", flush=True)

    rates: dict[str, list[float]] = {name: [] for name in contestants}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            matmul()
            for i, (name, (cwd, env)) in enumerate(contestants.items()):
                cmd = [sys.executable, "-m", "torch_model", "train", "--limit-train", str(args.limit_train),
                       "--limit-test", "128", "--epochs", "1", "--no-checkpoint", "--no-pictures", "--no-progress",
                       "--out", os.path.join(tmp, f"run-{rnd}-{i}")]
                p = subprocess.run(cmd, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True)
                found = re.search(r"([\d.]+) examples/sec", p.stdout)
                if p.returncode or not found:
                    print(f"{name}: alexnet train failed (exit {p.returncode}): {p.stderr.strip()[-500:]}",
                          file=sys.stderr)
                    return 1
                rates[name].append(float(found.group(1)))
                print(f"round {rnd + 1} {name}: {found.group(1)} examples/sec", flush=True)
    matmul()
    peak = sum(matmuls) / len(matmuls)
    for name in contestants:
        best = max(rates[name])
        print(f"{name}: best {best:.1f} examples/sec x 5.6 GFLOP = {best * FLOP_PER_IMAGE / 1e12:.3f} TFLOP/s = "
              f"{best * FLOP_PER_IMAGE / 1e12 / peak:.1%} of the bf16 matmul ({peak:.3f} TFLOP/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
