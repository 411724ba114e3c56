"""The run folder: what a run writes and how, so that nothing is lost whatever stops the process.

    R/config.json   the settings (config.TrainConfig), written when the run opens the folder
    R/last.pt       THE record of the run: weights, optimizer, RNG states, settings and the metrics of every epoch
    R/best.pt       the weights of the epoch with the best test accuracy (what evaluate/visualize/export read)
    R/metrics.csv   last.pt's history as a table, written after it; curves.png drawn from it
    R/.lock         the pid of the run using the folder (a second run is refused; a dead run's lock is taken over)

Every file is written whole beside the one it replaces and renamed over it (torch_model.files.atomic_write), so a
kill -9 at any instant leaves the previous version or the new one, plus at most a temporary `.NAME.xxxx` that the
next run on the folder clears. A Ctrl-C (or SIGTERM) while an epoch is being saved waits until it is saved.
"""
from __future__ import annotations

import csv
import json
import os
import zipfile
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from torch_model.data import CLASS_NAMES, PIXELS
from torch_model.files import WriteError, atomic_write, current_umask
from torch_model.learners import Learner
from torch_model.model import INPUT_SHAPES, VARIANTS, check_resize

LOCK_NAME = ".lock"
# every file a run writes into its folder: a new run refuses a folder that holds any of them (a resume continues them)
RUN_FILES = ("config.json", "metrics.csv", "curves.png", "last.pt", "best.pt", "confusion.png", "mistakes.png",
             "evaluation.json", "filters.png")
PICTURES = ("confusion.png", "mistakes.png", "evaluation.json", "filters.png")   # drawn once the last epoch is saved


def say(line: str) -> None:
    print(line, flush=True)


def write_config(out: Path, settings: dict) -> None:
    atomic_write(out / "config.json", lambda f: f.write(json.dumps(settings, indent=2) + "\n"), mode="w")


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


def unfinished_files(out: Path, pictures: bool) -> list[str]:
    """What a finished run's folder still lacks (it was stopped while drawing them): resuming it draws them."""
    names = ["curves.png", *(PICTURES if pictures else ())]
    return [name for name in names if not (out / name).exists()]


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


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)   # Ctrl-C; `kill PID`, `timeout`, a scheduler's stop


@contextmanager
def sigterm_stops() -> Iterator[None]:
    """Inside the block a SIGTERM stops the run as a Ctrl-C does (KeyboardInterrupt): the epoch being saved is
    finished, curves.png is drawn, and `--resume` continues it (Python's default is to die on the spot). The previous
    handler is put back after; nothing changes off the main thread, where signals cannot be handled."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def stops_deferred() -> Iterator[None]:
    """Hold a Ctrl-C or SIGTERM that arrives inside the block until the block is done, then raise KeyboardInterrupt.
    A signal the process ignores (SIGINT of a job started with `&` by a script) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(sig, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.default_int_handler)
    if pending:
        raise KeyboardInterrupt


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def read(path: str | Path, flag: str = "") -> dict:
    """Whatever torch.save wrote at path, as plain tensors and values (weights_only: no code runs); ValueError
    naming the file when it is not a checkpoint. `load` (below) checks the weights inside; the resume, last.pt."""
    where = f"{flag} {path}".strip()
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise ValueError(f"{where}: not a readable checkpoint (not written by torch.save, or damaged)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file: name it, never a bare traceback (nor torch's paragraphs of advice)
        text = str(exc).split("WeightsUnpickler error:")[-1]      # torch's own reason, after its advice
        reason = next((line.strip() for line in text.splitlines() if line.strip()), "")
        raise ValueError(f"{where}: not a readable checkpoint ({exc.__class__.__name__}: {reason})") from exc


# what last.pt holds (save_epoch writes it); best.pt holds epoch, test_acc, model and config only
LAST_KEYS = ("epoch", "learner", "rng", "config", "history")


def load_resume_checkpoint(path: Path) -> dict:
    """last.pt, checked to be one: ValueError naming the file and what is missing (a best.pt copied over it, any
    other torch.save'd object). A resume reads it twice, for its settings (config_from_args) and for its state
    (fit): the one record of the run, read from disk each time rather than kept in between."""
    path = Path(path)
    if not path.is_file():
        rows = metrics_rows(path.parent)
        why = (f"its metrics.csv records {rows} epoch(s) but no checkpoint holds them (a --no-checkpoint run cannot "
               f"be continued)" if rows else f"{path.parent / 'config.json'} not found: no run was started there")
        raise ValueError(f"--resume: {path} not found; {why}")
    checkpoint = read(path)
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


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
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


def read_metrics(out: Path) -> list[dict[str, float]]:
    """write_metrics' rows back, every value a float; ValueError naming the file when it is missing, unreadable or
    holds no epoch row with METRIC_FIELDS."""
    path = Path(out) / "metrics.csv"
    try:
        with open(path, newline="") as f:
            rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not readable ({exc})") from None
    if not rows or not all(set(METRIC_FIELDS) <= set(row) for row in rows):
        raise ValueError(f"{path}: no epoch rows with {', '.join(METRIC_FIELDS)}")
    return rows


# ----------------------------------------------------------------------------------------------- reading

@dataclass
class Checkpoint:
    """The weights of one trained AlexNet (torch's state_dict keys, float32 CPU tensors) and its run's config
    (which says the variant, d2l or paper, and the resize)."""
    path: Path
    state: dict[str, torch.Tensor]
    config: dict = field(default_factory=dict)
    epoch: int | None = None
    pixel_mean: torch.Tensor | None = None   # (28, 28): the run fed raw 0..255 pixels minus this mean image
    recorded: bool = True                    # False: no run config inside or beside it (a bare state_dict)

    @property
    def resize(self) -> int:
        return int(self.config.get("resize") or INPUT_SHAPES[self.variant][1])

    @property
    def seed(self) -> int | None:
        return self.config.get("seed")

    @property
    def variant(self) -> str:
        return self.config.get("variant") or "d2l"     # load() tells a bare state_dict's from its keys

    @property
    def channels(self) -> int:
        return INPUT_SHAPES[self.variant][0]           # grey images repeated to 3 channels for the paper's network

    @property
    def pixels(self) -> str:
        return self.config.get("pixels") or "unit"     # a bare state_dict: the seed's [0, 1] pixels assumed

    def feeding(self) -> str:
        """How the run fed its network, in words: input size, channels and pixels."""
        grey = ", each grey image repeated to 3 channels" if self.channels == 3 else ""
        pixels = ("raw 0..255 pixels minus the run's mean training image" if self.pixel_mean is not None
                  else "pixels in [0, 1]")
        return f"{self.resize}x{self.resize} input{grey}, {pixels}"

    def assumption_note(self) -> str | None:
        """For a checkpoint that records no run config: the one line saying what is assumed about its inputs."""
        if self.recorded:
            return None
        default = " (the paper variant's default)" if self.variant == "paper" else ""
        return (f"note: {self.path} records no run config (a bare state_dict): assuming its {self.variant} AlexNet "
                f"was fed a {self.feeding()}; a --pixels mean-subtracted run{default} was fed raw 0..255 pixels minus "
                f"its mean training image, which only its best.pt or last.pt carries")

    def describe(self) -> str:
        return f"{self.path}" + (f" (epoch {self.epoch})" if self.epoch is not None else "")


def _expected_shapes(variant: str) -> dict[str, tuple[int, ...]]:
    from torch_model.model import alexnet

    with torch.device("meta"):                      # shapes only: no memory, no init
        net = alexnet(len(CLASS_NAMES), init=False, variant=variant)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def load(path: str | Path, flag: str = "--checkpoint") -> Checkpoint:
    """The trained weights of best.pt, last.pt or a bare state_dict, checked; every problem is a ValueError naming
    the file: missing, unreadable, no weights, another network's weights than its variant's (shape, number of
    classes), non-finite weights, a resize the model cannot take."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path}: is a folder; pass a checkpoint file such as {path / 'best.pt'}")
    if not path.is_file():
        raise ValueError(f"{flag} {path}: no such file")
    obj = read(path, flag)
    if not isinstance(obj, dict):
        raise ValueError(f"{flag} {path}: holds a {type(obj).__name__}, not a checkpoint dict")
    state = _find_weights(obj)
    if state is None:
        keys = ", ".join(map(str, list(obj)[:6])) or "none"
        raise ValueError(f"{flag} {path}: no model weights inside (keys: {keys}); expected alexnet train's "
                         f"best.pt or last.pt, or a state_dict")
    config = obj.get("config") if isinstance(obj.get("config"), dict) else _config_beside(path, flag)
    recorded = bool(config)
    if "variant" not in config:   # a bare state_dict: its keys tell (the paper's has a 22.weight)
        config = {**config, "variant": "paper" if "22.weight" in state else "d2l"}
    ckpt = Checkpoint(path, {}, config, obj.get("epoch") if isinstance(obj.get("epoch"), int) else None,
                      recorded=recorded)
    check_fashion_mnist_run(ckpt, flag)
    expected = _expected_shapes(ckpt.variant)
    last = [k for k in expected if k.endswith(".weight")][-1]          # the output layer: (classes, 4096)
    if last in state and state[last].ndim == 2 and state[last].shape[0] != len(CLASS_NAMES):
        raise ValueError(f"{flag} {path}: a {state[last].shape[0]}-class model; Fashion-MNIST has "
                         f"{len(CLASS_NAMES)} classes")
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{flag} {path}: not the {ckpt.variant} AlexNet's weights (missing keys {missing[:4]}, "
                         f"unexpected keys {unexpected[:4]})")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise ValueError(f"{flag} {path}: {key} has shape {tuple(state[key].shape)}, the {ckpt.variant} "
                             f"AlexNet's is {shape}")
        if not torch.isfinite(state[key]).all():
            raise ValueError(f"{flag} {path}: {key} holds NaN or inf (weights of a diverged run)")
    ckpt.state = {k: state[k].detach().to(torch.float32).contiguous() for k in expected}  # NCHW, float32, CPU
    if ckpt.pixels == "mean-subtracted":           # --pixels mean-subtracted (the paper variant's default)
        ckpt.pixel_mean = recorded_pixel_mean(obj, f"{flag} {path}")
    check_resize(ckpt.resize, flag=f"{flag} {path}: the run's resize", variant=ckpt.variant)
    return ckpt


def check_fashion_mnist_run(ckpt: Checkpoint, flag: str = "--checkpoint") -> None:
    """evaluate, visualize and export feed a network Fashion-MNIST's test images, the way `alexnet train` fed them
    (its pixels, its class names): a checkpoint of another dataset, or of a variant or pixel mode they do not know,
    is refused naming the checkpoint and what it was trained on."""
    config, path = ckpt.config, ckpt.path
    if ckpt.variant not in VARIANTS:
        raise ValueError(f"{flag} {path}: the run's variant {ckpt.variant!r} is none of {VARIANTS}")
    dataset = config.get("dataset") or "fashion-mnist"   # a bare state_dict: Fashion-MNIST assumed
    if dataset != "fashion-mnist":
        where = f" --data-dir {config['data_dir']}" if config.get("data_dir") else ""
        raise ValueError(f"{flag} {path}: trained on --dataset {dataset}{where}, not Fashion-MNIST; evaluate, "
                         f"visualize and export work on Fashion-MNIST's test images, class names and pixels only, "
                         f"which would give meaningless numbers for this network (its accuracy on its own "
                         f"evaluation images is in its run's metrics.csv)")
    if ckpt.pixels not in PIXELS:
        raise ValueError(f"{flag} {path}: the run fed its network --pixels {ckpt.pixels!r}, none of {PIXELS}")


def _find_weights(obj: dict) -> dict[str, torch.Tensor] | None:
    """best.pt: obj["model"]; last.pt: obj["learner"]["model"]; a bare state_dict: obj itself."""
    for candidate in (obj.get("model"), (obj.get("learner") or {}).get("model") if isinstance(obj.get("learner"),
                                                                                            dict) else None, obj):
        if isinstance(candidate, dict) and candidate and all(isinstance(v, torch.Tensor) for v in candidate.values()):
            return candidate
    return None


def _config_beside(path: Path, flag: str) -> dict:
    config_path = path.parent / "config.json"
    if not config_path.is_file():
        return {}
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{flag} {path}: {config_path} is not readable JSON ({exc})") from exc
    return config if isinstance(config, dict) else {}


def recorded_pixel_mean(obj: dict, where: str) -> torch.Tensor:
    """The (28, 28) mean training image a --pixels mean-subtracted run centred its inputs with (best.pt and last.pt
    carry it: a resume and an evaluation subtract the same one)."""
    mean = obj.get("pixel_mean")
    if not isinstance(mean, torch.Tensor) or tuple(mean.shape) != (28, 28):
        raise ValueError(f"{where}: a --pixels mean-subtracted run's checkpoint without its (28, 28) 'pixel_mean' "
                         f"(the mean training image its inputs were centred with)")
    return mean.to(torch.float32)
