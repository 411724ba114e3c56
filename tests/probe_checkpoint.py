"""A small stand-in for a trained run, for the evaluate / visualize / export / walkthrough tests.

Training AlexNet far enough to predict many classes takes minutes, so instead: d2l's init from a seed, then the
last Linear set by ridge regression of one-hot labels on the penultimate features of a few real training images
(a linear probe, solved in the dual: N x N). It predicts most classes, makes real confusions and is written
in the format `alexnet train` writes (best.pt: epoch, test_acc, model, config; config.json beside it).
"""
from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import torch

from torch_model.data import batches, load_split
from torch_model.model import alexnet

PROBE_IMAGES = 96


def make_probe_checkpoint(run_dir: Path, data_dir: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    net = alexnet().eval()
    train = load_split(data_dir, "train").subset(PROBE_IMAGES)
    X, y = next(batches(train, PROBE_IMAGES))                       # (N, 1, 224, 224), (N,)
    with torch.no_grad():
        feats = net[:20](X).double()                                # (N, 4096): the last Linear's input
        feats = torch.cat([feats, torch.ones(len(y), 1, dtype=torch.float64)], dim=1)  # (N, 4097), bias column
        Y = torch.nn.functional.one_hot(y, 10).double() * 10 - 5     # (N, 10), confident targets
        gram = feats @ feats.T                                      # (N, N)
        alpha = torch.linalg.solve(gram + 1e-3 * gram.trace() / len(y) * torch.eye(len(y), dtype=gram.dtype), Y)
        W = (feats.T @ alpha).T                                     # (10, 4097) = Y^T (F F^T + l I)^-1 F
        net[20].weight.copy_(W[:, :-1].float())
        net[20].bias.copy_(W[:, -1].float())
    run_dir.mkdir(parents=True, exist_ok=True)
    config = dict(epochs=1, batch_size=128, lr=0.01, resize=224, seed=seed, backend="torch")
    path = run_dir / "best.pt"
    torch.save(dict(epoch=1, test_acc=0.0, model=net.state_dict(), config=config), path)
    (run_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return path


@functools.cache
def shared_probe_checkpoint(data_dir: Path) -> Path:
    """One probe checkpoint per test process, shared by every test module that reads it (never written to)."""
    directory = Path(tempfile.mkdtemp(prefix="alexnet-probe-"))
    atexit.register(shutil.rmtree, directory, True)
    return make_probe_checkpoint(directory / "run", data_dir)
