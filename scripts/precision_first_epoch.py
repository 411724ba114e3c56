"""bf16 autocast against fp32 on the seed run's first epoch: the same weights, images, order and dropout, step by step.

    python scripts/precision_first_epoch.py --out docs/results/seed      # ~40 min on 2 CPU cores (fp32 is ~5x slower)
    python scripts/precision_first_epoch.py --steps 20 --out quick-look/  # a quick look

Each precision is run as `alexnet train --preset full --amp A` would start it (train.prepare: seed 0, xavier init,
epoch 1's shuffle), and every training step's loss is recorded; after the epoch each learner's test accuracy is
measured on the 10,000 test images. Writes (atomically) precision_first_epoch.csv (step, loss_bf16, loss_fp32) and
precision_first_epoch.png (both curves, and their difference), and prints the summary. bf16 rounds every conv and
linear input to 8 significant bits, so the two runs part ways from the first step; the question is whether the
curves stay together within the step-to-step noise of the loss.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from pathlib import Path

import numpy as np

PRECISIONS = ("bf16", "none")   # autocast bf16 (the CPU default, with channels_last) and the fp32 reference


def run_precision(amp: str, steps: int | None, data_dir: str | None) -> tuple[list[float], float, float]:
    """The first epoch under `amp` (or its first `steps` steps): per-step losses, test accuracy, images/s."""
    import time

    from tqdm import tqdm

    from torch_model.config import TrainConfig, resolve_config
    from torch_model.cpu_layers import use_cpu_layers
    from torch_model.learners import accuracy
    from torch_model.train import prepare

    cfg = resolve_config(TrainConfig(epochs=1, amp=amp, device="cpu", data_dir=data_dir))
    run = prepare(cfg, None)
    use_cpu_layers(run.learner.net)   # the fp32 learner too: the same dropout masks as the bf16 one draws
    n_steps = math.ceil(len(run.train_ds) / cfg.batch_size)
    n_steps = n_steps if steps is None else min(steps, n_steps)
    losses: list[float] = []
    run.learner.train()
    label = "bf16 autocast" if amp == "bf16" else "fp32"
    bar = tqdm(run.source.train_batches(cfg.seed * 1000 + 0), total=n_steps, desc=label, unit="batch")
    t0 = time.perf_counter()
    for X, y in bar:
        loss, _ = run.learner.step(X, y)
        losses.append(loss)
        bar.set_postfix(loss=f"{np.mean(losses):.3f}")
        if len(losses) == n_steps:
            break
    rate = len(losses) * cfg.batch_size / (time.perf_counter() - t0)
    bar.close()
    test_acc = accuracy(run.learner, run.source, run.ctx, True, "test")
    return losses, test_acc, rate


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def plot(path: Path, bf16: np.ndarray, fp32: np.ndarray, window: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(bf16) + 1)
    kernel = np.ones(window) / window
    smooth = lambda a: np.convolve(a, kernel, mode="valid")   # noqa: E731 (moving mean over `window` steps)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=(2, 1))
    for losses, name, colour in ((bf16, "bf16 autocast + channels_last", "C0"), (fp32, "fp32", "C3")):
        top.plot(steps, losses, color=colour, alpha=0.2, lw=0.8)
        top.plot(steps[window - 1:], smooth(losses), color=colour, lw=1.8, label=f"{name} ({window}-step mean)")
    top.set_ylabel("training loss (batch of 128)")
    top.legend()
    top.set_title("The seed run's first epoch in two precisions: same init, images, order and dropout")
    bottom.axhline(0, color="black", lw=0.6)
    bottom.plot(steps, bf16 - fp32, color="grey", alpha=0.3, lw=0.8, label="per step")
    bottom.plot(steps[window - 1:], smooth(bf16 - fp32), color="black", lw=1.5, label=f"{window}-step mean")
    bottom.set_ylabel("loss bf16 - fp32")
    bottom.set_xlabel("step")
    bottom.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for precision_first_epoch.csv and .png")
    parser.add_argument("--steps", type=int, help="only the first N steps of the epoch (default: all 469)")
    parser.add_argument("--window", type=int, default=20, help="steps in the plotted moving mean (default 20)")
    parser.add_argument("--data-dir", help="folder with the four IDX files (default: the usual places)")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.window < 1:
        parser.error("--window must be >= 1")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out}: is a file, not a folder")

    from torch_model.device import cpu_default_amp, keep_freed_memory

    import torch

    keep_freed_memory()
    if cpu_default_amp(torch.device("cpu"), "torch")[0] != "bf16":
        print("precision_first_epoch: error: this CPU has no native bf16 (AMX or avx512_bf16): nothing to compare",
              file=sys.stderr)
        return 2
    results = {}
    try:
        for amp in PRECISIONS:
            results[amp] = run_precision(amp, args.steps, args.data_dir)
    except (ValueError, OSError) as exc:
        print(f"precision_first_epoch: error: {exc}", file=sys.stderr)
        return 2
    bf16, fp32 = (np.array(results[a][0]) for a in PRECISIONS)
    out.mkdir(parents=True, exist_ok=True)
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["step", "loss_bf16", "loss_fp32"])
    writer.writerows([i + 1, f"{a:.6f}", f"{b:.6f}"] for i, (a, b) in enumerate(zip(bf16, fp32)))
    write_atomic(out / "precision_first_epoch.csv", rows.getvalue().encode())
    plot(out / "precision_first_epoch.png", bf16, fp32, min(args.window, len(bf16)))
    diff = bf16 - fp32
    noise = np.std(np.diff(fp32)) / math.sqrt(2)   # the loss's own step-to-step spread (one batch to the next)
    print(f"{len(bf16)} steps of 128 images")
    for amp, name in zip(PRECISIONS, ("bf16 autocast", "fp32")):
        losses, acc, rate = results[amp]
        print(f"  {name:14s} mean loss {np.mean(losses):.4f}  last 50 steps {np.mean(losses[-50:]):.4f}  "
              f"test acc {acc:.4f}  {rate:.1f} images/s")
    print(f"  bf16 - fp32 per step: mean {diff.mean():+.4f}, mean |d| {np.abs(diff).mean():.4f}, "
          f"largest |d| {np.abs(diff).max():.4f}; the loss's step-to-step spread {noise:.4f}")
    print(f"wrote {out / 'precision_first_epoch.csv'} and {out / 'precision_first_epoch.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
