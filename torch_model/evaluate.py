"""`alexnet evaluate`: what a trained AlexNet gets right and wrong on the Fashion-MNIST test set.

    alexnet evaluate --checkpoint runs/R/best.pt                             # torch, all 10,000 test images
    alexnet evaluate --checkpoint runs/R/best.pt --backend numpy --limit-test 500
    alexnet evaluate --checkpoint runs/R/best.pt --backend triton --limit-test 2   # the interpreter on a CPU: slow

Prints the test accuracy, a per-class table and the confusion matrix, and writes into --out (default: the
checkpoint's folder) confusion.png, mistakes.png (the most confident mistakes, with the true and predicted class
and the confidence) and evaluation.json (the same numbers). Evaluation is float32 without autocast on every
backend, so one checkpoint gives the same predictions through torch, our Triton kernels and numpy_ref (tested).

A checkpoint is what `alexnet train` writes (best.pt: the weights; last.pt: the weights inside the learner's
state), or a bare state_dict; the run's config (inside the checkpoint, else config.json beside it) says the
resize. Per class c, from the confusion matrix M (rows: true class, columns: predicted class), N images:
    recall    = M[c, c] / sum(M[c, :])   (of the images of class c, the fraction classified c)
    precision = M[c, c] / sum(M[:, c])   (of the images classified c, the fraction that are c)
    accuracy  = (N - sum(M[c, :]) - sum(M[:, c]) + 2 M[c, c]) / N   (c against the rest: right about "is it c?")

`write_run_pictures(run_dir, learner, test_ds, ...)` is what `alexnet train` calls at the end of a run.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from torch_model.checkpoint import Checkpoint, load
from torch_model.data import CLASS_NAMES, FashionMNIST, batches, load_fashion_mnist
from torch_model.files import atomic_write
from torch_model.model import INPUT_SHAPES
from torch_model.plots import plot_confusion, plot_filters, plot_mistakes

EVAL_BACKENDS = ("torch", "triton", "numpy")



# ----------------------------------------------------------------------------------------------- predictions

def make_predictor(ckpt: Checkpoint, backend: str = "torch", device: torch.device | str = "cpu"):
    """A Learner (torch_model/learners.py) holding the checkpoint's weights in float32, in eval mode:
    torch and triton through torch_model.alexnet(backend=...), numpy through numpy_ref (NumpyLearner)."""
    device = torch.device(device)
    if backend not in EVAL_BACKENDS:
        raise ValueError(f"--backend must be one of {EVAL_BACKENDS}, got {backend!r}")
    if backend == "numpy":
        if device.type != "cpu":
            raise ValueError("--backend numpy runs on the CPU only; use --device cpu")
        from torch_model.learners import NumpyLearner

        learner = NumpyLearner(ckpt.state, lr=0.01, num_classes=len(CLASS_NAMES),   # lr unused: no step is taken
                               variant=ckpt.variant)
    else:
        from torch_model.learners import TorchLearner
        from torch_model.model import alexnet

        net = alexnet(len(CLASS_NAMES), backend=backend, init=False, variant=ckpt.variant)
        net.load_state_dict(ckpt.state)
        learner = TorchLearner(net, lr=0.01, device=device)
    learner.eval()
    return learner


def predict_dataset(learner, ds: FashionMNIST, batch_size: int = 128, resize: int = 224, progress: bool = True,
                    desc: str = "evaluate", channels: int = 1, pixel_mean: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (N, classes) float32 on the CPU for every image of ds, in order, dropout off; a tqdm bar per batch.
    channels: the model's input channels (the grey image is repeated, as `alexnet train` feeds the paper's net)."""
    learner.eval()
    out = []
    bar = tqdm(batches(ds, batch_size, resize, channels=channels, pixel_mean=pixel_mean),
               total=math.ceil(len(ds) / batch_size), desc=desc, unit="batch", leave=False, disable=not progress,
               dynamic_ncols=True)
    for X, _ in bar:                                             # X (B, channels, R, R), as the run fed them
        out.append(learner.predict(X).float().cpu())             # (B, classes)
    return torch.cat(out)                                        # (N, classes)


# ----------------------------------------------------------------------------------------------- the numbers

@dataclass
class Evaluation:
    """Labels and logits of N test images, and what follows from them."""
    labels: np.ndarray            # (N,) int64
    logits: np.ndarray            # (N, C) float32

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.logits = np.asarray(self.logits, dtype=np.float64)
        z = self.logits - self.logits.max(axis=1, keepdims=True)  # (N, C), stable softmax
        self.probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)   # (N, C)
        self.preds = self.logits.argmax(axis=1)                  # (N,)
        C = self.logits.shape[1]
        self.confusion = np.zeros((C, C), dtype=np.int64)       # (C, C): rows true, columns predicted
        np.add.at(self.confusion, (self.labels, self.preds), 1)

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / self.n)

    @property
    def confidence(self) -> np.ndarray:
        return self.probs[np.arange(self.n), self.preds]        # (N,) probability of the predicted class

    def per_class(self) -> list[dict]:
        M, N = self.confusion, self.n
        rows = []
        for c, name in enumerate(CLASS_NAMES[:M.shape[0]]):
            tp, actual, predicted = int(M[c, c]), int(M[c, :].sum()), int(M[:, c].sum())
            rows.append(dict(name=name, images=actual, predicted=predicted,
                             accuracy=(N - actual - predicted + 2 * tp) / N,
                             precision=tp / predicted if predicted else float("nan"),
                             recall=tp / actual if actual else float("nan")))
        return rows

    def mistakes(self) -> np.ndarray:
        """Indices of the misclassified images, the most confident mistakes first."""
        wrong = np.flatnonzero(self.preds != self.labels)       # (W,)
        return wrong[np.argsort(-self.confidence[wrong], kind="stable")]

    def top_confusions(self, k: int = 5) -> list[tuple[str, str, int]]:
        """The k largest off-diagonal cells: (true class, predicted class, count)."""
        off = self.confusion.copy()
        np.fill_diagonal(off, 0)
        order = np.argsort(-off, axis=None, kind="stable")[:k]
        return [(CLASS_NAMES[i], CLASS_NAMES[j], int(off[i, j])) for i, j in
                (np.unravel_index(o, off.shape) for o in order) if off[i, j] > 0]

    def to_json(self) -> dict:
        nan_to_none = lambda v: None if isinstance(v, float) and math.isnan(v) else v  # noqa: E731
        return dict(images=self.n, accuracy=self.accuracy, classes=list(CLASS_NAMES),
                    per_class=[{k: nan_to_none(v) for k, v in row.items()} for row in self.per_class()],
                    confusion=self.confusion.tolist(), confusion_axes="rows: true class, columns: predicted class",
                    top_confusions=[dict(true=t, predicted=p, count=c) for t, p, c in self.top_confusions()])


def format_report(ev: Evaluation) -> str:
    """The per-class table and the confusion matrix as text."""
    fmt = lambda v: "     -" if math.isnan(v) else f"{v:6.3f}"  # noqa: E731
    lines = [f"{'class':<11} {'images':>6} {'accuracy':>8} {'precision':>9} {'recall':>6}"]
    for r in ev.per_class():
        lines.append(f"{r['name']:<11} {r['images']:>6} {fmt(r['accuracy']):>8} {fmt(r['precision']):>9} "
                     f"{fmt(r['recall']):>6}")
    lines.append("(accuracy: class against the rest; precision: of those predicted the class; recall: of the class)")
    short = [n[:7] for n in CLASS_NAMES]
    lines += ["", "confusion matrix (rows: true class, columns: predicted class)",
              f"{'':<11}" + "".join(f"{s:>8}" for s in short)]
    for name, row in zip(CLASS_NAMES, ev.confusion):
        lines.append(f"{name:<11}" + "".join(f"{v:>8}" for v in row))
    top = ", ".join(f"{t} -> {p} ({c})" for t, p, c in ev.top_confusions())
    if top:
        lines += ["", f"most frequent confusions: {top}"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- pictures

def write_evaluation(out: Path, ev: Evaluation, images: np.ndarray, what: str = "") -> list[Path]:
    """confusion.png, mistakes.png and evaluation.json into out (atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    suffix = f" - {what}" if what else ""
    written = [plot_confusion(ev, out / "confusion.png",
                              f"test accuracy {ev.accuracy:.3f} on {ev.n} images{suffix}"),
               plot_mistakes(ev, images, out / "mistakes.png")]
    atomic_write(out / "evaluation.json", lambda f: f.write(json.dumps(ev.to_json(), indent=2) + "\n"), mode="w")
    return written + [out / "evaluation.json"]


def write_run_pictures(run_dir: str | Path, learner, test_ds: FashionMNIST, resize: int = 224, batch_size: int = 128,
                       seed: int | None = None, progress: bool = True, variant: str = "d2l",
                       pixel_mean: torch.Tensor | None = None) -> list[Path]:
    """What `alexnet train` leaves in its run folder at the end: confusion.png, mistakes.png, evaluation.json
    (from the learner's own predictions on test_ds, as the run measured its test accuracy) and filters.png
    (conv1's filters at initialisation, rebuilt from `seed`, and after training). Returns the paths written."""
    run_dir = Path(run_dir)
    logits = predict_dataset(learner, test_ds, batch_size, resize, progress, "pictures", INPUT_SHAPES[variant][0],
                             pixel_mean)
    ev = Evaluation(test_ds.labels.cpu().numpy(), logits.numpy())
    written = write_evaluation(run_dir, ev, test_ds.images.cpu().numpy())
    conv1 = learner.model_state_dict()["0.weight"].detach().float().cpu().numpy()   # (96, C, 11, 11)
    written.append(plot_filters(conv1, run_dir / "filters.png", seed=seed, variant=variant))
    return written


# ----------------------------------------------------------------------------------------------- the command

def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="PATH", help="best.pt / last.pt of a run")
    parser.add_argument("--backend", choices=EVAL_BACKENDS, default="torch",
                        help="torch (default), triton (our kernels; the interpreter on a CPU: slow), numpy (numpy_ref)")
    parser.add_argument("--limit-test", type=int, metavar="N", help="the first N test images (default: all 10000)")
    parser.add_argument("--out", metavar="DIR", help="where the pictures go (default: the checkpoint's folder)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--data-dir", help="folder with the four IDX files (.gz or raw); or FASHION_MNIST_DIR")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def output_dir(out: str | None, ckpt_path: Path) -> Path:
    directory = Path(out) if out else ckpt_path.parent
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"--out {directory}: is a file, not a folder")
    return directory


def check_positive(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{flag} must be >= 1, got {value}")


def run(args: argparse.Namespace) -> int:
    from torch_model.device import resolve_device

    check_positive(args.limit_test, "--limit-test")
    check_positive(args.batch_size, "--batch-size")
    device = resolve_device(args.device if args.backend != "numpy" or args.device != "auto" else "cpu")
    ckpt = load(args.checkpoint)
    out = output_dir(args.out, ckpt.path)
    _, test_ds = load_fashion_mnist(args.data_dir)
    test_ds = test_ds.subset(args.limit_test)
    learner = make_predictor(ckpt, args.backend, device)
    note = ckpt.assumption_note()
    if note:
        print(note, flush=True)
    print(f"evaluating {ckpt.describe()}, the {ckpt.variant} AlexNet, on {len(test_ds)} test images with the "
          f"{args.backend} backend on {device} (float32, {ckpt.feeding()})", flush=True)
    if args.backend == "triton" and device.type == "cpu":
        print("note: on a CPU the Triton kernels run in the interpreter: minutes per image at 224x224; "
              "use a tiny --limit-test", flush=True)
    logits = predict_dataset(learner, test_ds.to(device), args.batch_size, ckpt.resize, not args.no_progress,
                             channels=ckpt.channels, pixel_mean=ckpt.pixel_mean)
    ev = Evaluation(test_ds.labels.numpy(), logits.numpy())
    print(f"test accuracy {ev.accuracy:.4f} ({int(np.trace(ev.confusion))}/{ev.n})\n")
    print(format_report(ev))
    written = write_evaluation(out, ev, test_ds.images.numpy(), what=f"{args.backend} backend")
    print(f"\nwrote {', '.join(str(p) for p in written)}")
    return 0
