"""Every figure the project draws, as PNGs written atomically: a run's curves (curves.png), its evaluation
(confusion.png, mistakes.png), and what the network learned (filters.png, feature_maps.png, saliency.png).
The numbers come from elsewhere (train.py, evaluate.py, visualize.py); here they are only drawn."""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch

from torch_model.data import CLASS_NAMES
from torch_model.files import atomic_write

DPI = 100                       # the pictures are for reading on screen and committing: tens of KB each


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: Path, dpi: int = DPI) -> Path:
    """The figure as a PNG with a 256-colour palette (a third of the RGBA size, no visible loss for these
    pictures), written atomically."""
    from PIL import Image  # matplotlib's own dependency

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    _pyplot().close(fig)
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    atomic_write(path, lambda f: image.save(f, format="png", optimize=True))
    return path


def plot_confusion(ev, path: Path, title: str = "") -> Path:
    """The confusion matrix of `ev` (an evaluate.Evaluation), each row divided by its class's count (so the diagonal is each class's recall),
    every cell annotated with its count."""
    plt = _pyplot()
    M = ev.confusion
    share = M / np.maximum(M.sum(axis=1, keepdims=True), 1)     # (C, C), rows sum to 1
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            if M[i, j]:
                ax.text(j, i, str(M[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or f"test accuracy {ev.accuracy:.3f} on {ev.n} images", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_mistakes(ev, images: np.ndarray, path: Path, count: int = 24, columns: int = 8,
                  title: str = "") -> Path:
    """The `count` most confident mistakes as a grid of the 28x28 test images: test index, true -> predicted
    class, and the confidence (softmax probability of the predicted class)."""
    plt = _pyplot()
    wrong = ev.mistakes()
    shown = wrong[:count]
    rows = max(1, math.ceil(len(shown) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.25, rows * 1.55 + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, shown):
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"#{i} {CLASS_NAMES[ev.labels[i]]}\n-> {CLASS_NAMES[ev.preds[i]]} {ev.confidence[i]:.0%}",
                     fontsize=7)
    if not len(shown):
        axes.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle(title or f"the {len(shown)} most confident of {len(wrong)} mistakes on {ev.n} test images "
                          f"(#index true -> predicted, confidence)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def _montage(filters: np.ndarray, columns: int = 12) -> np.ndarray:
    """(F, KH, KW) -> one image of the filters in a grid, each scaled to [0, 1] by its own min/max, 1-px gaps
    (NaN, drawn as the background)."""
    F, KH, KW = filters.shape
    rows = math.ceil(F / columns)
    grid = np.full((rows * (KH + 1) + 1, columns * (KW + 1) + 1), np.nan)
    for f in range(F):
        w = filters[f]
        span = w.max() - w.min()
        r, c = divmod(f, columns)
        grid[1 + r * (KH + 1): 1 + r * (KH + 1) + KH, 1 + c * (KW + 1): 1 + c * (KW + 1) + KW] = \
            (w - w.min()) / span if span > 0 else 0.5
    return grid


def initial_conv1(seed: int, variant: str = "d2l") -> np.ndarray:
    """conv1's weights at the start of the run: `alexnet train` seeds torch with the run's seed, then builds the
    model with its variant's init (torch_model.learners.make_learner), so the same two steps rebuild them."""
    from torch_model.model import alexnet

    with torch.random.fork_rng(devices=[]):                           # leave the caller's RNG as it was
        torch.manual_seed(seed)
        return alexnet(len(CLASS_NAMES), variant=variant).state_dict()["0.weight"].numpy()   # (96, C, 11, 11)


def plot_filters(conv1: np.ndarray, path: Path, seed: int | None = None, title: str = "",
                 variant: str = "d2l") -> Path:
    """conv1's filters (96, C, 11, 11) as a 8x12 grid; with the run's seed also at initialisation and the change.
    With C = 3 (the paper's network fed grey images repeated to 3 channels) a filter acts on the grey image as the
    sum of its channels, which is what is drawn."""
    plt = _pyplot()
    trained = conv1.sum(axis=1)                                       # (96, 11, 11)
    panels = [("after training", trained)]
    if seed is not None:
        init = initial_conv1(seed, variant).sum(axis=1)               # (96, 11, 11)
        change = trained - init
        rel = np.linalg.norm(change) / np.linalg.norm(init)
        still = int((np.abs(change).reshape(len(change), -1).max(axis=1) == 0).sum())   # got no gradient at all
        panels = [(f"at initialisation (seed {seed})", init), ("after training", trained),
                  (f"trained - initial: |change| {rel:.0%} of |initial|\n"
                   f"{still} filters unchanged (flat grey)", change)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.2), squeeze=False)
    cmap = plt.get_cmap("gray").with_extremes(bad="#c8d4e6")         # the gaps between filters
    for ax, (name, w) in zip(axes.flat, panels):
        ax.imshow(_montage(w), cmap=cmap, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    summed = " (its 3 channels summed: what a grey image sees)" if conv1.shape[1] > 1 else ""
    fig.suptitle(title or f"conv1: 96 filters of 11x11{summed}, each scaled to its own min (black) .. max (white)",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.92))                            # room for the suptitle over 2-line titles
    return save_figure(fig, path, dpi=80)


def plot_feature_maps(image: np.ndarray, outs: list[np.ndarray], where: list[tuple[int, str]], path: Path, title: str,
                      channels: int = 8) -> Path:
    """One row per block (`where`, from blocks()): the `channels` channels with the largest mean activation, each
    scaled to its own max (black = 0), titled with its channel number and max."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(where), channels + 1, figsize=((channels + 1) * 1.05, len(where) * 1.2 + 0.5),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for row, (idx, name) in enumerate(where):
        act = outs[idx][0]                                            # (C, H, W)
        mean = act.mean(axis=(1, 2))                                  # (C,)
        top = np.argsort(-mean, kind="stable")[:channels]
        if row == 0:
            axes[row, 0].imshow(image, cmap="gray_r", interpolation="nearest")
            axes[row, 0].set_title("input", fontsize=7)
        live = np.mean(act.max(axis=(1, 2)) > 0)
        axes[row, 0].text(0.5, -0.05 if row == 0 else 0.5,
                          f"{name}\n{act.shape[0]}x{act.shape[1]}x{act.shape[2]}\n{live:.0%} ch. active",
                          transform=axes[row, 0].transAxes, ha="center", va="top" if row == 0 else "center",
                          fontsize=7)
        for col, c in enumerate(top, start=1):
            a = act[c]
            axes[row, col].imshow(a, cmap="magma", vmin=0, vmax=max(a.max(), 1e-12), interpolation="nearest")
            axes[row, col].set_title(f"ch {c} max {a.max():.2g}", fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def _scaled(sal: np.ndarray) -> np.ndarray:
    """|gradient| scaled to [0, 1] by its 99.5th percentile (so one extreme pixel does not hide the rest)."""
    sal = np.abs(sal)
    return np.clip(sal / max(np.percentile(sal, 99.5), 1e-30), 0, 1)


def plot_saliency(x: np.ndarray, images: np.ndarray, grads: np.ndarray, pixels: np.ndarray, labels: list[int],
                  target: np.ndarray, probs: np.ndarray, indices: list[int], path: Path) -> Path:
    """Row 1: the test images. Row 2: |gradient| on the network's R x R input `grads`, over the image. Row 3: the
    same gradient carried back to the 28x28 pixels of the image (`pixels`: visualize.to_pixels)."""
    plt = _pyplot()
    n = len(indices)
    fig, axes = plt.subplots(3, n, figsize=(n * 1.6, 5.4), squeeze=False)
    for k, i in enumerate(indices):
        axes[0, k].imshow(images[k], cmap="gray_r", vmin=0, vmax=255)
        axes[0, k].set_title(f"#{i} {CLASS_NAMES[labels[k]]}\npred {CLASS_NAMES[target[k]]} "
                             f"{probs[k, target[k]]:.0%}", fontsize=7)
        for row, (background, sal) in enumerate(((x[k, 0], grads[k, 0]), (images[k] / 255.0, pixels[k])), start=1):
            s = _scaled(sal)
            axes[row, k].imshow(background, cmap="gray_r", vmin=0, vmax=1)
            axes[row, k].imshow(s, cmap="hot", alpha=np.clip(s * 1.5, 0, 0.9), vmin=0, vmax=1)
        for ax in axes[:, k]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[1, 0].set_ylabel(f"on the {x.shape[-1]}x{x.shape[-1]} input", fontsize=7)
    axes[2, 0].set_ylabel("on the 28x28 pixels", fontsize=7)
    fig.suptitle("|d score(predicted class) / d input|, numpy_ref's backward (bright = the score is most "
                 "sensitive there)", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=80)


def plot_curves(out: Path, history: list[dict], title: str) -> None:
    """d2l's animator as one PNG at the end: loss, train acc and test acc per epoch."""
    plt = _pyplot()
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
