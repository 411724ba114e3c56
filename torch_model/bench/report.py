"""What a reader sees of the results: the tables (terminal and markdown), the README's results section rendered
from the newest GPU results file, and the PNG charts (matplotlib, Agg).

`python -m torch_model.bench.report --readme docs/benchmarks/README.md` (or `python -m torch_model.bench.common`)
re-renders the README's results tables from the newest GPU results file; CPU (interpreter) files are never
rendered there.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from torch_model.bench.results import (
    DEFAULT_OUT_DIR,
    DTYPES,
    LAYER_ORDER,
    atomic_write_bytes,
    load_results,
    save_run,
)

DEFAULT_README = Path("docs/benchmarks/README.md")


# ----------------------------------------------------------------------------------------------- tables

def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], markdown: bool = False) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = lambda r: "  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in cells[1:]])


def _f(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _g(value: float | None) -> str:
    """3 significant figures, without an exponent for everyday magnitudes (0.00123, 12.3, 4560)."""
    if value is None:
        return ""
    if value == 0 or 1e-4 <= abs(value) < 1e6:
        digits = max(0, 2 - math.floor(math.log10(abs(value)))) if value else 0
        return f"{value:.{digits}f}"
    return f"{value:.2e}"


def baseline_impl(data: dict) -> str:
    return "torch-cpu" if data.get("cpu") else "cudnn"


def by_bytes(layer: str) -> bool:
    """Pools and LRNs are judged by the bytes they move (MB, GB/s, % of the copy bandwidth); convs by FLOPs."""
    return layer.startswith(("pool", "lrn"))


def best_by_impl(data: dict) -> dict[tuple, dict]:
    """(layer, dtype, pass, impl) -> its fastest layout's entry."""
    best: dict[tuple, dict] = {}
    for e in data.get("layers", []):
        k = (e["layer"], e["dtype"], e["pass"], e["impl"])
        if k not in best or e["ms"] < best[k]["ms"]:
            best[k] = e
    return best


def layer_rows(data: dict) -> tuple[list[str], list[list]]:
    """One row per (layer, dtype, pass, impl, layout): time, work, rate, fraction of peak, speed-up vs the best
    baseline (cuDNN on the GPU, torch on a CPU) layout."""
    base = baseline_impl(data)
    best = best_by_impl(data)
    headers = ["layer", "dtype", "pass", "impl", "layout", "batch", "ms", "GFLOP | MB", "TFLOP/s | GB/s",
               "% peak", f"x {base}", "err"]
    order = {n: i for i, n in enumerate(LAYER_ORDER)}
    impl_order = {n: i for i, n in enumerate(["triton", "cudnn", "torch-cpu", "compile"])}
    rows = []
    for e in sorted(data.get("layers", []), key=lambda e: (order.get(e["layer"], 99), e["dtype"], e["pass"],
                                                           impl_order.get(e["impl"], 9), e["layout"])):
        ref = best.get((e["layer"], e["dtype"], e["pass"], base))
        ratio = ref["ms"] / e["ms"] if ref else None
        is_bytes = e.get("kind") in ("pool", "lrn") or by_bytes(e["layer"])
        work = _g(e.get("bytes", 0) / 1e6) if is_bytes else _g(e.get("flops", 0) / 1e9)
        rate = _g(e.get("gb_per_s")) if is_bytes else _g(e.get("tflops"))
        frac = e.get("peak_fraction")
        err = e.get("rel_err")
        err_s = "" if err is None else f"{err:.0e}" + ("" if e.get("err_ok", True) else " WRONG")
        rows.append([e["layer"], e["dtype"], e["pass"], e["impl"], e["layout"], e["batch"], _g(e["ms"]),
                     work, rate, _f(None if frac is None else 100 * frac, ".0f"), _g(ratio), err_s])
    return headers, rows


def goal(layer: str, dtype: str, pss: str) -> tuple[float, float | None] | None:
    """The goal for a Triton figure: (minimum speed-up over cuDNN, minimum fraction of peak or None).
    The LRNs have none."""
    if layer.startswith("lrn"):
        return None
    if layer.startswith("pool"):
        return (1.2, 0.70) if pss == "fwd+bwd" else None
    if pss == "fwd+bwd":
        return (1.0, None)
    if dtype == "bf16":
        return (1.10, None if layer == "conv1" else 0.50)
    return (1.0, None) if dtype == "tf32" else None


def summary_rows(data: dict) -> tuple[list[str], list[list]]:
    """One row per (layer, dtype, pass): the best layout of each implementation side by side, and the goal."""
    base = baseline_impl(data)
    best = best_by_impl(data)
    headers = ["layer", "dtype", "pass", "GFLOP | MB", f"{base} ms", "triton ms", "TFLOP/s | GB/s", "% peak",
               f"triton x {base}", "compile ms", f"compile x {base}", "goal", "met"]
    groups = sorted({(e["layer"], e["dtype"], e["pass"]) for e in data.get("layers", [])},
                    key=lambda k: (LAYER_ORDER.index(k[0]) if k[0] in LAYER_ORDER else 99, k[1], k[2]))
    rows = []
    for layer, dtype, pss in groups:
        ref, tri, comp = (best.get((layer, dtype, pss, i)) for i in (base, "triton", "compile"))
        any_e = ref or tri or comp
        is_pool = by_bytes(layer)
        # a pool's or LRN's MB are what Triton's kernels move (each implementation moves its own: compare times)
        work = _g((tri or any_e).get("bytes", 0) / 1e6) if is_pool else _g(any_e.get("flops", 0) / 1e9)
        cell = lambda e: "" if e is None else f"{_g(e['ms'])} ({e['layout']})"  # noqa: E731
        ratio = lambda e: _g(ref["ms"] / e["ms"]) if e and ref else ""  # noqa: E731
        rate = frac = ""
        met = ""
        g = goal(layer, dtype, pss)
        if tri is not None:
            rate = _g(tri.get("gb_per_s") if is_pool else tri.get("tflops"))
            frac = _f(None if tri.get("peak_fraction") is None else 100 * tri["peak_fraction"], ".0f")
            if g and ref and not data.get("cpu"):
                ok = ref["ms"] / tri["ms"] >= g[0] and (g[1] is None or (tri.get("peak_fraction") or 0) >= g[1])
                met = "WRONG" if tri.get("err_ok") is False else "yes" if ok else "no"
        goal_s = "" if g is None else f">= {g[0]:.2f}x" + ("" if g[1] is None else
                                                             f", >= {100 * g[1]:.0f}% {'copy' if is_pool else 'peak'}")
        rows.append([layer, dtype, pss, work, cell(ref), cell(tri), rate, frac, ratio(tri), cell(comp), ratio(comp),
                     goal_s, met])
    return headers, rows


def train_rows(data: dict) -> tuple[list[str], list[list]]:
    headers = ["backend", "dtype", "layout", "batch", "img/s", "step ms", "TFLOP/s", "% peak", "x torch",
               "convs ran in"]
    ref: dict = {}  # the best eager-torch figure (over layouts) per (dtype, batch): what "x torch" divides by
    for e in data.get("train", []):
        if e["backend"] == "torch":
            ref[(e["dtype"], e["batch"])] = max(ref.get((e["dtype"], e["batch"]), 0), e["img_per_s"])
    rows = []
    for e in sorted(data.get("train", []),
                    key=lambda e: (e["dtype"], e["batch"], e["backend"], e.get("layout") or "nchw")):
        r = ref.get((e["dtype"], e["batch"]))
        frac = e.get("peak_fraction")
        rows.append([e["backend"], e["dtype"], e.get("layout") or "nchw", e["batch"], _g(e["img_per_s"]),
                     _g(e.get("step_ms")),
                     _g(e.get("tflops")), _f(None if frac is None else 100 * frac, ".0f"),
                     _f(r and e["img_per_s"] / r, ".2f"), ",".join(e.get("conv_dtypes") or [])])
    return headers, rows


def seed_rows(data: dict) -> tuple[list[str], list[list]]:
    headers = ["backend", "dtype", "epochs", "train images", "seconds", "test acc", "status"]
    rows = [[e["backend"], e["dtype"], e["epochs"], e.get("train_images", ""), _f(e["seconds"], ".1f"),
             _f(e["test_acc"], ".4f"), e.get("status", "")] for e in data.get("seed_run", [])]
    return headers, rows


def describe(data: dict) -> str:
    peak = data.get("peak", {})
    parts = [f"{data.get('device_name', data['machine'])}, {data['date']}, torch {data['torch']}, "
             f"triton {data.get('triton')}"]
    if data.get("cpu"):
        parts.append(f"CPU machine: fp32 matmul peak {_f(peak.get('fp32_matmul_tflops'), '.3f')} TFLOP/s, copy "
                     f"{_f(peak.get('copy_tb_per_s'), '.3f')} TB/s. Triton runs in its interpreter: these are "
                     f"smoke-test numbers, NOT GPU results")
    else:
        rates = ", ".join(f"{d} matmul {peak[f'{d}_matmul_tflops']:.0f} TFLOP/s" for d in DTYPES
                          if peak.get(f"{d}_matmul_tflops"))
        parts.append(f"measured peaks: {rates}, copy {peak.get('copy_tb_per_s', 0):.2f} TB/s")
    return "; ".join(parts)


def render_markdown(data: dict) -> str:
    """The README's results section for one GPU results file."""
    if data.get("cpu"):
        raise ValueError(f"{data.get('machine')}: a CPU (interpreter) results file is never rendered as results")
    out = [f"Measured on {describe(data)}.", ""]
    for title, rows_of in (("Per layer (each implementation's best layout)", summary_rows),
                           ("Training step", train_rows), ("Full seed run", seed_rows)):
        headers, rows = rows_of(data)
        out += [f"### {title}", "", format_table(headers, rows, markdown=True) if rows else "(not measured)", ""]
    return "\n".join(out).rstrip() + "\n"


BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def latest_gpu_results(results_dir: str | os.PathLike) -> Path | None:
    """The newest (by the date in its name) results file from a GPU; CPU files are skipped."""
    found = []
    for p in Path(results_dir).glob("*.json"):
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and data.get("cpu") is False:
            found.append((p.name, p))
    return max(found)[1] if found else None


def update_readme(readme: str | os.PathLike = DEFAULT_README, results_dir: str | os.PathLike = DEFAULT_OUT_DIR) -> Path | None:
    """Replace the text between the README's results markers with the newest GPU file's tables."""
    readme = Path(readme)
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme}: no {BEGIN} ... {END} markers to put the results between")
    latest = latest_gpu_results(results_dir)
    if latest is None:
        body = (f"No GPU results file in {results_dir} yet: the H200 run is still owed. "
                f"CPU smoke results are never shown here.\n")
    else:
        data = load_results(latest)
        body = f"From [`{latest.name}`](results/{latest.name}).\n\n" + render_markdown(data)
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    new = f"{head}{BEGIN}\n{body}{END}{tail}"
    atomic_write_bytes(readme, lambda f: f.write(new), mode="w")
    return latest


# ----------------------------------------------------------------------------------------------- plots

def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save_png(fig, path: Path) -> None:
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png"))


def _banner(data: dict) -> str:
    base = f"{data.get('device_name', data['machine'])} - {data['date']} - torch {data['torch']}, triton {data.get('triton')}"
    return base + ("\nCPU smoke run, Triton in its interpreter: NOT GPU results" if data.get("cpu") else "")


def _grouped_bars(ax, groups: list, series: list[str], value: Callable[[str, object], float | None]) -> None:
    """One cluster of bars per group, one bar per series (value None: no bar), each bar labelled."""
    width = 0.8 / max(1, len(series))
    for j, name in enumerate(series):
        xs, ys = [], []
        for i, group in enumerate(groups):
            y = value(name, group)
            if y is not None:
                xs.append(i + (j - (len(series) - 1) / 2) * width)
                ys.append(y)
        bars = ax.bar(xs, ys, width, label=name)
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
    ax.grid(axis="y", alpha=0.3)


def _finish_figure(fig, data: dict, path: Path) -> Path:
    fig.suptitle(_banner(data), fontsize=8)
    fig.tight_layout()
    _save_png(fig, path)
    _plt().close(fig)
    return path


def plot_layers(data: dict, path: Path) -> Path | None:
    """Per-layer speed-up over the best baseline layout (cuDNN, or torch on a CPU): one panel per dtype x pass,
    one bar per implementation (its best layout). Above 1 = faster than the baseline."""
    entries = data.get("layers", [])
    if not entries:
        return None
    plt = _plt()
    base = baseline_impl(data)
    best = best_by_impl(data)
    panels = sorted({(e["dtype"], e["pass"]) for e in entries})
    layers = [n for n in LAYER_ORDER if any(e["layer"] == n for e in entries)]
    impls = [i for i in ("triton", "compile") if any(e["impl"] == i for e in entries)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6.0, 1.1 * len(layers) + 2), 2.8 * len(panels) + 0.8),
                             dpi=110, squeeze=False)
    for ax, (dtype, pss) in zip(axes[:, 0], panels):
        def speedup(impl, layer):
            e, ref = best.get((layer, dtype, pss, impl)), best.get((layer, dtype, pss, base))
            return ref["ms"] / e["ms"] if e and ref else None
        _grouped_bars(ax, layers, impls, speedup)
        ax.axhline(1.0, color="k", lw=0.8, label=f"{base} (its best layout) = 1")
        ax.set_xticks(range(len(layers)), layers)
        ax.set_ylabel(f"x {base} (higher = faster)")
        ax.set_title(f"{dtype}, {pss}", fontsize=9)
        ax.legend(fontsize=7)
    return _finish_figure(fig, data, path)


def plot_train(data: dict, path: Path) -> Path | None:
    """Training-step images/s per backend, grouped by dtype."""
    entries = data.get("train", [])
    if not entries:
        return None
    plt = _plt()
    groups = sorted({(e["dtype"], e["batch"]) for e in entries})
    def label(e: dict) -> str:  # a backend, with its layout when it is not the default NCHW
        layout = e.get("layout") or "nchw"
        return e["backend"] if layout == "nchw" else f"{e['backend']} ({layout})"

    order = {"torch": 0, "compile": 1, "triton": 2}
    series = sorted({label(e) for e in entries}, key=lambda s: (order.get(s.split()[0], 9), s))
    img_per_s = {(label(e), e["dtype"], e["batch"]): e["img_per_s"] for e in entries}
    fig, ax = plt.subplots(figsize=(max(5.0, 2.2 * len(groups) + 2), 3.8), dpi=110)
    _grouped_bars(ax, groups, series, lambda name, group: img_per_s.get((name, *group)))
    ax.set_xticks(range(len(groups)), [f"{d}, batch {b}" for d, b in groups])
    ax.set_ylabel("training images / s")
    ax.legend(fontsize=8)
    return _finish_figure(fig, data, path)


def plot_lessons(data: dict, path: Path) -> Path | None:
    """The lessons from step 1 to cuDNN: one panel per (convs | pools, pass), per layer one bar per step (then
    production and the baseline): its speed relative to the faster baseline layout (log scale)."""
    entries = data.get("lessons", [])
    if not entries:
        return None
    plt = _plt()
    base = baseline_impl(data)
    order = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool3"]
    panels = [(k, p) for k in ("conv", "pool") for p in ("fwd", "fwd+bwd")
              if any(e["pass"] == p and e["layer"].startswith(k) for e in entries)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.0 * len(panels) + 0.8), dpi=110, squeeze=False)
    for ax, (kind, pss) in zip(axes[:, 0], panels):
        mine = [e for e in entries if e["pass"] == pss and e["layer"].startswith(kind)]
        layers = [n for n in order if any(e["layer"] == n for e in mine)]
        best: dict[tuple, dict] = {}  # (layer, step) -> its fastest layout
        for e in mine:
            if (e["layer"], e["step"]) not in best or e["ms"] < best[(e["layer"], e["step"])]["ms"]:
                best[(e["layer"], e["step"])] = e
        series = sorted({e["step"] for e in mine}, key=lambda s: (s == base, s == "production", s))

        def speed(step, layer):
            e, ref = best.get((layer, step)), best.get((layer, base))
            return ref["ms"] / e["ms"] if e and ref else None
        _grouped_bars(ax, layers, series, speed)
        ax.set_yscale("log")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(range(len(layers)), layers)
        ax.set_ylabel(f"x {base} (higher = faster)")
        ax.set_title(f"{kind}s, {pss}: each step's speed relative to {base} (its faster layout)", fontsize=9)
        ax.legend(fontsize=7, ncol=3)
    return _finish_figure(fig, data, path)


def finish(out_dir: str | os.PathLike, run: dict, section: str, readme: str | os.PathLike | None) -> Path:
    """Merge the run into its results file, redraw both charts from the merged file, print where they are."""
    path, merged = save_run(out_dir, run)
    stem = path.with_suffix("")
    written = [path]
    for plot, suffix in ((plot_layers, "layers"), (plot_train, "train"), (plot_lessons, "lessons")):
        png = plot(merged, Path(f"{stem}-{suffix}.png"))
        if png is not None:
            written.append(png)
    print("wrote " + ", ".join(str(p) for p in written))
    if run.get("cpu"):
        print("(a CPU smoke run: do not commit it as a result; GPU results come from a CUDA machine)")
    if readme is not None:
        latest = update_readme(readme, out_dir)
        print(f"{readme}: results tables " + (f"rendered from {latest}" if latest else "say the GPU run is owed"))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torch_model.bench.report",
                                     description="re-render the benchmark README's results tables")
    parser.add_argument("--readme", default=str(DEFAULT_README))
    parser.add_argument("--results-dir", default=str(DEFAULT_OUT_DIR))
    parser.add_argument("--print", dest="show", metavar="RESULTS_JSON",
                        help="instead: print the tables of one results file (CPU files included, labelled)")
    args = parser.parse_args(argv)
    try:
        if args.show:
            data = load_results(args.show)
            if data is None:
                raise ValueError(f"{args.show}: no such file")
            print(describe(data))
            for rows_of in (layer_rows, summary_rows, train_rows, seed_rows):
                headers, rows = rows_of(data)
                if rows:
                    print("\n" + format_table(headers, rows))
            return 0
        latest = update_readme(args.readme, args.results_dir)
        print(f"{args.readme}: " + (f"tables from {latest}" if latest else "no GPU results yet (says the run is owed)"))
        return 0
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
