"""The settings of a training run, settled once: `TrainConfig`, each variant's defaults, the presets, the flags of
`alexnet train` and `config_from_args`, which turns argv into the run's config (on --resume: the run's own record).

    argv --(configure: the flags)--> argparse.Namespace --(config_from_args)--> TrainConfig, every default decided

A new run: the given flags, then the preset (quick on a CPU, full on CUDA), then the variant's defaults
(VARIANT_DEFAULTS) and the device's precision (torch_model.device). A resumed run: the settings its checkpoint
recorded (config.json beside it when the run was stopped before its first epoch was saved); a given flag must agree
with them, except --epochs (extends the run) and where and how it runs (RUNTIME_KEYS).
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from torch_model import distributed
from torch_model.checkpoint import RUN_FILES, RunLock, check_out_folder, load_resume_checkpoint, metrics_rows
from torch_model.data import PIXELS
from torch_model.device import AMP_CHOICES, check_amp, cpu_default_amp, default_backend, resolve_device
from torch_model.learners import LEARNER_BACKENDS, check_backend
from torch_model.model import INPUT_SHAPES, VARIANTS, check_resize

PRESETS = {
    # the seed (d2l): all 60,000 training images, 10 epochs
    "full": dict(epochs=10, limit_train=None, limit_test=None),
    # fits in ~10 minutes on 2 CPU cores: one epoch on the first QUICK_LIMIT_TRAIN images, then the full test set
    "quick": dict(epochs=1, limit_train=None, limit_test=None),
}
# the quick preset's training images per (amp, channels_last), at most ~10 minutes on 2 idle cores at the rates of
# docs/benchmarks/README.md (CPU section): bf16 + channels_last trains ~120 (avx512_bf16) to ~225 (AMX) images/s,
# so one whole epoch, the seed's first (5 to 8 minutes); fp32 NCHW ~32 images/s, so 100 steps of 128
ESTIMATE_AFTER_STEPS = 20      # the run's duration is estimated from its own rate once this many steps are timed
QUICK_LIMIT_TRAIN = {("none", False): 12800, ("bf16", True): 60000}
# Each variant's settings when its flag is not given. d2l: the seed's plain SGD on [0, 1] pixels at 224x224. paper:
# Krizhevsky et al.'s momentum and weight decay (section 5) at a tenth of their starting lr of 0.01 (with 10 classes
# instead of 1000, lr 0.01 throws fc8 far past the class frequencies in the first steps and kills most of fc7's ReLUs:
# docs/paper_variant.md), on their pixels, raw 0..255 values minus the mean training image (section 2; for the
# N(0, 0.01) init [0, 1] values are 255 times too faint to tell one image from another in fc7), at 227x227.
VARIANT_DEFAULTS = {
    "d2l": dict(lr=0.01, momentum=0.0, weight_decay=0.0, pixels="unit", resize=INPUT_SHAPES["d2l"][1]),
    "paper": dict(lr=0.001, momentum=0.9, weight_decay=5e-4, pixels="mean-subtracted", resize=INPUT_SHAPES["paper"][1]),
}
# what a run is: recorded in its checkpoint (and config.json); a resumed run takes every one from there
RESUME_KEYS = ("batch_size", "lr", "resize", "seed", "backend", "amp", "channels_last", "limit_train", "limit_test",
               "variant", "momentum", "weight_decay", "dataset", "mean", "std", "pixels")
# where a resumed run may differ from the recorded one: where it runs and how it reports
RUNTIME_KEYS = ("device", "data_dir", "progress", "workers", "dist_timeout")
# decided by this process, not the record, when not given: the process context (distributed.setup) is made from the
# flags before any record is read, so the settings it was made from must be the ones the run is checked with
PROCESS_KEYS = ("device", "dist_timeout")
# what resolve_config decides when it is None
SETTLED_BY_RESOLVE = ("lr", "resize", "backend", "amp", "channels_last", "momentum", "weight_decay", "pixels")
DATASETS = ("fashion-mnist", "imagefolder")
MAX_SEED = (2**63 - 1) // 1000 - 1000   # seed * 1000 + epoch stays a valid torch seed


@dataclass
class TrainConfig:
    """One run. None means "decided for the device and variant" (resolve_config fills it in)."""
    epochs: int = 10
    batch_size: int = 128
    lr: float | None = None          # None: the variant's (VARIANT_DEFAULTS: 0.01 d2l, 0.001 paper)
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
    momentum: float | None = None    # None: the variant's (VARIANT_DEFAULTS)
    weight_decay: float | None = None
    pixels: str | None = None        # None: the variant's (VARIANT_DEFAULTS: unit d2l, mean-subtracted paper)
    preset: str = "custom"
    progress: bool = True
    checkpoint: bool = True          # write last.pt / best.pt each epoch (the seed-run benchmark turns it off)
    pictures: bool = False           # confusion/mistakes/filters PNGs at the end (the CLI's default; --no-pictures)
    # --- image folders and torchrun (torch_model/imagefolder.py, torch_model/distributed.py)
    dataset: str = "fashion-mnist"   # fashion-mnist | imagefolder (--data-dir: CLASS/ folders, or train/ [+ val/])
    workers: int | None = None       # DataLoader decoding processes for imagefolder (None: up to 8, CPUs allowing)
    mean: list[float] | None = None  # per-channel normalization (imagefolder); None: measured on the training set
    std: list[float] | None = None
    dist_timeout: float = distributed.DEFAULT_TIMEOUT_S  # seconds a rank waits for the others (torchrun)


def resolve_config(cfg: TrainConfig, device: torch.device | None = None) -> TrainConfig:
    """The config with every None decided (backend, amp, channels_last, resize, lr, momentum, weight_decay, pixels)
    and every value checked: ValueError naming the flag. Does no I/O, so a bad run fails before it makes a folder.
    device: cfg.device already resolved (resolve_device), when the caller has it."""
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
    defaults = VARIANT_DEFAULTS[cfg.variant]
    for name in ("lr", "momentum", "weight_decay"):
        default = defaults[name]
        value = getattr(cfg, name)
        if value is not None and not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"--{name.replace('_', '-')} must be a number >= 0, got {value}")
        values[name] = float(default if value is None else value)
    if cfg.pixels is not None and cfg.pixels not in PIXELS:
        raise ValueError(f"--pixels must be one of {PIXELS}, got {cfg.pixels!r}")
    if cfg.dataset != "fashion-mnist" and cfg.pixels == "mean-subtracted":
        raise ValueError("--pixels mean-subtracted is for Fashion-MNIST: an image folder is normalized by its "
                         "per-channel --mean/--std (measured on the training images when not given)")
    default_pixels = defaults["pixels"] if cfg.dataset == "fashion-mnist" else "unit"
    values["pixels"] = default_pixels if cfg.pixels is None else cfg.pixels
    values["resize"] = defaults["resize"] if cfg.resize is None else cfg.resize
    check_resize(values["resize"], "--resize", cfg.variant)
    device = device if device is not None else resolve_device(cfg.device)
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


def check_settled(cfg: TrainConfig) -> TrainConfig:
    """cfg, if nothing in it is left to decide: what `fit` trains is settled once, by config_from_args (the command)
    or resolve_config (a program building its own TrainConfig), never again on the way."""
    undecided = [name for name in SETTLED_BY_RESOLVE if getattr(cfg, name) is None]
    if undecided:
        raise ValueError(f"TrainConfig not settled ({', '.join(undecided)} undecided): pass it through "
                         f"config.resolve_config (the command's config_from_args does) before training with it")
    return cfg


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


def header(cfg: TrainConfig, n_train: int, n_test: int, device, start_epoch: int, out: Path,
           ctx: distributed.DistContext) -> list[str]:
    """What runs, on what, and why: the settled config as the lines printed before the first epoch."""
    lines = []
    if cfg.preset.startswith("quick") and cfg.dataset == "imagefolder":
        lines.append(f"preset quick (a CPU, no CUDA): {cfg.epochs} epoch(s) on {n_train} training images (at most "
                     f"{quick_limit_train(cfg)}); `--preset full` trains {PRESETS['full']['epochs']} epochs on all")
    elif cfg.preset.startswith("quick"):
        budget = " (~10 minutes on 2 idle cores)" if cfg.preset == "quick" and cfg.variant == "d2l" else ""
        what = "the seed model and hyper-parameters" if cfg.variant == "d2l" else f"the {cfg.variant} AlexNet"
        images = f"all {n_train}" if cfg.limit_train is None or n_train == 60000 else f"the first {n_train}"
        lines.append(f"preset quick (a CPU, no CUDA): {what} on {images} "
                     f"training images for {cfg.epochs} epoch(s){budget}, tested on {n_test} real test images. The "
                     f"full seed run is `alexnet train --preset full` (this run prints what it would take here once "
                     f"its first {ESTIMATE_AFTER_STEPS} steps are timed; minutes on a GPU).")
    lines.append(f"training on {device} with the {cfg.backend} backend in {precision_note(cfg, device)}: "
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
    if ctx.enabled:
        shard = math.ceil(cfg.batch_size / ctx.world_size)
        lines.append(f"torchrun: {ctx.world_size} processes ({ctx.backend}); --batch-size {cfg.batch_size} is the "
                     f"global batch, each process takes its shard (~{shard} images) of every one and DDP averages "
                     f"the gradients: the same step as one process, lr {cfg.lr} unchanged")
    if cfg.resume and start_epoch == 0:
        lines.append(f"resuming {out}: no epoch of it was saved, so it starts from the first of {cfg.epochs}")
    elif cfg.resume:
        lines.append(f"resuming {out}: {start_epoch} of {cfg.epochs} epoch(s) done")
    if cfg.backend == "triton" and device.type == "cpu":
        lines.append("note: on a CPU the Triton kernels run in the Triton interpreter (one program instance at a time, "
                     "in Python): minutes per batch at 224x224. Meant for stepping through a kernel, e.g. with a tiny "
                     "--limit-train; train on a GPU for speed.")
    return lines


def estimate(cfg: TrainConfig, rate: float, start_epoch: int, n_train: int) -> str:
    """How long the rest of the run and the seed's full run take at `rate` training images/s (measured on this run's
    steps; evaluation is forward only and adds about a fifth of that per epoch)."""
    left = (cfg.epochs - start_epoch) * n_train
    full = PRESETS["full"]["epochs"] * 60000

    def hours(images: float) -> str:
        seconds = images / rate
        return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"
    line = (f"measured {rate:.1f} training images/s over steps 2..{ESTIMATE_AFTER_STEPS + 1}: this run's "
            f"{cfg.epochs - start_epoch} epoch(s) of training take ~{hours(left)}")
    if cfg.dataset == "fashion-mnist" and (cfg.limit_train or cfg.epochs != PRESETS["full"]["epochs"]):
        line += f"; the seed's full run (10 epochs of 60,000) ~{hours(full)} at this rate"
    return line


def precision_note(cfg: TrainConfig, device: torch.device) -> str:
    """What the header says about the precision and layout, and why."""
    what = ("bf16 autocast" if cfg.amp == "bf16" else "fp32") + (" + channels_last" if cfg.channels_last else "")
    amp, channels_last, why = cpu_default_amp(device, cfg.backend)
    return f"{what} ({why if (amp, channels_last) == (cfg.amp, cfg.channels_last) else 'as asked'})"


def quick_limit_train(cfg: TrainConfig) -> int:
    """The quick preset's training images for the precision and layout that run: ~10 minutes on 2 CPU cores."""
    return QUICK_LIMIT_TRAIN.get((cfg.amp, cfg.channels_last), QUICK_LIMIT_TRAIN[("none", False)])


def recorded_settings(out: Path) -> tuple[dict, Path]:
    """The settings of the run in `out` and the file they come from, its one record: last.pt (config.json only
    while no epoch is saved)."""
    if (out / "last.pt").exists():
        return {**load_resume_checkpoint(out / "last.pt")["config"]}, out / "last.pt"
    path = out / "config.json"
    if not path.is_file():
        where = f"{out} is not a folder" if not out.is_dir() else f"{path} not found"
        raise ValueError(f"--resume: {where} (pass the folder of the run to continue as --out)")
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"--resume: {path}: not readable as JSON ({exc})") from exc
    names = {f.name for f in fields(TrainConfig)}
    if not isinstance(saved, dict) or not names >= set(saved) >= set(RESUME_KEYS):
        raise ValueError(f"--resume: {path}: not the config.json of a run of this version of `alexnet train`")
    return saved, path


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
    saved = checkpoint["config"]
    changed = [f"{k}: {saved.get(k)!r} -> {getattr(cfg, k)!r}" for k in RESUME_KEYS if saved.get(k) != getattr(cfg, k)]
    if changed:
        raise ValueError(f"--resume: settings differ from the run in {out}: {'; '.join(changed)}")
    done = checkpoint["epoch"]
    if cfg.epochs < done:
        raise ValueError(f"--epochs {cfg.epochs}: the run in {out} has already trained {done} epoch(s); pass a "
                         f"larger --epochs to extend it, or leave it out to finish the run as recorded")
    return checkpoint


def resume_config(out: Path, given: dict) -> TrainConfig:
    """`--resume --out R` with the flags `given` on the command line: R's recorded run, settled. A given setting must
    agree with the record, except --epochs (may extend the run) and where/how it runs (RUNTIME_KEYS); the device and
    the torchrun timeout are the flags' (default: auto, as a new run's), never the recorded ones: a run recorded on
    cuda resumes on the machine it is continued on, checked for that machine."""
    saved, record = recorded_settings(out)
    saved.update({key: getattr(TrainConfig, key) for key in PROCESS_KEYS})   # the flags' defaults, as for ctx
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
                         f"recorded in {record}; drop {'it' if len(differ) == 1 else 'them'} to continue "
                         f"the run as recorded, or start a new run with another --out")
    saved.update(resume=True, out=str(out))
    try:                                            # the record checked against this machine (device, precision)
        return resolve_config(TrainConfig(**saved))
    except ValueError as exc:                       # a value of the record, not a flag given: name the file
        raise ValueError(f"--resume: the run recorded in {record} cannot run here: {exc}") from None


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
                             f"(default {distributed.DEFAULT_TIMEOUT_S:g}): a rank that died or hangs stops the run, "
                             f"no hang")
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
    device = resolve_device(given.get("device", "auto"))
    if preset == "auto":
        preset = "full" if device.type == "cuda" else "quick"
    cfg = resolve_config(TrainConfig(**given, out=args.out, **runtime), device)
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
