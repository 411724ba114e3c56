"""`alexnet train`: d2l's `train_ch6` for the seed AlexNet, grown up.

Defaults are the seed's: batch 128, lr 0.01, 10 epochs, resize 224, plain SGD, cross-entropy, seed 0.
Each epoch: a tqdm bar with ETA, then loss, train acc (on the training batches, dropout on, as d2l counts it),
test acc and examples/sec (training examples per second of training time). At the end d2l's two lines:
    loss 0.328, train acc 0.880, test acc 0.883
    4123.6 examples/sec on cuda:0
A run directory holds config.json, metrics.csv (one row per epoch), curves.png, last.pt and best.pt.
Checkpoints are written atomically and carry the weights, the optimizer, the RNG states and the epoch, so
`--resume` ends with exactly the metrics of an uninterrupted run. A NaN/inf loss stops the run and keeps the last
good checkpoint; Ctrl-C stops it cleanly (completed epochs are already saved).

On a CPU the full seed run takes hours (about 30 img/s on 2 cores), so there `--preset auto` (the default)
picks the `quick` preset: the seed model and hyper-parameters on the first 12,800 training images for one epoch,
evaluated on the whole real test set. `--preset full` runs the seed configuration anywhere.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import signal
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterator

import torch
from tqdm import tqdm

from torch_model.backends import LEARNER_BACKENDS, Learner, make_learner
from torch_model.device import resolve_device
from torch_model.files import atomic_write
from torch_model.data import CLASS_NAMES, batches, load_fashion_mnist
from torch_model.model import check_resize

SEED_CPU_IMG_PER_S = 30.0   # measured: torch 2.13 CPU, 2 cores, batch 128 (for the printed time estimate only)
PRESETS = {
    # the seed (d2l): all 60,000 training images, 10 epochs
    "full": dict(epochs=10, limit_train=None, limit_test=None),
    # fits in ~10 minutes on 2 CPU cores: 100 SGD steps of the seed model, then the full test set
    "quick": dict(epochs=1, limit_train=12800, limit_test=None),
}
# what must agree between a run and its resumption (epochs may grow)
RESUME_KEYS = ("batch_size", "lr", "resize", "seed", "backend", "amp", "channels_last", "limit_train", "limit_test")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.01
    resize: int = 224
    device: str = "auto"
    seed: int = 0
    data_dir: str | None = None
    out: str | None = None
    resume: bool = False
    limit_train: int | None = None
    limit_test: int | None = None
    backend: str | None = None      # None: triton on CUDA, torch elsewhere
    amp: str = "none"
    channels_last: bool = False     # NHWC weights and batches (torch/triton backends)
    preset: str = "custom"
    progress: bool = True
    checkpoint: bool = True         # write last.pt / best.pt each epoch (the seed-run benchmark turns it off)
    pictures: bool = False          # confusion/mistakes/filters PNGs at the end (the CLI's default; --no-pictures)


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0            # wall time of the whole run, evaluation included
    out_dir: Path | None = None
    device: str = ""
    status: str = "completed"      # completed | interrupted | nan

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}

    @property
    def test_acc(self) -> float:
        return self.last.get("test_acc", float("nan"))

    @property
    def train_acc(self) -> float:
        return self.last.get("train_acc", float("nan"))

    @property
    def loss(self) -> float:
        return self.last.get("loss", float("nan"))

    @property
    def examples_per_sec(self) -> float:
        """d2l's figure: training examples per second of training time, over all epochs."""
        seen = sum(h["examples"] for h in self.history)
        spent = sum(h["train_seconds"] for h in self.history)
        return seen / spent if spent else float("nan")


class NonFiniteLoss(RuntimeError):
    pass


# ----------------------------------------------------------------------------------------------- helpers

@contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C that arrives inside the block until the block is done, then raise KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if pending:
        raise KeyboardInterrupt


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # a damaged file: name it, never a bare traceback
        raise ValueError(f"{path}: not a readable checkpoint ({exc.__class__.__name__}: {exc})") from exc


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


METRIC_FIELDS = ("epoch", "loss", "train_acc", "test_acc", "examples_per_sec", "examples", "train_seconds",
                 "eval_seconds")


def write_metrics(out: Path, history: list[dict]) -> None:
    def write(f):
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(history)
    atomic_write(out / "metrics.csv", write, mode="w")


def plot_curves(out: Path, history: list[dict], title: str) -> None:
    """d2l's animator as one PNG at the end: loss, train acc and test acc per epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    points = [p for h in history for p in h.get("curve") or [[h["epoch"], h["loss"], h["train_acc"]]]]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot([p[0] for p in points], [p[1] for p in points], "-", marker=".", label="train loss")
    ax.plot([p[0] for p in points], [p[2] for p in points], "--", marker=".", label="train acc")
    ax.plot(epochs, [h["test_acc"] for h in history], "-.^", label="test acc")
    ax.set_xlabel("epoch (train loss and acc: running means within each epoch, as d2l plots them)", fontsize=8)
    ax.set_xlim(0, max(epochs) + 0.05)
    ax.set_xticks(range(0, max(epochs) + 1))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic_write(out / "curves.png", lambda f: fig.savefig(f, format="png"))
    plt.close(fig)


def evaluate(learner: Learner, ds, batch_size: int, resize: int, progress: bool, desc: str) -> float:
    """Accuracy over the whole dataset, dropout off."""
    learner.eval()
    correct = 0
    bar = tqdm(batches(ds, batch_size, resize), total=math.ceil(len(ds) / batch_size), desc=desc,
               unit="batch", leave=False, disable=not progress, dynamic_ncols=True)
    for X, y in bar:
        correct += (learner.predict(X).argmax(dim=1) == y).sum().item()
    return correct / len(ds)


# ----------------------------------------------------------------------------------------------- the loop

def fit(cfg: TrainConfig, on_epoch_end: Callable[[int, dict, Learner], None] | None = None) -> TrainResult:
    """Train as the config says; returns the per-epoch history. Raises ValueError on bad settings.
    on_epoch_end(epoch, row, learner) runs after each epoch is saved (tests use it to interrupt or poison)."""
    t_start = time.perf_counter()
    _check_config(cfg)
    device = resolve_device(cfg.device)
    backend = cfg.backend or ("triton" if device.type == "cuda" else "torch")
    cfg.backend = backend
    out = Path(cfg.out) if cfg.out else Path("runs") / time.strftime(f"%Y%m%d-%H%M%S-{backend}")
    checkpoint = None
    if cfg.resume:
        if not (out / "last.pt").is_file():
            raise ValueError(f"--resume: {out / 'last.pt'} not found (pass the run's folder as --out)")
        checkpoint = load_checkpoint(out / "last.pt")
        saved = checkpoint["config"]
        changed = [f"{k}: {saved.get(k)!r} -> {getattr(cfg, k)!r}" for k in RESUME_KEYS if saved.get(k) != getattr(cfg, k)]
        if changed:
            raise ValueError(f"--resume: settings differ from the run in {out}: {'; '.join(changed)}")
    elif (out / "last.pt").exists():
        raise ValueError(f"--out {out} already holds a run (last.pt); pass --resume to continue it "
                         f"or choose another --out")
    out.mkdir(parents=True, exist_ok=True)

    train_ds, test_ds = load_fashion_mnist(cfg.data_dir)
    train_ds = train_ds.subset(cfg.limit_train).to(device)
    test_ds = test_ds.subset(cfg.limit_test).to(device)

    torch.manual_seed(cfg.seed)
    learner = make_learner(backend, cfg.lr, device, num_classes=len(CLASS_NAMES), amp=cfg.amp, seed=cfg.seed,
                           channels_last=cfg.channels_last)
    history: list[dict] = []
    best_acc, start_epoch = -1.0, 0
    if checkpoint is not None:
        learner.load_state_dict(checkpoint["learner"])
        _set_rng_state(checkpoint["rng"])
        history = list(checkpoint["history"])
        start_epoch = checkpoint["epoch"]
        best_acc = max(h["test_acc"] for h in history)
    atomic_write(out / "config.json", lambda f: f.write(json.dumps(asdict(cfg), indent=2) + "\n"), mode="w")

    result = TrainResult(history=history, out_dir=out, device=str(device))
    title = (f"AlexNet ({backend}, {device}), lr {cfg.lr}, batch {cfg.batch_size}, "
             f"{len(train_ds)} train / {len(test_ds)} test images")
    steps = math.ceil(len(train_ds) / cfg.batch_size)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            learner.train()
            loss_sum, correct, seen = 0.0, 0, 0
            curve: list[list[float]] = []   # [fractional epoch, running loss, running train acc]
            t0 = time.perf_counter()
            bar = tqdm(batches(train_ds, cfg.batch_size, cfg.resize, shuffle=True, seed=cfg.seed * 1000 + epoch),
                       total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                       disable=not cfg.progress, dynamic_ncols=True)
            for step, (X, y) in enumerate(bar):
                loss, logits = learner.step(X, y)
                if not math.isfinite(loss):
                    raise NonFiniteLoss(f"loss became {loss} at epoch {epoch + 1}, step {step + 1}")
                loss_sum += loss * len(y)
                correct += (logits.argmax(dim=1) == y).sum().item()
                seen += len(y)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
                if (step + 1) % max(1, steps // 5) == 0 or step + 1 == steps:  # d2l's animator: 5 points an epoch
                    curve.append([epoch + (step + 1) / steps, loss_sum / seen, correct / seen])
            if device.type == "cuda":
                torch.cuda.synchronize()
            train_seconds = time.perf_counter() - t0
            t1 = time.perf_counter()
            test_acc = evaluate(learner, test_ds, cfg.batch_size, cfg.resize, cfg.progress, "test")
            row = dict(epoch=epoch + 1, loss=loss_sum / seen, train_acc=correct / seen, test_acc=test_acc,
                       examples_per_sec=seen / train_seconds, examples=seen, train_seconds=train_seconds,
                       eval_seconds=time.perf_counter() - t1, curve=curve)
            with _sigint_deferred():  # the epoch's row, checkpoints and metrics.csv are saved together or not at all
                history.append(row)
                if cfg.checkpoint:
                    if test_acc > best_acc:
                        best_acc = test_acc
                        save_checkpoint(out / "best.pt", dict(epoch=epoch + 1, test_acc=test_acc,
                                                              model=learner.model_state_dict(), config=asdict(cfg)))
                    save_checkpoint(out / "last.pt", dict(epoch=epoch + 1, learner=learner.state_dict(),
                                                          rng=_rng_state(), config=asdict(cfg), history=history))
                write_metrics(out, history)
            print(f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.3f}, train acc {row['train_acc']:.3f}, "
                  f"test acc {test_acc:.3f}, {row['examples_per_sec']:.1f} examples/sec", flush=True)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, row, learner)
    except KeyboardInterrupt:
        result.status = "interrupted"
    except NonFiniteLoss as exc:
        result.status = "nan"
        print(f"stopped: {exc}; the last good checkpoint ({len(history)} epoch(s)) is kept in {out / 'last.pt'}")
    if history:
        write_metrics(out, history)
        plot_curves(out, history, title)
    if history and cfg.pictures and result.status == "completed":
        from torch_model.evaluate import write_run_pictures
        write_run_pictures(out, learner, test_ds, cfg.resize, cfg.batch_size, cfg.seed, cfg.progress)
    result.seconds = time.perf_counter() - t_start
    return result


def _check_config(cfg: TrainConfig) -> None:
    for name in ("epochs", "batch_size", "resize"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    for name in ("limit_train", "limit_test"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ValueError(f"--lr must be a positive number, got {cfg.lr}")
    check_resize(cfg.resize)
    if cfg.backend is not None and cfg.backend not in LEARNER_BACKENDS:
        raise ValueError(f"--backend must be one of {LEARNER_BACKENDS}, got {cfg.backend!r}")
    if cfg.amp not in ("none", "bf16"):
        raise ValueError(f"--amp must be none or bf16, got {cfg.amp!r}")


# ----------------------------------------------------------------------------------------------- the command

def configure(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    parser.add_argument("--preset", choices=("auto", "quick", "full"), default="auto",
                        help="auto: full on CUDA, quick on a CPU (%s)" % ", ".join(
                            f"{k}: {v}" for k, v in PRESETS.items()))
    parser.add_argument("--epochs", type=int, help=f"default: the preset's ({d.epochs} for full)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--resize", type=int, default=d.resize)
    parser.add_argument("--device", default=d.device, help="auto | cpu | cuda[:N]")
    parser.add_argument("--backend", choices=LEARNER_BACKENDS,
                        help="torch (cuDNN / CPU), triton (our kernels; default on CUDA), numpy (numpy_ref, slow)")
    parser.add_argument("--amp", choices=("none", "bf16"), default="none", help="bf16 autocast (CUDA)")
    parser.add_argument("--channels-last", action="store_true",
                        help="NHWC weights and batches (the Triton convs' fast layout on a GPU; same numbers)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--data-dir", help="folder with the four IDX files (.gz or raw); or FASHION_MNIST_DIR")
    parser.add_argument("--out", help="run folder (default runs/DATE-TIME-BACKEND)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    parser.add_argument("--limit-train", type=int, help="train on the first N training images")
    parser.add_argument("--limit-test", type=int, help="evaluate on the first N test images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--no-checkpoint", action="store_true",
                        help="write no last.pt/best.pt (timing runs; such a run cannot be resumed)")
    parser.add_argument("--no-pictures", action="store_true",
                        help="skip confusion.png, mistakes.png and filters.png at the end (one more test-set pass)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    device = resolve_device(args.device)
    preset = args.preset if args.preset != "auto" else ("full" if device.type == "cuda" else "quick")
    values = dict(PRESETS[preset])
    explicit = {k: getattr(args, k) for k in ("epochs", "limit_train", "limit_test") if getattr(args, k) is not None}
    values.update(explicit)
    names = {f.name for f in fields(TrainConfig)}
    for k, v in vars(args).items():
        if k in names and k not in values and v is not None:
            values[k] = v
    values["progress"] = not args.no_progress
    values["checkpoint"] = not args.no_checkpoint
    values["pictures"] = not args.no_pictures
    values["preset"] = preset if not explicit else f"{preset}+flags"
    return TrainConfig(**values)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    device = resolve_device(cfg.device)
    n_train = cfg.limit_train or 60000
    if cfg.preset.startswith("quick"):
        full_hours = 10 * 60000 / SEED_CPU_IMG_PER_S / 3600
        print(f"preset quick (a CPU, no CUDA): the seed model and hyper-parameters on the first {n_train} training "
              f"images for {cfg.epochs} epoch(s), tested on "
              f"{'all 10000' if cfg.limit_test is None else cfg.limit_test} real test images.\n"
              f"The full seed run is `alexnet train --preset full` (about {full_hours:.0f} h at "
              f"~{SEED_CPU_IMG_PER_S:.0f} img/s on 2 CPU cores; minutes on a GPU).", flush=True)
    print(f"training on {device} with the {cfg.backend or ('triton' if device.type == 'cuda' else 'torch')} "
          f"backend: {cfg.epochs} epoch(s), batch {cfg.batch_size}, lr {cfg.lr}, resize {cfg.resize}, "
          f"seed {cfg.seed}", flush=True)
    if cfg.backend == "triton" and device.type == "cpu":
        print("note: on a CPU the Triton kernels run in the Triton interpreter (one program instance at a time, in "
              "Python): minutes per batch at 224x224. Meant for stepping through a kernel, e.g. with a tiny "
              "--limit-train; train on a GPU for speed.", flush=True)
    result = fit(cfg)
    if result.history:
        print(f"loss {result.loss:.3f}, train acc {result.train_acc:.3f}, test acc {result.test_acc:.3f}")
        print(f"{result.examples_per_sec:.1f} examples/sec on {result.device}")
    print(f"run folder: {result.out_dir} (config.json, metrics.csv, curves.png"
          f"{', last.pt, best.pt' if cfg.checkpoint else ''}"
          f"{', confusion.png, mistakes.png, filters.png' if cfg.pictures and result.status == 'completed' else ''})")
    if result.status == "interrupted":
        print(f"interrupted: {len(result.history)} completed epoch(s) saved; continue with "
              f"`alexnet train --resume --out {result.out_dir}`")
        return 130
    return 3 if result.status == "nan" else 0
