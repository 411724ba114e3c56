"""`alexnet bench`: `cpu` (the CPU training step layer by layer against the CPU's matmul), `numpy` (NumPy vs torch
CPU), `layers` (Triton vs cuDNN vs torch.compile per layer), `train` (training-step throughput: torch, compile,
triton, ddp), `lessons` (the steps of triton_kernels/lessons per layer), `loader` (the image-folder pipeline's
images/s per worker count). Each lives in its own module with configure/run; common.py holds the flags, the table
and the results file they share, timing.py the machine's facts and peaks, layer_specs.py the layers' napkin math."""
from __future__ import annotations

import argparse
import importlib

BENCHES: dict[str, tuple[str, str]] = {
    "numpy": ("torch_model.bench.numpy_bench", "fast NumPy path vs torch CPU, per layer and whole network"),
    "layers": ("torch_model.bench.layers", "each conv+ReLU and pool: Triton vs cuDNN vs torch.compile"),
    "train": ("torch_model.bench.train", "training-step images/s: torch, compile, triton, ddp; and the full seed run"),
    "lessons": ("torch_model.bench.lessons", "every step of triton_kernels/lessons per layer, from step 1 to cuDNN"),
    "loader": ("torch_model.bench.loader", "image-folder loader images/s per DataLoader worker count"),
    "cpu": ("torch_model.bench.cpu", "the CPU training step: img/s against the bf16 matmul, per-layer profile"),
}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = "benchmarks: " + ", ".join(f"`bench {name}`" for name in BENCHES)  # every one of them
    sub = parser.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for name, (module_name, help_) in BENCHES.items():
        p = sub.add_parser(name, help=help_, description=help_)
        module = importlib.import_module(module_name)
        module.configure(p)
        p.set_defaults(_bench_run=module.run)


def run(args: argparse.Namespace) -> int:
    return args._bench_run(args)
