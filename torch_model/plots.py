"""The training run's figure: d2l's animator as one PNG (curves.png)."""
from __future__ import annotations

from pathlib import Path

from torch_model.files import atomic_write


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
