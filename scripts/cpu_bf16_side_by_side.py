"""fp32 NCHW vs bf16 autocast + channels_last training steps of the seed AlexNet on a CPU, side by side.

    python scripts/cpu_bf16_side_by_side.py [STEPS]

Both learners (torch_model.learners.make_learner, the training loop's step: forward, cross-entropy, backward, SGD)
start from the same weights and step on the same 4 real Fashion-MNIST batches of 128 at 224x224; their steps are
interleaved (ABBA order), so a machine whose load changes during the run slows both alike. One warm-up step each
(oneDNN builds its kernels there), then STEPS timed steps each (default 6); prints the median s/step, img/s and the
ratio. torch_model/device.py's CPU default (bf16 + channels_last where the CPU computes bf16 natively) rests on this
ratio; `alexnet bench cpu` profiles either configuration layer by layer.
"""
import argparse
import statistics
import time

import torch

from torch_model.learners import make_learner
from torch_model.device import keep_freed_memory
from torch_model.data import batches, find_data_dir, load_split

CONFIGS = {"fp32 nchw": ("none", False), "bf16 channels_last": ("bf16", True)}


def main(steps: int) -> None:
    ds = load_split(find_data_dir(), "train").subset(128 * 4)
    data = list(batches(ds, 128, 224, shuffle=True, seed=0))           # 4 x ((128, 1, 224, 224), (128,))
    learners = {}
    for name, (amp, channels_last) in CONFIGS.items():
        torch.manual_seed(0)
        learners[name] = make_learner("torch", 0.01, torch.device("cpu"), amp=amp, channels_last=channels_last)
        learners[name].train()
        learners[name].step(*data[0])                                   # warm-up
    times = {name: [] for name in CONFIGS}
    for i in range(steps):
        X, y = data[(i + 1) % 4]
        order = list(learners.items()) if i % 2 == 0 else list(reversed(learners.items()))
        for name, learner in order:
            t0 = time.perf_counter()
            loss, _ = learner.step(X, y)
            times[name].append(time.perf_counter() - t0)
            print(f"step {i + 1}/{steps} {name}: {times[name][-1]:.2f} s, loss {loss:.4f}", flush=True)
    for name, t in times.items():
        print(f"{name}: median {statistics.median(t):.2f} s/step, {128 / statistics.median(t):.1f} img/s")
    fp32, bf16 = (statistics.median(times[name]) for name in CONFIGS)
    print(f"bf16 + channels_last / fp32 NCHW: {fp32 / bf16:.2f}x the images/s (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("steps", nargs="?", type=int, default=6, help="timed steps per configuration (default 6)")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"steps must be >= 1, got {args.steps}")
    keep_freed_memory()                   # as `alexnet train` runs
    main(args.steps)
