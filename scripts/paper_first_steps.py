"""Loss per step of `alexnet train --variant paper` on real Fashion-MNIST: the run `alexnet train` makes (same data
order, init, learner), with every step's loss printed, then the test accuracy. For docs/paper_variant.md.

    python scripts/paper_first_steps.py --limit-train 3840 --limit-test 1000 [any `alexnet train` flag]
"""
from __future__ import annotations

import argparse
import math
import os
import time

import torch

from torch_model.config import config_from_args, configure
from torch_model.distributed import DistContext
from torch_model.learners import accuracy
from torch_model.train import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    configure(parser)
    args = parser.parse_args()
    args.no_progress = True
    cfg = config_from_args(args)
    run = prepare(cfg, None)
    cfg = run.cfg
    print(f"variant {cfg.variant}, pixels {cfg.pixels}, amp {cfg.amp}, channels_last {cfg.channels_last}, "
          f"batch {cfg.batch_size}, lr {cfg.lr}, "
          f"momentum {cfg.momentum}, weight decay {cfg.weight_decay}, {len(run.train_ds)} train / {len(run.test_ds)} "
          f"test, threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}", flush=True)
    net = getattr(run.learner, "net", None)
    fc7 = {}
    if isinstance(net, torch.nn.Sequential):
        relus = [m for m in net if isinstance(m, torch.nn.ReLU)]
        relus[-1].register_forward_hook(lambda m, i, o: fc7.__setitem__("h", o.detach().float()))
    for epoch in range(cfg.epochs):
        run.learner.train()
        t0 = time.perf_counter()
        for step, (X, y) in enumerate(run.source.train_batches(cfg.seed * 1000 + epoch)):   # as train_epoch draws them
            loss, logits = run.learner.step(X, y)
            acc = (logits.argmax(dim=1) == y).float().mean().item()
            h = fc7.get("h")
            extra = "" if h is None else (f"|fc7|^2 {h.pow(2).sum(1).mean().item():.0f} fc7 dead "
                                          f"{(h.amax(0) == 0).float().mean().item():.3f} ")
            print(f"epoch {epoch + 1} step {step + 1}: loss {loss:.4f} acc {acc:.3f} {extra}"
                  f"logit spread {(logits.amax(1) - logits.amin(1)).mean().item():.1f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
            if not math.isfinite(loss):
                return
        acc = accuracy(run.learner, run.source, DistContext())
        print(f"epoch {epoch + 1}: test acc {acc:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
