"""Several runs of one recipe side by side: test accuracy per epoch, the spread between runs, a reference line.

    python scripts/compare_runs.py RUN [RUN ...] --out runs.png [--reference 0.885 --reference-label "d2l's"]

Each RUN is a run folder (or a copy of one) holding `metrics.csv` and `config.json`, as `alexnet train` writes
them. Prints one row per run (seed, epochs, images/s, final loss, train and test accuracy, its best epoch) and the
mean and sample standard deviation of the final test accuracies (at the last epoch every run reached, when one
stopped early); draws test accuracy (solid) and train accuracy (dotted) per epoch, one colour per run, with the
reference as a horizontal line. A run whose config differs from the first run's in anything but the seed, the run
folder or where it ran is named, and so are those settings in the plot's title, so that one plot never mixes two
recipes unawares.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from torch_model.checkpoint import read_metrics
from torch_model.files import atomic_write

# settings that may differ between runs of one recipe: which sample it is, and where and how it was run
VARYING = {"seed", "out", "resume", "data_dir", "device", "progress", "pictures", "checkpoint", "dist_timeout",
           "workers", "preset"}


def read_run(folder: Path) -> dict:
    """metrics.csv and config.json of a run folder; ValueError naming the file that is missing or unreadable."""
    rows = read_metrics(folder)
    config = folder / "config.json"
    try:
        cfg = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{config}: not readable ({exc}; a RUN is a folder that `alexnet train` wrote)") from None
    return {"folder": folder, "rows": rows, "config": cfg}


def recipe_differences(first: dict, other: dict) -> dict[str, tuple]:
    """{setting: (first's value, other's)} for every recipe setting (not in VARYING) on which the two disagree."""
    keys = (set(first) | set(other)) - VARYING
    return {k: (first.get(k), other.get(k)) for k in sorted(keys) if first.get(k) != other.get(k)}


def plot(runs: list[dict], path: Path, reference: float | None, reference_label: str, differ: list[str]) -> None:
    """differ: the settings in which the runs' recipes differ (named in the title; none for runs of one recipe)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.2), dpi=120)
    for i, run in enumerate(runs):
        colour = f"C{i}"
        epochs = [r["epoch"] for r in run["rows"]]
        last = run["rows"][-1]["test_acc"]
        ax.plot(epochs, [r["test_acc"] for r in run["rows"]], "-o", color=colour, markersize=3,
                label=f"{run['label']}: test acc (last {last:.4f})")
        ax.plot(epochs, [r["train_acc"] for r in run["rows"]], ":", color=colour, label=f"{run['label']}: train acc")
    if reference is not None:
        ax.axhline(reference, color="black", linewidth=0.8, linestyle="--")
        ax.annotate(f"{reference_label} {reference}", (1, reference), xycoords=("axes fraction", "data"),
                    ha="right", va="bottom", fontsize=8)
    last_epoch = max(int(r["rows"][-1]["epoch"]) for r in runs)
    ax.set_xticks(range(1, last_epoch + 1))
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (train: running mean over the epoch, dropout on)", fontsize=8)
    bottom = min(0.7, min(r["test_acc"] for run in runs for r in run["rows"]) - 0.02)
    ax.set_ylim(bottom, 0.92)                      # the test accuracies in full; early train accuracy may fall below
    cut = sorted({int(r["epoch"]) for run in runs for r in run["rows"] if r["train_acc"] < bottom})
    if cut:
        ax.annotate(f"train acc of epoch(s) {', '.join(map(str, cut))} below the axis", (0.01, 0.01),
                    xycoords="axes fraction", fontsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)  # beside: no curve hidden
    kind = f"runs differing in {', '.join(differ)}" if differ else "runs of one recipe"
    ax.set_title(f"{len(runs)} {kind}: test accuracy per epoch", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: fig.savefig(f, format="png"))      # never half a PNG over an older one
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders holding metrics.csv and config.json")
    parser.add_argument("--label", action="append", default=[],
                        help="a name for each RUN, in order (default: the folder's name and seed)")
    parser.add_argument("--out", help="the PNG to draw (default: none, the table only)")
    parser.add_argument("--reference", type=float, help="a figure to draw as a horizontal line, e.g. 0.885")
    parser.add_argument("--reference-label", default="reference", help="what the line is (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.label and len(args.label) != len(args.runs):
        parser.error(f"--label: {len(args.label)} given for {len(args.runs)} RUN(s); give one per RUN or none")
    try:
        runs = [read_run(Path(folder)) for folder in args.runs]
    except ValueError as exc:
        print(f"compare_runs: error: {exc}", file=sys.stderr)
        return 2
    for i, run in enumerate(runs):
        run["label"] = args.label[i] if args.label else f"{run['folder'].name} (seed {run['config'].get('seed')})"
        differ = recipe_differences(runs[0]["config"], run["config"])
        if differ:
            print(f"note: {run['label']} is not the recipe of {runs[0]['label']}: "
                  + "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in differ.items()))
    print(f"{'run':<32} {'epochs':>6} {'img/s':>7} {'loss':>6} {'train':>6} {'test':>7}  best epoch")
    for run in runs:
        last = run["rows"][-1]
        best = max(run["rows"], key=lambda r: r["test_acc"])
        rate = statistics.mean(r["examples_per_sec"] for r in run["rows"])
        print(f"{run['label']:<32} {int(last['epoch']):>6} {rate:>7.1f} {last['loss']:>6.3f} {last['train_acc']:>6.3f} "
              f"{last['test_acc']:>7.4f}  {int(best['epoch'])} ({best['test_acc']:.4f})")
    # the spread is taken at one epoch: the last, or the last that every run reached when one stopped early
    ends = {int(run["rows"][-1]["epoch"]) for run in runs}
    epoch = min(ends)
    finals = [next(r["test_acc"] for r in run["rows"] if int(r["epoch"]) == epoch) for run in runs]
    what = "final test accuracy" if len(ends) == 1 else f"test accuracy at epoch {epoch}, the last all runs reached,"
    spread = f", sample std {statistics.stdev(finals):.4f}" if len(finals) > 1 else ""
    print(f"{what} over {len(finals)} run(s): mean {statistics.mean(finals):.4f}{spread}, "
          f"range {min(finals):.4f}..{max(finals):.4f}")
    if args.out:
        settings = sorted({k for run in runs for k in recipe_differences(runs[0]["config"], run["config"])})
        plot(runs, Path(args.out), args.reference, args.reference_label, settings)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
