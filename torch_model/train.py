"""`alexnet train`: d2l's `train_ch6` for the seed AlexNet, grown up.

Defaults are the seed's: batch 128, lr 0.01, 10 epochs, resize 224, plain SGD, cross-entropy, seed 0.
Each epoch: a tqdm bar with ETA, then loss, train acc (on the training batches, dropout on, as d2l counts it),
test acc and examples/sec (training examples per second of training time). At the end d2l's two lines:
    loss 0.328, train acc 0.880, test acc 0.883
    4123.6 examples/sec on cuda:0
A run folder holds config.json (every setting), metrics.csv (one row per epoch), curves.png, last.pt and best.pt,
and while a run is in it a `.lock` file with the run's pid (a second run on the folder is refused; the lock of a run
that died is taken over with a note). Checkpoints are written atomically and carry the weights, the optimizer, the
RNG states and the epoch, so `alexnet train --resume --out R` continues the run recorded in R/config.json and ends
with exactly the metrics of an uninterrupted run (`--epochs N` may extend it). A NaN/inf loss stops the run and
keeps the last good checkpoint; Ctrl-C stops it cleanly (completed epochs are already saved); a full disk names the
file it could not write and keeps the earlier checkpoint and the epoch's metrics.

On a CPU the full seed run takes hours, so there `--preset auto` (the default) picks the `quick` preset: the seed
model and hyper-parameters on the first training images for one epoch (as many as ~10 minutes allow on 2 cores),
evaluated on the whole real test set. Where the CPU computes bf16 natively the torch backend runs bf16 autocast with
channels_last there (fp32 master weights and loss; torch_model/device.py decides, `--amp none` is the fp32 run).
`--preset full` runs the seed configuration anywhere. `--variant paper` trains the 2012 paper's network (grey
images repeated to 3 channels, resized to 227) with the paper's SGD (momentum 0.9, weight decay 5e-4) at lr 0.001 (the
paper's 0.01 collapses on 10 classes) on the paper's pixels: raw 0..255 values minus the mean training image, which
the checkpoints record (docs/paper_variant.md).

`--dataset imagefolder --data-dir PATH` trains on photos sorted into class folders (torch_model/imagefolder.py), and
`torchrun --nproc-per-node N -m torch_model train ...` on N processes through DistributedDataParallel
(torch_model/distributed.py): --batch-size stays the global batch, rank 0 alone writes and logs. docs/distributed.md.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Iterator

import torch
from tqdm import tqdm

from torch_model import distributed as D
from torch_model.backends import LEARNER_BACKENDS, Learner, check_backend, make_learner
from torch_model.data import PIXELS, load_fashion_mnist, pixel_mean
from torch_model.device import AMP_CHOICES, check_amp, cpu_default_amp, default_backend, resolve_device
from torch_model.files import WriteError, atomic_write, current_umask
from torch_model.model import INPUT_SHAPES, VARIANTS, check_resize

ESTIMATE_AFTER_STEPS = 20      # the run's duration is estimated from its own rate once this many steps are timed
PRESETS = {
    # the seed (d2l): all 60,000 training images, 10 epochs
    "full": dict(epochs=10, limit_train=None, limit_test=None),
    # fits in ~10 minutes on 2 CPU cores: one epoch on the first QUICK_LIMIT_TRAIN images, then the full test set
    "quick": dict(epochs=1, limit_train=None, limit_test=None),
}
# the quick preset's training images per (amp, channels_last), ~10 minutes on 2 idle cores: fp32 NCHW 100 steps of
# 128; bf16 + channels_last steps 2.28-2.37x as fast (measured side by side, README) and evaluates faster: 240 steps
# (9 min 0 s in all, measured)
QUICK_LIMIT_TRAIN = {("none", False): 12800, ("bf16", True): 30720}
# the optimizer each variant trains with when --lr / --momentum / --weight-decay are not given. d2l: the seed's plain
# SGD. paper: Krizhevsky et al.'s momentum and weight decay (section 5), but a tenth of their starting lr of 0.01:
# with 10 classes instead of 1000, lr 0.01 throws fc8 far past the class frequencies in the first steps and kills
# most of fc7's ReLUs, leaving a constant prediction (measured: docs/paper_variant.md)
OPTIMIZER_DEFAULTS = {"d2l": dict(lr=0.01, momentum=0.0, weight_decay=0.0),
                      "paper": dict(lr=0.001, momentum=0.9, weight_decay=5e-4)}
# how each variant's pixels reach it when --pixels is not given (torch_model.data.PIXELS): d2l the seed's [0, 1];
# paper its section 2, raw 0..255 values minus the mean training image (for its N(0, 0.01) init at 227x227x3 the
# [0, 1] values are 255 times too faint to tell one image from another in fc7)
PIXELS_DEFAULTS = {"d2l": "unit", "paper": "mean-subtracted"}
# what a run is: recorded in config.json; on resume every one comes from there (epochs may grow)
RESUME_KEYS = ("batch_size", "lr", "resize", "seed", "backend", "amp", "channels_last", "limit_train", "limit_test",
               "variant", "momentum", "weight_decay", "dataset", "mean", "std", "pixels")
# settings that predate a key: what a run recorded without it ran with
LEGACY_SETTINGS = dict(variant="d2l", momentum=0.0, weight_decay=0.0, dataset="fashion-mnist", mean=None, std=None,
                       pixels="unit")
# where a resumed run may differ from the recorded one: where it runs and how it reports
RUNTIME_KEYS = ("device", "data_dir", "progress", "workers", "dist_timeout")
DATASETS = ("fashion-mnist", "imagefolder")
LOCK_NAME = ".lock"
MAX_SEED = (2**63 - 1) // 1000 - 1000   # seed * 1000 + epoch stays a valid torch seed
# every file a run writes into its folder: a new run refuses a folder that holds any of them (a resume continues them)
RUN_FILES = ("config.json", "metrics.csv", "curves.png", "last.pt", "best.pt", "confusion.png", "mistakes.png",
             "evaluation.json", "filters.png")
PICTURES = ("confusion.png", "mistakes.png", "evaluation.json", "filters.png")   # drawn once the last epoch is saved


@dataclass
class TrainConfig:
    """One run. None means "decided for the device and variant" (resolve_config fills it in)."""
    epochs: int = 10
    batch_size: int = 128
    lr: float | None = None          # None: the variant's (OPTIMIZER_DEFAULTS: 0.01 d2l, 0.001 paper)
    resize: int | None = None        # None: the variant's input size (224 d2l, 227 paper)
    device: str = "auto"
    seed: int = 0
    data_dir: str | None = None
    out: str | None = None
    resume: bool = False
    limit_train: int | None = None
    limit_test: int | None = None
    backend: str | None = None       # None: triton on CUDA, torch elsewhere (device.default_backend)
    amp: str | None = None           # None: bf16 on a CPU with native bf16 (torch backend), else none
    channels_last: bool | None = None  # NHWC weights and batches; None: with the CPU's bf16 default
    variant: str = "d2l"             # d2l | paper (torch_model.model.alexnet)
    momentum: float | None = None    # None: the variant's (OPTIMIZER_DEFAULTS)
    weight_decay: float | None = None
    pixels: str | None = None        # None: the variant's (PIXELS_DEFAULTS: unit d2l, mean-subtracted paper)
    preset: str = "custom"
    progress: bool = True
    checkpoint: bool = True          # write last.pt / best.pt each epoch (the seed-run benchmark turns it off)
    pictures: bool = False           # confusion/mistakes/filters PNGs at the end (the CLI's default; --no-pictures)
    # --- image folders and torchrun (torch_model/imagefolder.py, torch_model/distributed.py)
    dataset: str = "fashion-mnist"   # fashion-mnist | imagefolder (--data-dir: CLASS/ folders, or train/ [+ val/])
    workers: int | None = None       # DataLoader decoding processes for imagefolder (None: up to 8, CPUs allowing)
    mean: list[float] | None = None  # per-channel normalization (imagefolder); None: measured on the training set
    std: list[float] | None = None
    dist_timeout: float = D.DEFAULT_TIMEOUT_S  # seconds a rank waits for the others before giving up (torchrun)


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0            # wall time of the whole run, evaluation included
    out_dir: Path | None = None
    device: str = ""
    status: str = "completed"      # completed | interrupted | nan | nothing to do (a finished run resumed)
    config: TrainConfig | None = None  # the run's settings, every default decided

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


# ----------------------------------------------------------------------------------------------- the loop

def say(line: str) -> None:
    print(line, flush=True)


def fit(cfg: TrainConfig, on_epoch_end: Callable[[int, dict, Learner], None] | None = None,
        log: Callable[[str], None] = say, ctx: D.DistContext | None = None) -> TrainResult:
    """Train as the config says; returns the per-epoch history. Bad settings, data or checkpoints raise ValueError
    before any file is made or changed; a failed write raises OSError naming the file.
    on_epoch_end(epoch, row, learner) runs after each epoch is saved (tests use it to interrupt or poison).
    Under torchrun (ctx: distributed.setup's, made here when not given) every process trains its shard of each
    global batch; rank 0 alone decides the run folder, writes every file and logs (torch_model/distributed.py)."""
    if ctx is None:
        ctx = D.setup(cfg.device, cfg.dist_timeout)
        try:
            return fit(cfg, on_epoch_end, log, ctx)
        finally:
            D.teardown(ctx)
    t_start = time.perf_counter()
    log = log if ctx.is_main else (lambda line: None)
    cfg = D.from_main(ctx, lambda: D.check_backend(ctx, resolve_config(cfg)), what="receiving the run's settings")
    checkpoint = D.from_main(ctx, check_run_folder, cfg, what="receiving the checkpoint rank 0 resumes from")
    device = ctx.device if ctx.enabled else resolve_device(cfg.device)
    if checkpoint is not None and checkpoint["epoch"] >= cfg.epochs and not unfinished_files(cfg):
        return TrainResult(history=list(checkpoint["history"]), out_dir=Path(cfg.out), device=str(device),
                           status="nothing to do", config=cfg)
    run = prepare(cfg, checkpoint, ctx)
    cfg = run.cfg                                   # limits clamped to the data
    lock = None

    def open_run_folder() -> Path:                  # rank 0 only: the others are sent its folder's name
        nonlocal lock
        out, created = (Path(cfg.out), False) if cfg.resume else make_run_folder(cfg.out, cfg.backend)
        lock = RunLock(out)
        try:
            if cfg.checkpoint:
                check_free_space(out, run.checkpoint_bytes)
            lock.acquire(log)
            clear_stale_files(out)                  # temporary files of a run killed while it wrote one
            write_config(out, cfg)                  # on resume: --epochs may have grown
            if run.history:                         # the checkpoint is the record: metrics.csv follows it
                write_metrics(out, run.history)
        except BaseException:
            lock.release()
            if created:
                remove_empty_folder(out)
            raise
        return out

    out = D.from_main(ctx, open_run_folder, what="waiting for rank 0 to open the run folder")
    for line in [*run.notes, *header(run, out)]:
        log(line)
    result = TrainResult(history=run.history, out_dir=out, device=str(device), config=cfg)
    try:
        result.status = train_epochs(run, out, on_epoch_end, log)
        if result.status == "completed" and cfg.pictures and cfg.dataset != "fashion-mnist":
            log("note: no confusion/mistakes/filters pictures for an image folder (they are Fashion-MNIST's so far)")
        elif result.status == "completed" and cfg.pictures and ctx.is_main:  # confusion, mistakes, filters PNGs
            from torch_model.evaluate import write_run_pictures
            try:
                write_run_pictures(out, run.learner, run.test_ds, cfg.resize, cfg.batch_size, cfg.seed,
                                   cfg.progress, variant=cfg.variant, pixel_mean=run.pixel_mean)
            except OSError as exc:              # the run itself is saved; only pictures are missing
                missing = [name for name in PICTURES if not (out / name).exists()]
                log(f"note: {exc}; not written: {', '.join(missing)} (`alexnet train --resume --out {out}` draws "
                    f"them once there is room)")
    finally:
        try:
            if ctx.is_main:
                finish(run, out, result.status, log)
        finally:
            if lock is not None:
                lock.release()
            result.seconds = time.perf_counter() - t_start
    return result


@dataclass
class Run:
    """A run ready to train: settings decided, data loaded, model built (and restored from last.pt on resume)."""
    cfg: TrainConfig
    device: torch.device
    train_ds: object
    test_ds: object
    learner: Learner
    history: list[dict]
    start_epoch: int
    best_acc: float
    checkpoint_bytes: int
    notes: list[str] = field(default_factory=list)
    stop_reason: str = ""
    source: object = None           # what the epochs read: a FashionMNISTSource (distributed.py) or an
                                    # ImageFolderSource (imagefolder.py)
    ctx: D.DistContext = field(default_factory=D.DistContext)
    warned: set = field(default_factory=set)   # unreadable images already named in a warning
    pixel_mean: torch.Tensor | None = None   # (28, 28) mean training image (--pixels mean-subtracted), else None

    @property
    def channels(self) -> int:
        return INPUT_SHAPES[self.cfg.variant][0]


def check_run_folder(cfg: TrainConfig) -> dict | None:
    """Before anything is loaded: the folder is free (no live run in it), and either holds nothing of a run (a new
    run) or a last.pt that fits the settings (--resume: returned)."""
    out = Path(cfg.out) if cfg.out else None
    if out is not None:
        check_out_folder(out)
        RunLock(out).refuse_if_held()
    if not cfg.resume:
        held = [name for name in RUN_FILES if out is not None and (out / name).exists()]
        if held:
            what = "a run (last.pt)" if "last.pt" in held else f"{', '.join(held)} (files a run writes)"
            raise ValueError(f"--out {out} already holds {what}; pass --resume to continue the run recorded there, "
                             f"or choose another --out")
        return None
    if out is None:
        raise ValueError("--resume needs --out, the folder of the run to continue")
    if not (out / "last.pt").exists() and (out / "config.json").is_file() and not metrics_rows(out):
        return None          # killed before its first epoch was saved: the recorded run starts from the beginning
    checkpoint = load_resume_checkpoint(out / "last.pt")
    saved = {**LEGACY_SETTINGS, **checkpoint["config"]}
    changed = [f"{k}: {saved.get(k)!r} -> {getattr(cfg, k)!r}" for k in RESUME_KEYS if saved.get(k) != getattr(cfg, k)]
    if changed:
        raise ValueError(f"--resume: settings differ from the run in {out}: {'; '.join(changed)}")
    done = checkpoint["epoch"]
    if cfg.epochs < done:
        raise ValueError(f"--epochs {cfg.epochs}: the run in {out} has already trained {done} epoch(s); pass a "
                         f"larger --epochs to extend it, or leave it out to finish the run as recorded")
    return checkpoint


def prepare(cfg: TrainConfig, checkpoint: dict | None, ctx: D.DistContext | None = None) -> Run:
    """Load the data, build the learner, restore the checkpoint: every check that needs them, no file written.
    Under torchrun (ctx enabled): this rank's shard of the data, and the learner wrapped in DDP."""
    ctx = ctx if ctx is not None else D.DistContext(device=resolve_device(cfg.device))
    device = ctx.device if ctx.enabled else resolve_device(cfg.device)
    notes = []
    channels = INPUT_SHAPES[cfg.variant][0]
    if cfg.dataset == "imagefolder":
        from torch_model.imagefolder import default_workers, open_image_folder

        workers = cfg.workers if cfg.workers is not None else default_workers()
        source = open_image_folder(cfg.data_dir, cfg.variant, cfg.resize, cfg.batch_size, cfg.seed, workers, device,
                                   cfg.mean, cfg.std, cfg.limit_train, cfg.limit_test, ctx,
                                   given_as="recorded in config.json" if cfg.resume else "given")
        cfg = replace(cfg, mean=source.norm.mean, std=source.norm.std)   # recorded: a resume normalizes the same
        notes += source.notes
        train_ds, test_ds = source.train, source.test
        mean = None                                 # image folders are normalized by --mean/--std instead
    else:
        train_ds, test_ds = load_fashion_mnist(cfg.data_dir)
        for name, ds in (("limit_train", train_ds), ("limit_test", test_ds)):
            value = getattr(cfg, name)
            if value is not None and value > len(ds):
                notes.append(f"note: --{name.replace('_', '-')} {value} is more than the {len(ds)} {ds.split} images: "
                             f"using all {len(ds)}")
                cfg = replace(cfg, **{name: len(ds)})
        train_ds = train_ds.subset(cfg.limit_train).to(device)
        test_ds = test_ds.subset(cfg.limit_test).to(device)
        mean = pixel_mean(train_ds) if cfg.pixels == "mean-subtracted" else None   # (28, 28) or None
        source = D.FashionMNISTSource(train_ds, test_ds, cfg.resize, channels, cfg.batch_size, ctx.rank,
                                      ctx.world_size, pixel_mean=mean)
    for split, ds in (("training", train_ds), ("test", test_ds)):
        if len(ds) == 0:
            where = f"--data-dir {cfg.data_dir}" if cfg.dataset == "imagefolder" else "Fashion-MNIST"
            raise ValueError(f"{where}: the {split} set holds no images")
    torch.manual_seed(cfg.seed)
    learner = make_learner(cfg.backend, cfg.lr, device, num_classes=len(source.classes), amp=cfg.amp, seed=cfg.seed,
                           channels_last=cfg.channels_last, variant=cfg.variant, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)
    D.seed_rank(ctx, cfg.seed)                      # ranks 1..: their own dropout streams (rank 0: the seed's)
    history, start_epoch, best_acc = [], 0, -1.0
    if checkpoint is not None:
        path = Path(cfg.out) / "last.pt"
        try:
            learner.load_state_dict(checkpoint["learner"])
            if ctx.enabled or "rng_ranks" in checkpoint:
                note = D.restore_rng(ctx, checkpoint, cfg.seed, checkpoint["epoch"])
                notes += [note] if note else []
            else:
                _set_rng_state(checkpoint["rng"])
        except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
            what = f"no {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            raise ValueError(f"{path}: does not fit the {cfg.backend} backend's model and optimizer ({what})") from exc
        if mean is not None:                      # the recorded mean image (the same images give the same one)
            if not isinstance(checkpoint.get("pixel_mean"), torch.Tensor) or checkpoint["pixel_mean"].shape != (28, 28):
                raise ValueError(f"{path}: a --pixels mean-subtracted run's checkpoint without its (28, 28) "
                                 f"'pixel_mean'")
            mean = source.pixel_mean = checkpoint["pixel_mean"].to(torch.float32)
        history = list(checkpoint["history"])
        start_epoch = checkpoint["epoch"]
        best_acc = max((h["test_acc"] for h in history), default=-1.0)
    if ctx.enabled:
        learner = D.DistributedLearner(learner, ctx)   # after the restore: DDP starts from rank 0's weights
    return Run(cfg, device, train_ds, test_ds, learner, history, start_epoch, best_acc,
               checkpoint_bytes(learner, cfg.momentum), notes, source=source, ctx=ctx, pixel_mean=mean)


def train_epochs(run: Run, out: Path, on_epoch_end, log: Callable[[str], None]) -> str:
    """Epochs from where the run stands to cfg.epochs, each saved as it ends; returns the run's status."""
    cfg = run.cfg
    try:
        for epoch in range(run.start_epoch, cfg.epochs):
            if cfg.checkpoint:
                D.from_main(run.ctx, check_free_space, out, run.checkpoint_bytes, what="rank 0's free-space check")
            row = train_epoch(run, epoch, log)
            save_epoch(run, out, row)
            skipped = f", {row['skipped']} unreadable image(s) skipped" if row.get("skipped") else ""
            log(f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.3f}, train acc {row['train_acc']:.3f}, "
                f"test acc {row['test_acc']:.3f}, {row['examples_per_sec']:.1f} examples/sec{skipped}")
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, row, run.learner)
    except KeyboardInterrupt:
        return "interrupted"
    except NonFiniteLoss as exc:
        run.stop_reason = str(exc)
        return "nan"
    return "completed"


def train_epoch(run: Run, epoch: int, log: Callable[[str], None] = say) -> dict:
    """One pass over the training set (d2l's train_ch6 inner loop), then the test accuracy: the epoch's row.
    Under torchrun each rank steps through its shard of every global batch; the counts are summed over the ranks
    (the bar shows rank 0's shard)."""
    cfg, learner, ctx = run.cfg, run.learner, run.ctx
    learner.train()
    loss_sum, correct, seen = 0.0, 0, 0
    curve: list[list[float]] = []   # [fractional epoch, running loss, running train acc]
    steps = math.ceil(len(run.train_ds) / cfg.batch_size)   # global batches: as many on every rank
    t0 = time.perf_counter()
    bar = tqdm(run.source.train_batches(cfg.seed * 1000 + epoch),   # an epoch's own shuffle (MAX_SEED)
               total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
               disable=not (cfg.progress and ctx.is_main), dynamic_ncols=True)
    for step, (X, y) in enumerate(bar):
        if step == 1:
            t_steady = time.perf_counter()          # step 0 pays for oneDNN's first-call set-up: not timed
        if step == ESTIMATE_AFTER_STEPS + 1 and epoch == run.start_epoch and ctx.is_main:
            rate = ESTIMATE_AFTER_STEPS * cfg.batch_size / (time.perf_counter() - t_steady)
            tqdm.write(estimate(run, rate))
        loss, logits = learner.step(X, y)
        if not math.isfinite(loss):
            raise NonFiniteLoss(f"loss became {loss} at epoch {epoch + 1}, step {step + 1}")
        loss_sum += loss * len(y)
        correct += (logits.argmax(dim=1) == y).sum().item()
        seen += len(y)
        bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.3f}", acc=f"{correct / max(seen, 1):.3f}")
        if (step + 1) % max(1, steps // 5) == 0 or step + 1 == steps:  # d2l's animator: 5 points an epoch
            g_loss, g_correct, g_seen = D.sum_over_ranks(ctx, loss_sum, correct, seen)
            curve.append([epoch + (step + 1) / steps, g_loss / max(g_seen, 1), g_correct / max(g_seen, 1)])
    loss_sum, correct, seen = D.sum_over_ranks(ctx, loss_sum, correct, seen, what="summing the epoch's counts")
    if not seen:
        raise ValueError(f"none of the {len(run.train_ds)} training images could be read in epoch {epoch + 1}")
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    train_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    test_acc = D.evaluate(learner, run.source, ctx, cfg.progress, "test")
    skipped = report_skipped(run, log)
    return dict(epoch=epoch + 1, loss=loss_sum / seen, train_acc=correct / seen, test_acc=test_acc,
                examples_per_sec=seen / train_seconds, examples=int(seen), train_seconds=train_seconds,
                eval_seconds=time.perf_counter() - t1, curve=curve, skipped=skipped)


def estimate(run: Run, rate: float) -> str:
    """How long the rest of the run and the seed's full run take at `rate` training images/s (measured on this run's
    steps; evaluation is forward only and adds about a fifth of that per epoch)."""
    cfg = run.cfg
    left = (cfg.epochs - run.start_epoch) * len(run.train_ds)
    full = PRESETS["full"]["epochs"] * 60000

    def hours(images: float) -> str:
        seconds = images / rate
        return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"
    line = (f"measured {rate:.1f} training images/s over steps 2..{ESTIMATE_AFTER_STEPS + 1}: this run's "
            f"{cfg.epochs - run.start_epoch} epoch(s) of training take ~{hours(left)}")
    if cfg.dataset == "fashion-mnist" and (cfg.limit_train or cfg.epochs != PRESETS["full"]["epochs"]):
        line += f"; the seed's full run (10 epochs of 60,000) ~{hours(full)} at this rate"
    return line


def report_skipped(run: Run, log: Callable[[str], None], most: int = 10) -> int:
    """The unreadable images of the epoch (training and evaluation, every rank's): each named in a warning the first
    time (at most `most` an epoch), all counted."""
    skipped = [s for rank in D.all_gather_object(run.ctx, run.source.take_skipped(), what="gathering skipped images")
               for s in rank]
    new = [(path, reason) for path, reason in skipped if path not in run.warned]
    for path, reason in new[:most]:
        log(f"warning: skipped unreadable image {path} ({reason})")
    if len(new) > most:
        log(f"warning: ... and {len(new) - most} more unreadable image(s)")
    run.warned.update(path for path, _ in new)
    return len(skipped)


def save_epoch(run: Run, out: Path, row: dict) -> None:
    """The epoch's record, a Ctrl-C waiting until it is whole: last.pt (and best.pt when the test accuracy improved)
    first, then metrics.csv, derived from the checkpoint's history. A kill -9 at any instant leaves last.pt of this
    epoch or of the one before (atomic writes), and metrics.csv never ahead of it; a resume continues from last.pt and
    rewrites metrics.csv from it. When a checkpoint cannot be written (a full disk) the epoch is not recorded: the
    error names the file and the epoch's numbers, and the earlier last.pt is intact."""
    cfg, epoch = run.cfg, row["epoch"]
    rng_ranks = D.gather_rng_states(run.ctx) if run.ctx.enabled and cfg.checkpoint else None
    if not run.ctx.is_main:                         # rank 0 writes; the others keep the same history
        run.history.append(row)
        return
    inputs = {} if run.pixel_mean is None else {"pixel_mean": run.pixel_mean.cpu()}  # what the weights expect
    with _sigint_deferred():
        if cfg.checkpoint:
            try:
                if row["test_acc"] > run.best_acc:
                    save_checkpoint(out / "best.pt", dict(epoch=epoch, test_acc=row["test_acc"],
                                                          model=run.learner.model_state_dict(), config=asdict(cfg),
                                                          **inputs))
                    run.best_acc = row["test_acc"]
                rng = dict(rng=_rng_state()) if rng_ranks is None else dict(rng=rng_ranks[0], rng_ranks=rng_ranks)
                save_checkpoint(out / "last.pt", dict(epoch=epoch, learner=run.learner.state_dict(), **rng,
                                                      config=asdict(cfg), history=[*run.history, row], **inputs))
            except WriteError as exc:
                kept = (f"{out / 'last.pt'} still holds epoch {epoch - 1}" if epoch > 1
                        else "no checkpoint was saved")
                raise CheckpointWriteError(
                    f"{exc}; epoch {epoch} (loss {row['loss']:.3f}, train acc {row['train_acc']:.3f}, test acc "
                    f"{row['test_acc']:.3f}) is not saved and {kept}") from exc
        run.history.append(row)
        write_metrics(out, run.history)


def finish(run: Run, out: Path, status: str, log: Callable[[str], None]) -> None:
    """metrics.csv and curves.png of the epochs done (also after Ctrl-C, NaN or a failed save); the NaN stop says
    what the folder really holds."""
    if run.history:
        try:
            write_metrics(out, run.history)
            plot_curves(out, run.history, curves_title(run))
        except OSError as exc:          # a full disk: the error that stopped the run is the one to report
            log(f"note: {exc}")
    if status == "nan":
        files = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
        if run.cfg.checkpoint and (out / "last.pt").is_file():
            kept = f"the last good checkpoint is {out / 'last.pt'} (epoch {len(run.history)})"
        elif run.history:
            kept = f"no checkpoint (--no-checkpoint); the {len(run.history)} good epoch(s) are in metrics.csv"
        else:
            kept = "no epoch was completed, so there is no checkpoint"
        log(f"stopped: {run.stop_reason}; {kept}; {out} holds {', '.join(files)}")


def header(run: Run, out: Path) -> list[str]:
    """What runs, on what, and why: the lines printed before the first epoch."""
    cfg = run.cfg
    n_train, n_test = len(run.train_ds), len(run.test_ds)
    lines = []
    if cfg.preset.startswith("quick") and cfg.dataset == "imagefolder":
        lines.append(f"preset quick (a CPU, no CUDA): {cfg.epochs} epoch(s) on {n_train} training images (at most "
                     f"{quick_limit_train(cfg)}); `--preset full` trains {PRESETS['full']['epochs']} epochs on all")
    elif cfg.preset.startswith("quick"):
        budget = " (~10 minutes on 2 idle cores)" if cfg.preset == "quick" and cfg.variant == "d2l" else ""
        what = "the seed model and hyper-parameters" if cfg.variant == "d2l" else f"the {cfg.variant} AlexNet"
        lines.append(f"preset quick (a CPU, no CUDA): {what} on the first {n_train} "
                     f"training images for {cfg.epochs} epoch(s){budget}, tested on {n_test} real test images. The "
                     f"full seed run is `alexnet train --preset full` (this run prints what it would take here once "
                     f"its first {ESTIMATE_AFTER_STEPS} steps are timed; minutes on a GPU).")
    lines.append(f"training on {run.device} with the {cfg.backend} backend in {precision_note(cfg)}: "
                 f"{cfg.epochs} epoch(s), batch {cfg.batch_size}, lr {cfg.lr}, resize {cfg.resize}, seed {cfg.seed}, "
                 f"{n_train} train / {n_test} test images")
    if cfg.variant != "d2l" or cfg.momentum or cfg.weight_decay:
        c, r = INPUT_SHAPES[cfg.variant][0], cfg.resize
        grey_to_rgb = c == 3 and cfg.dataset == "fashion-mnist"
        model = (f"the {cfg.variant} AlexNet ({c}x{r}x{r}" + (": each grey image repeated to 3 channels), "
                                                               if grey_to_rgb else "), "))
        pixels = ("pixels: raw 0..255 values minus the mean training image" if cfg.pixels == "mean-subtracted"
                  else "pixels in [0, 1]" if cfg.dataset == "fashion-mnist" else "pixels normalized by --mean/--std")
        lines.append(f"{model}SGD lr {cfg.lr}, momentum {cfg.momentum}, weight decay {cfg.weight_decay}; {pixels}")
    if run.ctx.enabled:
        ctx = run.ctx
        shard = math.ceil(cfg.batch_size / ctx.world_size)
        lines.append(f"torchrun: {ctx.world_size} processes ({ctx.backend}); --batch-size {cfg.batch_size} is the "
                     f"global batch, each process takes its shard (~{shard} images) of every one and DDP averages "
                     f"the gradients: the same step as one process, lr {cfg.lr} unchanged")
    if cfg.resume and run.start_epoch == 0:
        lines.append(f"resuming {out}: no epoch of it was saved, so it starts from the first of {cfg.epochs}")
    elif cfg.resume:
        lines.append(f"resuming {out}: {run.start_epoch} of {cfg.epochs} epoch(s) done")
    if cfg.backend == "triton" and run.device.type == "cpu":
        lines.append("note: on a CPU the Triton kernels run in the Triton interpreter (one program instance at a time, "
                     "in Python): minutes per batch at 224x224. Meant for stepping through a kernel, e.g. with a tiny "
                     "--limit-train; train on a GPU for speed.")
    return lines


def curves_title(run: Run) -> str:
    cfg = run.cfg
    model = "AlexNet" if cfg.variant == "d2l" else f"AlexNet ({cfg.variant})"
    return (f"{model} ({cfg.backend}, {run.device}), lr {cfg.lr}, batch {cfg.batch_size}, "
            f"{len(run.train_ds)} train / {len(run.test_ds)} test images")


# ----------------------------------------------------------------------------------------------- configuration

def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """The config with every None decided (backend, amp, channels_last, resize, lr, momentum, weight_decay, pixels)
    and every value checked: ValueError naming the flag. Does no I/O, so a bad run fails before it makes a folder."""
    for name in ("epochs", "batch_size"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    for name in ("limit_train", "limit_test"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if not 0 <= cfg.seed <= MAX_SEED:
        raise ValueError(f"--seed must be an integer from 0 to {MAX_SEED} (each epoch shuffles with seed x 1000 + "
                         f"epoch, a 64-bit seed), got {cfg.seed}")
    if cfg.lr is not None and not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ValueError(f"--lr must be a positive number, got {cfg.lr}")
    if cfg.variant not in VARIANTS:
        raise ValueError(f"--variant must be one of {VARIANTS}, got {cfg.variant!r}")
    values = {}
    for name, default in OPTIMIZER_DEFAULTS[cfg.variant].items():
        value = getattr(cfg, name)
        if value is not None and not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"--{name.replace('_', '-')} must be a number >= 0, got {value}")
        values[name] = float(default if value is None else value)
    if cfg.pixels is not None and cfg.pixels not in PIXELS:
        raise ValueError(f"--pixels must be one of {PIXELS}, got {cfg.pixels!r}")
    if cfg.dataset != "fashion-mnist" and cfg.pixels == "mean-subtracted":
        raise ValueError("--pixels mean-subtracted is for Fashion-MNIST: an image folder is normalized by its "
                         "per-channel --mean/--std (measured on the training images when not given)")
    default_pixels = PIXELS_DEFAULTS[cfg.variant] if cfg.dataset == "fashion-mnist" else "unit"
    values["pixels"] = default_pixels if cfg.pixels is None else cfg.pixels
    values["resize"] = INPUT_SHAPES[cfg.variant][1] if cfg.resize is None else cfg.resize
    check_resize(values["resize"], "--resize", cfg.variant)
    device = resolve_device(cfg.device)
    backend = values["backend"] = cfg.backend or default_backend(device, cfg.variant)
    check_backend(backend, cfg.variant)
    amp, channels_last, _ = cpu_default_amp(device, backend)
    if cfg.amp is not None and cfg.amp != amp:
        channels_last = False   # a precision asked for: the layout too unless asked (--amp none is the seed's run)
    values["amp"] = cfg.amp if cfg.amp is not None else amp
    values["channels_last"] = cfg.channels_last if cfg.channels_last is not None else channels_last
    check_amp(values["amp"], backend, device, values["channels_last"])
    check_data_settings(cfg)
    return replace(cfg, **values)


def check_data_settings(cfg: TrainConfig) -> None:
    """--dataset and the flags that go with it (image folders: torch_model/imagefolder.py), --dist-timeout."""
    if cfg.dataset not in DATASETS:
        raise ValueError(f"--dataset must be one of {DATASETS}, got {cfg.dataset!r}")
    if cfg.dataset == "imagefolder":
        if not cfg.data_dir:
            raise ValueError("--dataset imagefolder needs --data-dir PATH (one sub-folder of images per class, or "
                             "train/ and val/ folders of them)")
        if cfg.workers is not None and cfg.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {cfg.workers}")
        if (cfg.mean is None) != (cfg.std is None):
            raise ValueError("--mean and --std go together: give both (one value per channel) or neither")
    else:
        given = [f"--{k}" for k in ("workers", "mean", "std") if getattr(cfg, k) is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: for --dataset imagefolder (Fashion-MNIST is held in memory on the "
                             f"device, normalized as the seed does)")
    if not (cfg.dist_timeout > 0):
        raise ValueError(f"--dist-timeout must be > 0 seconds, got {cfg.dist_timeout}")


def precision_note(cfg: TrainConfig) -> str:
    """What the header says about the precision and layout, and why."""
    what = ("bf16 autocast" if cfg.amp == "bf16" else "fp32") + (" + channels_last" if cfg.channels_last else "")
    amp, channels_last, why = cpu_default_amp(resolve_device(cfg.device), cfg.backend)
    return f"{what} ({why if (amp, channels_last) == (cfg.amp, cfg.channels_last) else 'as asked'})"


def quick_limit_train(cfg: TrainConfig) -> int:
    """The quick preset's training images for the precision and layout that run: ~10 minutes on 2 CPU cores."""
    return QUICK_LIMIT_TRAIN.get((cfg.amp, cfg.channels_last), QUICK_LIMIT_TRAIN[("none", False)])


def recorded_settings(out: Path) -> dict:
    """The settings of the run in `out`, from its config.json (keys it predates get what such a run ran with)."""
    path = out / "config.json"
    if not path.is_file():
        where = f"{out} is not a folder" if not out.is_dir() else f"{path} not found"
        raise ValueError(f"--resume: {where} (pass the folder of the run to continue as --out)")
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"--resume: {path}: not readable as JSON ({exc})") from exc
    if not isinstance(saved, dict) or "epochs" not in saved:
        raise ValueError(f"--resume: {path}: not a run's config.json (no 'epochs')")
    names = {f.name for f in fields(TrainConfig)}
    return {**LEGACY_SETTINGS, **{k: v for k, v in saved.items() if k in names}}


def resume_config(out: Path, given: dict) -> TrainConfig:
    """`--resume --out R` with the flags `given` on the command line: R's recorded run. A given setting must agree
    with the record, except --epochs (may extend the run) and where/how it runs (RUNTIME_KEYS)."""
    saved = recorded_settings(out)
    differ = []
    for key, value in given.items():
        if key in RUNTIME_KEYS or key == "epochs":
            saved[key] = value
        elif key == "preset":
            if not str(saved.get("preset", "")).startswith(value):
                differ.append(f"--preset {value} (recorded {saved.get('preset')})")
        elif value != saved.get(key):
            differ.append(f"--{key.replace('_', '-')} {value} (recorded {saved.get(key)})")
    if differ:
        raise ValueError(f"--resume: {', '.join(differ)} {'differs' if len(differ) == 1 else 'differ'} from the run "
                         f"recorded in {out / 'config.json'}; drop {'it' if len(differ) == 1 else 'them'} to continue "
                         f"the run as recorded, or start a new run with another --out")
    saved.update(resume=True, out=str(out))
    return TrainConfig(**saved)


def write_config(out: Path, cfg: TrainConfig) -> None:
    atomic_write(out / "config.json", lambda f: f.write(json.dumps(asdict(cfg), indent=2) + "\n"), mode="w")


# ----------------------------------------------------------------------------------------------- the run folder

class RunLock:
    """`out/.lock` holding the pid of the run that uses the folder. Created whole (written elsewhere, then hard-linked
    into place, which fails if one is there), so a reader never sees it half written. A lock whose pid is no longer
    running (the run was killed) is stale: taken over, with a note."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self.held = False

    def holder(self) -> int | None:
        """The pid of a live run holding the folder, or None (no lock, or a stale one)."""
        try:
            pid = int(self.path.read_text().split()[0])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, IndexError):
            return -1                 # unreadable: assume held rather than break into a live run
        return pid if _alive(pid) else None

    def refuse_if_held(self) -> None:
        pid = self.holder()
        if pid is not None:
            who = f"pid {pid}" if pid > 0 else "another run"
            raise ValueError(f"--out {self.path.parent} is in use by another run ({who}, {self.path}); wait for it "
                             f"to finish or choose another --out")

    def acquire(self, log: Callable[[str], None] = say) -> None:
        folder = self.path.parent
        for _ in range(3):
            self.refuse_if_held()
            if self.path.exists():    # stale: its run died without releasing it
                stale = self.path.read_text().strip()
                log(f"note: taking over the stale lock {self.path} of pid {stale} (no such process: it ended without "
                    f"releasing the folder)")
                self.path.unlink(missing_ok=True)
            tmp = folder / f"{LOCK_NAME}.{os.getpid()}"
            try:
                tmp.write_text(f"{os.getpid()}\n")
                os.chmod(tmp, 0o666 & ~current_umask())
                os.link(tmp, self.path)
            except FileExistsError:
                continue              # another run got there first: look again
            except OSError as exc:
                raise WriteError(folder / "config.json", exc) from exc
            finally:
                try:
                    tmp.unlink(missing_ok=True)
                except OSError:
                    pass              # a read-only folder: nothing was made
            self.held = True
            return
        self.refuse_if_held()

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:       # someone else's live process
        return True
    return True


def make_run_folder(out: str | None, backend: str) -> tuple[Path, bool]:
    """(folder, created). The default runs/DATE-TIME-BACKEND gets -2, -3, ... when taken (mkdir is atomic, so two runs
    started in the same second get two folders)."""
    if out:
        path = Path(out)
        existed = path.is_dir()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"--out {path}: cannot make the folder ({exc.strerror or exc})") from exc
        return path, not existed
    base = Path("runs") / time.strftime(f"%Y%m%d-%H%M%S-{backend}")
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir()
            return path, True
        except FileExistsError:
            continue
    raise ValueError(f"{base}: 999 run folders of that name exist; pass --out")


def remove_empty_folder(out: Path) -> None:
    """Undo a run folder made for a run that could not start: no empty folder left behind."""
    try:
        out.rmdir()
    except OSError:
        pass                          # not empty: something else is in it, leave it


def check_out_folder(out: Path) -> None:
    """--out names a folder this run can make or use: not a file, nor under one."""
    if str(out) == "":
        raise ValueError("--out is empty: name the run folder (or leave --out out for runs/DATE-TIME-BACKEND)")
    for part in (out, *out.parents):
        if part.exists():
            if not part.is_dir():
                raise ValueError(f"--out {out}: {part} is a file, not a folder")
            break


def clear_stale_files(out: Path) -> None:
    """Remove what a run killed mid-write left behind: atomic_write's temporary `.NAME.xxxx` files of the run's files,
    and lock files of runs no longer alive (the folder's lock is held by this run when this is called)."""
    for path in out.iterdir():
        name = path.name
        stale_temp = any(name.startswith(f".{f}.") for f in RUN_FILES)
        pid = name[len(LOCK_NAME) + 1:] if name.startswith(LOCK_NAME + ".") else ""
        if stale_temp or (pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid))):
            path.unlink(missing_ok=True)


def metrics_rows(out: Path) -> int:
    """Epochs recorded in out/metrics.csv (0 when there is none)."""
    try:
        return max(0, len((out / "metrics.csv").read_text().splitlines()) - 1)
    except (OSError, UnicodeDecodeError):
        return 0


def unfinished_files(cfg: TrainConfig) -> list[str]:
    """What a finished run's folder still lacks (it was stopped while drawing them): resuming it draws them."""
    names = ["curves.png"]
    if cfg.pictures and cfg.dataset == "fashion-mnist":
        names += PICTURES
    return [name for name in names if not (Path(cfg.out) / name).exists()]


def checkpoint_bytes(learner: Learner, momentum: float) -> int:
    """About how much an epoch writes: last.pt (the weights, one momentum buffer per weight, the optimizer's and RNG
    states) and best.pt (the weights again), each written whole beside the file it replaces."""
    weights = sum(t.numel() * t.element_size() for t in learner.model_state_dict().values())
    return weights * (3 if momentum else 2) + (2 << 20)


def check_free_space(folder: Path, needed: int) -> None:
    """Refuse to start an epoch whose checkpoints cannot fit: each is written whole beside the file it replaces
    (atomic_write renames it over only then), so an epoch needs room for a new last.pt and best.pt."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise ValueError(f"{folder}: {free / 2**20:.1f} MiB free on its filesystem, but saving an epoch's checkpoints "
                         f"needs about {needed / 2**20:.0f} MiB; free some space, choose another --out, or pass "
                         f"--no-checkpoint")


class CheckpointWriteError(OSError):
    """Saving an epoch failed (disk full, ...): names the file, and what is still in the folder."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# ------------------------------------------------------------------------------------- checkpoints, metrics, curves

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
    except Exception as exc:  # a damaged file: name it, never a bare traceback (nor torch's paragraphs of advice)
        text = str(exc).split("WeightsUnpickler error:")[-1]      # torch's own reason, after its advice
        reason = next((line.strip() for line in text.splitlines() if line.strip()), "")
        raise ValueError(f"{path}: not a readable checkpoint ({exc.__class__.__name__}: {reason})") from exc


# what last.pt holds (save_epoch writes it); best.pt holds epoch, test_acc, model and config only
LAST_KEYS = ("epoch", "learner", "rng", "config", "history")


def load_resume_checkpoint(path: Path) -> dict:
    """last.pt, checked to be one: ValueError naming the file and what is missing (a best.pt copied over it, any
    other torch.save'd object)."""
    if not path.is_file():
        rows = metrics_rows(path.parent)
        why = (f"its metrics.csv records {rows} epoch(s) but no checkpoint holds them (a --no-checkpoint run cannot "
               f"be continued)" if rows else f"{path.parent / 'config.json'} not found: no run was started there")
        raise ValueError(f"--resume: {path} not found; {why}")
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: not a training checkpoint (a {type(checkpoint).__name__}, expected a dict with "
                         f"{', '.join(LAST_KEYS)})")
    missing = [k for k in LAST_KEYS if k not in checkpoint]
    if missing:
        hint = " (a best.pt? it holds the weights only and cannot be resumed)" if "model" in checkpoint else ""
        raise ValueError(f"{path}: not a last.pt training checkpoint: no {', '.join(repr(k) for k in missing)} "
                         f"(it has {', '.join(map(repr, checkpoint)) or 'nothing'}){hint}")
    history = checkpoint["history"]
    if (not isinstance(checkpoint["epoch"], int) or not isinstance(history, list) or len(history) != checkpoint["epoch"]
            or not all(isinstance(h, dict) and "test_acc" in h for h in history)):
        raise ValueError(f"{path}: damaged: epoch {checkpoint['epoch']!r} with {len(history)} history rows")
    return checkpoint


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
    ax.set_ylabel("cross-entropy loss / accuracy", fontsize=8)
    ax.set_xlim(0, max(epochs) + 0.05)
    ax.set_xticks(range(0, max(epochs) + 1))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic_write(out / "curves.png", lambda f: fig.savefig(f, format="png"))
    plt.close(fig)


def model_batches(ds, batch_size: int, resize: int, channels: int = 1, shuffle: bool = False,
                  seed: int = 0, pixel_mean: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches `alexnet train` feeds the model from a Fashion-MNIST split on one process (distributed.
    FashionMNISTSource's): data.to_input's [0, 1] pixels, minus the mean training image if one is given (--pixels
    mean-subtracted: raw 0..255 values centred), the grey channel repeated to `channels`."""
    source = D.FashionMNISTSource(ds, ds, resize, channels, batch_size, pixel_mean=pixel_mean)
    return source.train_batches(seed) if shuffle else source.test_batches()


# ----------------------------------------------------------------------------------------------- the command

def configure(parser: argparse.ArgumentParser) -> None:
    # No defaults here (None): a flag that is not given is decided by the preset and resolve_config, or on --resume
    # by the run's config.json; a given one is checked against it.
    d = TrainConfig()
    parser.add_argument("--preset", choices=("auto", "quick", "full"),
                        help="auto (default): full on CUDA, quick on a CPU (full: %s; quick: %s)" % (
                            PRESETS["full"], dict(PRESETS["quick"], limit_train="~10 minutes' worth")))
    parser.add_argument("--epochs", type=int, help=f"default: the preset's ({PRESETS['full']['epochs']} for full); "
                                                   f"with --resume: extend the run to N epochs")
    parser.add_argument("--batch-size", type=int,
                        help=f"default {d.batch_size}; the GLOBAL batch: under torchrun each of the N processes takes "
                             f"its 1/N shard of every batch (same step as one process), the lr is not scaled")
    parser.add_argument("--lr", type=float,
                        help="SGD learning rate (default: the variant's: 0.01 d2l, as the seed; 0.001 paper, a tenth "
                             "of the paper's 0.01, which diverges on 10 classes: docs/paper_variant.md)")
    parser.add_argument("--variant", choices=VARIANTS,
                        help="d2l (default): the seed's 1x224x224 AlexNet; paper: the 2012 paper's (3x227x227, LRN, "
                             "groups), grey images repeated to 3 channels")
    parser.add_argument("--resize", type=int, help="input height/width (default: the variant's, 224 d2l, 227 paper)")
    parser.add_argument("--momentum", type=float,
                        help="SGD momentum (default: the variant's: 0 d2l, as the seed; 0.9 paper)")
    parser.add_argument("--weight-decay", type=float,
                        help="SGD weight decay (default: the variant's: 0 d2l, as the seed; 5e-4 paper)")
    parser.add_argument("--pixels", choices=PIXELS,
                        help="unit: [0, 1] values (the seed's); mean-subtracted: raw 0..255 values minus the mean "
                             "training image (the paper's section 2). Default: the variant's, unit d2l, "
                             "mean-subtracted paper")
    parser.add_argument("--device", help="auto (default) | cpu | cuda[:N]")
    parser.add_argument("--backend", choices=LEARNER_BACKENDS,
                        help="torch (cuDNN / CPU), triton (our kernels; default on CUDA), numpy (numpy_ref, slow)")
    parser.add_argument("--amp", choices=AMP_CHOICES,
                        help="bf16: bf16 autocast (fp32 master weights and loss); none: fp32. Default: bf16 with "
                             "--channels-last on a CPU that computes bf16 natively (torch backend), else none")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                        help="NHWC weights and batches (same numbers; faster for oneDNN's bf16 and the Triton convs "
                             "on a GPU). Default: with the CPU's bf16 default")
    parser.add_argument("--seed", type=int, help=f"default {d.seed}")
    parser.add_argument("--dataset", choices=DATASETS,
                        help="fashion-mnist (default, the seed's) | imagefolder: --data-dir holds one sub-folder of "
                             "JPEG/PNG images per class (ImageNet's layout), or train/ and an optional val/ of them")
    parser.add_argument("--data-dir", help="fashion-mnist: folder with the four IDX files (.gz or raw), or "
                                           "FASHION_MNIST_DIR; imagefolder: the image folder (required)")
    parser.add_argument("--workers", type=int,
                        help="imagefolder: DataLoader processes decoding images, per training process (default: up to "
                             "8, the CPUs allowing)")
    parser.add_argument("--mean", type=lambda t: parse_channels(t, "--mean"),
                        help="imagefolder: per-channel mean, e.g. 0.485,0.456,0.406 (with --std; default: measured "
                             "on a seeded sample of 1000 training images)")
    parser.add_argument("--std", type=lambda t: parse_channels(t, "--std"), help="imagefolder: per-channel std")
    parser.add_argument("--dist-timeout", type=float,
                        help=f"torchrun: seconds a process waits for the others before stopping with an error "
                             f"(default {D.DEFAULT_TIMEOUT_S:g}): a rank that died or hangs stops the run, no hang")
    parser.add_argument("--out", help="run folder (default runs/DATE-TIME-BACKEND, made unique)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out as its config.json records it (other flags must agree; "
                             "--epochs may extend it)")
    parser.add_argument("--limit-train", type=int, help="train on the first N training images")
    parser.add_argument("--limit-test", type=int, help="evaluate on the first N test images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--no-checkpoint", action="store_true",
                        help="write no last.pt/best.pt (timing runs; such a run cannot be resumed)")
    parser.add_argument("--no-pictures", action="store_true",
                        help="skip confusion.png, mistakes.png and filters.png at the end (one more test-set pass)")


def given_flags(args: argparse.Namespace) -> dict:
    """The settings given on the command line (argparse leaves the others None)."""
    names = {f.name for f in fields(TrainConfig)} - {"out", "resume", "progress", "checkpoint"}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's TrainConfig: on --resume the recorded one (given flags checked against it); otherwise the given flags,
    then the preset, then the defaults for the device and variant."""
    given = given_flags(args)
    runtime = dict(progress=not args.no_progress, checkpoint=not args.no_checkpoint)
    if args.no_pictures or not args.resume:         # a resumed run makes the pictures its config.json records
        runtime["pictures"] = not args.no_pictures
    if args.out == "":
        raise ValueError("--out is empty: name the run folder (or leave --out out for runs/DATE-TIME-BACKEND)")
    if args.resume:
        if not args.out:
            raise ValueError("--resume needs --out, the folder of the run to continue")
        return replace(resume_config(Path(args.out), given), **runtime)
    preset = given.pop("preset", "auto")
    if preset == "auto":
        preset = "full" if resolve_device(given.get("device", "auto")).type == "cuda" else "quick"
    cfg = resolve_config(TrainConfig(**given, out=args.out, **runtime))
    values = dict(PRESETS[preset])
    if preset == "quick":
        values["limit_train"] = quick_limit_train(cfg)
    explicit = [k for k in values if k in given]
    values = {k: v for k, v in values.items() if k not in given}
    return replace(cfg, **values, preset=preset + ("+flags" if explicit else ""))


def parse_channels(text: str, flag: str) -> list[float]:
    from torch_model.imagefolder import parse_channels as parse

    try:
        values = parse(text, flag)
        if flag == "--std" and not all(v > 0 for v in values):
            raise ValueError(f"--std {text!r}: every channel's std must be > 0 (the pixels are divided by it)")
        return values
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    """One process, or one of torchrun's. Under torchrun rank 0 settles the settings, prints and writes; a failure
    on rank 0 is its one line (the others stop quietly), a lost rank is one line on each of the others (exit status
    1); every process ends through distributed.exit_now (not the process group's teardown, which can abort)."""
    ctx = D.setup(args.device or "auto", args.dist_timeout or D.DEFAULT_TIMEOUT_S)
    if not ctx.enabled:
        return report(args, ctx)
    try:
        status = report(args, ctx)     # no barrier after it: rank 0 may still draw pictures while the others leave
    except D.RankZeroError:
        status = 2                                  # rank 0 printed why
    except D.RankFailure as exc:
        print(f"alexnet train: error: {exc}", file=sys.stderr, flush=True)
        status = 1
    except (ValueError, OSError) as exc:            # what cli.main prints for one process
        print(f"alexnet train: error: {exc}", file=sys.stderr, flush=True)
        status = 2
    except KeyboardInterrupt:
        print("alexnet train: interrupted", file=sys.stderr, flush=True)
        status = 130
    D.exit_now(status)


def report(args: argparse.Namespace, ctx: D.DistContext) -> int:
    """Train as the flags say and print the outcome (rank 0): d2l's two lines, the run folder; the exit status."""
    cfg = D.from_main(ctx, config_from_args, args, what="receiving the run's settings from rank 0")
    result = fit(cfg, ctx=ctx)
    if not ctx.is_main:
        return {"interrupted": 130, "nan": 3}.get(result.status, 0)
    if result.status == "nothing to do":
        print(f"nothing to do: {result.out_dir} has trained all {cfg.epochs} epoch(s) it was started for (test acc "
              f"{result.test_acc:.3f}); pass --epochs N (more than {cfg.epochs}) to train it further")
        return 0
    if result.history:
        print(f"loss {result.loss:.3f}, train acc {result.train_acc:.3f}, test acc {result.test_acc:.3f}")
        print(f"{result.examples_per_sec:.1f} examples/sec on {result.device}")
    files = sorted(p.name for p in result.out_dir.iterdir() if not p.name.startswith("."))
    print(f"run folder: {result.out_dir} ({', '.join(files)})")
    if result.status == "interrupted":
        print(f"interrupted: {len(result.history)} completed epoch(s) saved; continue with "
              f"`alexnet train --resume --out {result.out_dir}`")
        return 130
    return 3 if result.status == "nan" else 0
