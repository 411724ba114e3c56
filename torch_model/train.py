"""`alexnet train`: d2l's `train_ch6` for the seed AlexNet, grown up. Read top to bottom: fit -> prepare ->
train_epochs -> train_epoch -> save_epoch -> finish, then the command (run -> train_from_args: config_from_args,
fit, report).

Where the rest lives: the settings (flags, presets, each variant's defaults, the resume record) in config.py; the run
folder (atomic files, the lock, checkpoints, metrics.csv) in checkpoint.py; what a step runs (torch, Triton or NumPy)
in learners.py; the batches in data.FashionMNISTSource or imagefolder.ImageFolderSource; curves.png in plots.py.

Each epoch prints a tqdm bar with its ETA, then loss, train acc (on the training batches with dropout on, as d2l counts
it), test acc and examples/sec; the run ends with d2l's two lines, `loss L, train acc A, test acc T` and
`N examples/sec on DEVICE`. After its first steps the run prints how long it will take at the rate it measured. A NaN or
inf loss stops it and keeps the last good checkpoint; Ctrl-C or SIGTERM (`kill`) stops it cleanly;
`alexnet train --resume --out R` continues a run stopped at any instant (kill -9 included) to exactly the metrics of
one that was never stopped.
On a CPU `--preset auto` is `quick` (one epoch on the first training images, the whole test set); `--preset full` is
the seed's 10 epochs anywhere. `--variant paper`: docs/paper_variant.md; image folders and torchrun: docs/distributed.md.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from torch_model import distributed
from torch_model.checkpoint import (PICTURES, CheckpointWriteError, RunLock, check_free_space, checkpoint_bytes,
                                    clear_stale_files, make_run_folder, recorded_pixel_mean, remove_empty_folder,
                                    restore_rng_state, rng_state, save_checkpoint, say, sigterm_stops,
                                    stops_deferred, unfinished_files, write_config, write_metrics)
from torch_model.config import (ESTIMATE_AFTER_STEPS, TrainConfig, check_run_folder, check_settled,  # noqa: F401
                                config_from_args, configure, estimate, header)  # configure: the CLI's
from torch_model.data import FashionMNISTSource, load_fashion_mnist, pixel_mean
from torch_model.device import resolve_device
from torch_model.files import WriteError
from torch_model.learners import DistributedLearner, Learner, accuracy, make_learner
from torch_model.model import INPUT_SHAPES
from torch_model.plots import plot_curves

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

def fit(cfg: TrainConfig, on_epoch_end: Callable[[int, dict, Learner], None] | None = None,
        log: Callable[[str], None] = say, ctx: distributed.DistContext | None = None) -> TrainResult:
    """Train as the settled config says (config_from_args or resolve_config decided it: check_settled); returns the
    per-epoch history. A bad run folder, data or checkpoint raises ValueError before any file is made or changed;
    a failed write raises OSError naming the file.
    on_epoch_end(epoch, row, learner) runs after each epoch is saved (tests use it to interrupt or poison).
    Under torchrun (ctx: distributed.setup's, made here when not given) every process trains its shard of each
    global batch; rank 0 alone decides the run folder, writes every file and logs (torch_model/distributed.py)."""
    if ctx is None:
        ctx = distributed.setup(cfg.device, cfg.dist_timeout)
        try:
            return fit(cfg, on_epoch_end, log, ctx)
        finally:
            distributed.teardown(ctx)
    t_start = time.perf_counter()
    log = log if ctx.is_main else (lambda line: None)
    # every rank holds the same settled config (the command's came from rank 0, checked there): the same error, if any
    cfg = distributed.check_can_distribute(ctx, check_settled(cfg))
    checkpoint = distributed.from_main(ctx, check_run_folder, cfg, what="receiving the checkpoint rank 0 resumes from")
    device = ctx.device                             # resolved once, by distributed.setup
    if checkpoint is not None and checkpoint["epoch"] >= cfg.epochs and not unfinished_files(
            Path(cfg.out), cfg.pictures and cfg.dataset == "fashion-mnist"):
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
            write_config(out, asdict(cfg))                  # on resume: --epochs may have grown
            if run.history:                         # the checkpoint is the record: metrics.csv follows it
                write_metrics(out, run.history)
        except BaseException:
            lock.release()
            if created:
                remove_empty_folder(out)
            raise
        return out

    out = distributed.from_main(ctx, open_run_folder, what="waiting for rank 0 to open the run folder")
    for line in [*run.notes, *header(cfg, len(run.train_ds), len(run.test_ds), run.device, run.start_epoch, out,
                                      run.ctx)]:
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
    source: object = None           # what the epochs read: a FashionMNISTSource (data.py) or an
                                    # ImageFolderSource (imagefolder.py)
    ctx: distributed.DistContext = field(default_factory=distributed.DistContext)
    warned: set = field(default_factory=set)   # unreadable images already named in a warning
    pixel_mean: torch.Tensor | None = None   # (28, 28) mean training image (--pixels mean-subtracted), else None


def prepare(cfg: TrainConfig, checkpoint: dict | None, ctx: distributed.DistContext | None = None) -> Run:
    """Load the data, build the learner, restore the checkpoint: every check that needs them, no file written.
    Under torchrun (ctx enabled): this rank's shard of the data, and the learner wrapped in DDP."""
    ctx = ctx if ctx is not None else distributed.DistContext(device=resolve_device(cfg.device))
    device = ctx.device
    notes = []
    channels = INPUT_SHAPES[cfg.variant][0]
    if cfg.dataset == "imagefolder":
        from torch_model.imagefolder import default_workers, open_image_folder

        workers = cfg.workers if cfg.workers is not None else default_workers()
        source = open_image_folder(cfg.data_dir, cfg.variant, cfg.resize, cfg.batch_size, cfg.seed, workers, device,
                                   cfg.mean, cfg.std, cfg.limit_train, cfg.limit_test, ctx.rank, ctx.world_size,
                                   share=lambda fn, *args, what: distributed.from_main(ctx, fn, *args, what=what),
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
        source = FashionMNISTSource(train_ds, test_ds, cfg.resize, channels, cfg.batch_size, ctx.rank,
                                      ctx.world_size, pixel_mean=mean)
    for split, ds in (("training", train_ds), ("test", test_ds)):
        if len(ds) == 0:
            where = f"--data-dir {cfg.data_dir}" if cfg.dataset == "imagefolder" else "Fashion-MNIST"
            raise ValueError(f"{where}: the {split} set holds no images")
    torch.manual_seed(cfg.seed)
    learner = make_learner(cfg.backend, cfg.lr, device, num_classes=len(source.classes), amp=cfg.amp, seed=cfg.seed,
                           channels_last=cfg.channels_last, variant=cfg.variant, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)
    distributed.seed_rank(ctx, cfg.seed)            # ranks 1..: their own dropout streams (rank 0: the seed's)
    history, start_epoch, best_acc = [], 0, -1.0
    if checkpoint is not None:
        path = Path(cfg.out) / "last.pt"
        try:
            learner.load_state_dict(checkpoint["learner"])
            if ctx.enabled or "rng_ranks" in checkpoint:
                note = distributed.restore_rng(ctx, checkpoint, cfg.seed, checkpoint["epoch"])
                notes += [note] if note else []
            else:
                restore_rng_state(checkpoint["rng"])
        except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
            what = f"no {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            raise ValueError(f"{path}: does not fit the {cfg.backend} backend's model and optimizer ({what})") from exc
        if mean is not None:                      # the recorded mean image (the same images give the same one)
            mean = source.pixel_mean = recorded_pixel_mean(checkpoint, str(path))
        history = list(checkpoint["history"])
        start_epoch = checkpoint["epoch"]
        best_acc = max((h["test_acc"] for h in history), default=-1.0)
    if ctx.enabled:
        learner = DistributedLearner(learner, ctx)   # after the restore: DDP starts from rank 0's weights
    return Run(cfg, device, train_ds, test_ds, learner, history, start_epoch, best_acc,
               checkpoint_bytes(learner, cfg.momentum), notes, source=source, ctx=ctx, pixel_mean=mean)


def train_epochs(run: Run, out: Path, on_epoch_end, log: Callable[[str], None]) -> str:
    """Epochs from where the run stands to cfg.epochs, each saved as it ends; returns the run's status."""
    cfg = run.cfg
    try:
        for epoch in range(run.start_epoch, cfg.epochs):
            if cfg.checkpoint:
                distributed.from_main(run.ctx, check_free_space, out, run.checkpoint_bytes,
                                      what="rank 0's free-space check")
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
            tqdm.write(estimate(cfg, rate, run.start_epoch, len(run.train_ds)))
        loss, logits = learner.step(X, y)
        if not math.isfinite(loss):
            raise NonFiniteLoss(f"loss became {loss} at epoch {epoch + 1}, step {step + 1}")
        loss_sum += loss * len(y)
        correct += (logits.argmax(dim=1) == y).sum().item()
        seen += len(y)
        bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.3f}", acc=f"{correct / max(seen, 1):.3f}")
        if (step + 1) % max(1, steps // 5) == 0 or step + 1 == steps:  # d2l's animator: 5 points an epoch
            g_loss, g_correct, g_seen = distributed.sum_over_ranks(ctx, loss_sum, correct, seen)
            curve.append([epoch + (step + 1) / steps, g_loss / max(g_seen, 1), g_correct / max(g_seen, 1)])
    loss_sum, correct, seen = distributed.sum_over_ranks(ctx, loss_sum, correct, seen,
                                                         what="summing the epoch's counts")
    if not seen:
        raise ValueError(f"none of the {len(run.train_ds)} training images could be read in epoch {epoch + 1}")
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    train_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    test_acc = accuracy(learner, run.source, ctx, cfg.progress, "test")
    skipped = report_skipped(run, log)
    return dict(epoch=epoch + 1, loss=loss_sum / seen, train_acc=correct / seen, test_acc=test_acc,
                examples_per_sec=seen / train_seconds, examples=int(seen), train_seconds=train_seconds,
                eval_seconds=time.perf_counter() - t1, curve=curve, skipped=skipped)


def report_skipped(run: Run, log: Callable[[str], None], most: int = 10) -> int:
    """The unreadable images of the epoch (training and evaluation, every rank's): each named in a warning the first
    time (at most `most` an epoch), all counted."""
    gathered = distributed.all_gather_object(run.ctx, run.source.take_skipped(), what="gathering skipped images")
    skipped = [s for rank in gathered for s in rank]
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
    rng_ranks = distributed.gather_rng_states(run.ctx) if run.ctx.enabled and cfg.checkpoint else None
    if not run.ctx.is_main:                         # rank 0 writes; the others keep the same history
        run.history.append(row)
        return
    inputs = {} if run.pixel_mean is None else {"pixel_mean": run.pixel_mean.cpu()}  # what the weights expect
    with stops_deferred():
        if cfg.checkpoint:
            try:
                if row["test_acc"] > run.best_acc:
                    save_checkpoint(out / "best.pt", dict(epoch=epoch, test_acc=row["test_acc"],
                                                          model=run.learner.model_state_dict(), config=asdict(cfg),
                                                          **inputs))
                    run.best_acc = row["test_acc"]
                rng = dict(rng=rng_state()) if rng_ranks is None else dict(rng=rng_ranks[0], rng_ranks=rng_ranks)
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
    """metrics.csv and curves.png of the epochs done (also after a Ctrl-C or SIGTERM, a NaN or a failed save); the NaN
    stop says what the folder really holds."""
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


def curves_title(run: Run) -> str:
    cfg = run.cfg
    model = "AlexNet" if cfg.variant == "d2l" else f"AlexNet ({cfg.variant})"
    return (f"{model} ({cfg.backend}, {run.device}), lr {cfg.lr}, batch {cfg.batch_size}, seed {cfg.seed}, "
            f"{len(run.train_ds)} train / {len(run.test_ds)} test images")


# ----------------------------------------------------------------------------------------------- configuration


def run(args: argparse.Namespace) -> int:
    """One process, or one of torchrun's. Under torchrun rank 0 settles the settings, prints and writes; a failure
    on rank 0 is its one line (the others stop quietly), a lost rank is one line on each of the others (exit status
    1); every process ends through distributed.exit_now (not the process group's teardown, which can abort)."""
    ctx = distributed.setup(args.device or "auto", args.dist_timeout or distributed.DEFAULT_TIMEOUT_S)
    if not ctx.enabled:            # (under torchrun the agent stops its workers with SIGTERM when one has failed)
        with sigterm_stops():
            return train_from_args(args, ctx)
    try:
        status = train_from_args(args, ctx)   # no barrier after it: rank 0 may still draw pictures as the others leave
    except distributed.RankZeroError:
        status = 2                                  # rank 0 printed why
    except distributed.RankFailure as exc:
        print(f"alexnet train: error: {exc}", file=sys.stderr, flush=True)
        status = 1
    except (ValueError, OSError) as exc:            # what cli.main prints for one process
        print(f"alexnet train: error: {exc}", file=sys.stderr, flush=True)
        status = 2
    except KeyboardInterrupt:
        print("alexnet train: interrupted", file=sys.stderr, flush=True)
        status = 130
    distributed.exit_now(status)


def train_from_args(args: argparse.Namespace, ctx: distributed.DistContext) -> int:
    """The command: settle the config (rank 0, sent to the others), fit, report; the exit status."""
    cfg = distributed.from_main(ctx, lambda: distributed.check_can_distribute(ctx, config_from_args(args)),
                                what="receiving the run's settings from rank 0")
    return report(fit(cfg, ctx=ctx), cfg, ctx)


def report(result: TrainResult, cfg: TrainConfig, ctx: distributed.DistContext) -> int:
    """Print the outcome (rank 0): d2l's two lines and the run folder; the exit status."""
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
