"""Draw the lessons' diagrams from the real arrays (numpy_ref's own im2col, pooling forward and backward):

    python scripts/draw_diagrams.py                      # all three into docs/images/lessons/
    python scripts/draw_diagrams.py --only im2col --out pictures/

    im2col.png         a 4x4 image and a 2x2 kernel: each window of the image becomes one column of `cols`
                       (numpy_ref.functional._im2col), the whole conv one matrix product
    implicit_gemm.png  step 3's implicit GEMM on a small conv: the output's tiles (one program each), and the K walk
                       of one program, tap by tap and channel chunk by chunk, over its rows of A (never built)
    pool_backward.png  max pooling 3x3 / 2 on a 5x5 image: each output's gradient goes back to the pixel that won
                       its window (numpy_ref.functional.max_pool2d_backward); a pixel that wins two windows adds both

Every number in the pictures comes from running the code they illustrate; docs/triton_lessons.md and
docs/numpy_reference.md show them. Needs matplotlib (the project's dependency) and no GPU.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout: numpy_ref without installing

from numpy_ref import functional as Fn  # noqa: E402
from numpy_ref.geometry import conv2d_geometry  # noqa: E402

DEFAULT_OUT = REPO / "docs" / "images" / "lessons"
COLORS = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf", "#999999", "#17becf"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(ax, values: np.ndarray, fmt: str = "{:g}", colors: dict | None = None, title: str = "",
          xlabel: str = "", ylabel: str = "") -> None:
    """A table of numbers as coloured cells; colors maps (row, col) to a fill colour."""
    rows, cols = values.shape
    for r in range(rows):
        for c in range(cols):
            fill = (colors or {}).get((r, c), "white")
            ax.add_patch(_rect(c, rows - 1 - r, fill))
            ax.text(c + 0.5, rows - 1 - r + 0.5, fmt.format(values[r, c]), ha="center", va="center", fontsize=9)
    ax.set_xlim(0, cols)
    ax.set_ylim(0, rows)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)


def _rect(x, y, fill, w=1, h=1, **kw):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, facecolor=fill, edgecolor=kw.pop("edgecolor", "#555555"), lw=kw.pop("lw", 0.6),
                     alpha=kw.pop("alpha", 0.55 if fill != "white" else 1.0), **kw)


def draw_im2col(path: Path) -> Path:
    """x = 0..15 as a 4x4 image, a 2x2 kernel, stride 1: 9 windows, cols is (C*KH*KW, N*OH*OW) = (4, 9)."""
    plt = _plt()
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)  # (N, C, H, W)
    w = np.ones((1, 1, 2, 2))  # (F, C, KH, KW): only its shape matters here
    g = conv2d_geometry(x, w, None, 1, 0, 1, 1)
    cols = np.array(Fn._im2col(x, g), copy=True)  # (C*KH*KW, N*OH*OW) = (4, 9), numpy_ref's own
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110, gridspec_kw={"width_ratios": [4, 9]})
    image_colors, col_colors = {}, {}
    for m in range(cols.shape[1]):  # column m = output pixel (oh, ow)
        oh, ow = divmod(m, g.OW)
        if m in (0, 4, 8):  # three windows coloured; the others overlap them
            for k in range(cols.shape[0]):  # row k = tap (kh, kw)
                kh, kw = divmod(k, g.KW)
                image_colors[(oh + kh, ow + kw)] = COLORS[m % len(COLORS)]
                col_colors[(k, m)] = COLORS[m % len(COLORS)]
    _grid(a0, x[0, 0], "{:.0f}", image_colors, "x: a 4x4 image (N = C = 1)", "w", "h")
    _grid(a1, cols, "{:.0f}", col_colors, "cols = _im2col(x): one column per output pixel (oh, ow)",
          "column m = (n, oh, ow): 9 output pixels", "row k = (c, kh, kw): 4 taps")
    fig.suptitle("im2col, 2x2 kernel, stride 1: the window of output pixel (oh, ow) is column oh*OW + ow; "
                 "then out = weight.reshape(F, 4) @ cols", fontsize=10)
    return _save(fig, path)


def draw_implicit_gemm(path: Path, block_m: int = 16, block_k: int = 4) -> Path:
    """Step 3's walk on conv x (1, 6, 6, 6), 3x3, padding 1: rows M = 36 pixels, K = 3*3*6 = 54 in (kh, kw, c)
    order; one program's BLOCK_M rows of A, walked one (tap, chunk of block_k channels) at a time."""
    plt = _plt()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 6, 6, 6))  # (N, C, H, W)
    w = rng.standard_normal((5, 6, 3, 3))  # (F, C, KH, KW)
    g = conv2d_geometry(x, w, None, 1, 1, 1, 1)
    xp = np.pad(x, ((0, 0), (0, 0), g.pad_h, g.pad_w))  # (N, C, Hp, Wp)
    cols = np.array(Fn._im2col(xp, g), copy=True)  # (C*KH*KW, N*OH*OW), rows (c, kh, kw)
    perm = [c * g.KH * g.KW + kh * g.KW + kw for kh in range(g.KH) for kw in range(g.KW) for c in range(g.C)]
    a = cols[perm].T  # (M, K) = (36, 54): A with k = (kh, kw, c), what step 3's program loads tile by tile
    m_total, k_total = a.shape
    n_chunks = -(-g.C // block_k)
    fig, ax = plt.subplots(figsize=(11, 5.2), dpi=110)
    ax.imshow(np.where(a == 0, np.nan, a), cmap="coolwarm", aspect="equal", vmin=-2.5, vmax=2.5,
              extent=(0, k_total, m_total, 0))
    pid_m = 1  # the program drawn: rows 16..31
    for t in range(g.KH * g.KW * n_chunks):  # the K walk of one program: t = tap * n_chunks + chunk
        tap, chunk = divmod(t, n_chunks)
        c0 = chunk * block_k
        k0 = tap * g.C + c0
        width = min(block_k, g.C - c0)
        ax.add_patch(_rect(k0, pid_m * block_m, "none", width, min(block_m, m_total - pid_m * block_m),
                           edgecolor="black", lw=1.2, alpha=1.0))
        ax.text(k0 + width / 2, pid_m * block_m - 0.6, str(t), ha="center", va="bottom", fontsize=7)
        if chunk == 0:
            kh, kw = divmod(tap, g.KW)
            ax.text(k0 + g.C / 2, m_total + 0.8, f"tap ({kh},{kw})", ha="center", va="top", fontsize=7)
    for pm in range(-(-m_total // block_m)):  # the row tiles: one program each (per column tile of F)
        ax.axhline(pm * block_m, color="black", lw=0.5, ls=":")
    ax.set_xlabel(f"k = (kh, kw, c), c fastest: K = KH*KW*C = {k_total}; the black boxes are program {pid_m}'s "
                  f"K steps t = 0..{g.KH * g.KW * n_chunks - 1} ({block_k} channels each, the last chunk of "
                  f"each tap half empty: C = {g.C})", fontsize=8)
    ax.set_ylabel(f"m = (n, oh, ow): M = N*OH*OW = {m_total} rows, BLOCK_M = {block_m} per program", fontsize=8)
    ax.set_xticks(range(0, k_total + 1, g.C))
    ax.set_yticks(range(0, m_total + 1, block_m))
    ax.set_title("step 3's implicit GEMM: A[m, k] = x[n, c, oh + kh - 1, ow + kw - 1], never built; each step t "
                 "loads one (BLOCK_M x BLOCK_K) box of it\n(white: the zero padding, loaded as 0 by the mask) and "
                 "multiplies it by the matching (BLOCK_K x F) rows of the weights into the program's accumulator",
                 fontsize=9)
    return _save(fig, path)


def draw_pool_backward(path: Path) -> Path:
    """max_pool2d 3x3 / 2 on a 5x5 image: 2x2 outputs; one pixel on the edge two windows share wins both."""
    plt = _plt()
    from matplotlib.patches import ConnectionPatch

    rng = np.random.default_rng(3)
    x = np.round(rng.uniform(0, 5, (1, 1, 5, 5)), 1)  # (N, C, H, W), every value below 5
    x[0, 0, 0, 2] = 9.0  # in windows (0, 0) and (0, 1): wins both
    x[0, 0, 4, 0] = 8.0  # wins window (1, 0)
    x[0, 0, 3, 4] = 7.0  # wins window (1, 1)
    out, cache = Fn.max_pool2d_forward(x, 3, 2)  # (1, 1, 2, 2)
    dout = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])  # (1, 1, 2, 2): easy to follow
    dx = Fn.max_pool2d_backward(dout, cache)  # (1, 1, 5, 5)
    indices = cache[0].reshape(-1)  # flat h*W + w of each window's winner
    fig, (a0, a1, a2) = plt.subplots(1, 3, figsize=(12, 4.2), dpi=110, gridspec_kw={"width_ratios": [5, 2, 5]})
    winners = {}
    for m, idx in enumerate(indices):
        winners.setdefault(divmod(int(idx), 5), COLORS[m])
    _grid(a0, x[0, 0], "{:.1f}", winners, "x (5x5); each 3x3 window's (stride 2) winner coloured", "w", "h")
    _grid(a1, dout[0, 0], "{:.0f}", {divmod(m, 2): COLORS[m] for m in range(4)}, "dout (2x2)", "ow", "oh")
    _grid(a2, dx[0, 0], "{:g}", winners, "dx = max_pool2d_backward(dout, cache)", "w", "h")
    for m, idx in enumerate(indices):  # an arrow from each dout cell to the dx pixel it is added to
        (oh, ow), (r, c) = divmod(m, 2), divmod(int(idx), 5)
        fig.add_artist(ConnectionPatch(xyA=(ow + 0.5, 1 - oh + 0.5), coordsA=a1.transData,
                                       xyB=(c + 0.5, 4 - r + 0.5), coordsB=a2.transData,
                                       arrowstyle="->", color=COLORS[m], lw=1.4))
    shared = [m for m, i in enumerate(indices) if i == indices[0]]
    fig.suptitle(f"max pooling's backward sends dout[oh, ow] to its window's argmax (the cache's flat indices "
                 f"{indices.tolist()}); a pixel that wins two windows gets both: "
                 f"{' + '.join(f'{dout.reshape(-1)[m]:g}' for m in shared)} = {dx.reshape(-1)[indices[0]]:g}",
                 fontsize=9)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    _plt().close(fig)
    return path


DIAGRAMS = {"im2col": draw_im2col, "implicit_gemm": draw_implicit_gemm, "pool_backward": draw_pool_backward}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/draw_diagrams.py", description=__doc__.split("\n")[0],
                                     epilog="\n".join(__doc__.split("\n")[4:11]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"folder for the PNGs (default: {DEFAULT_OUT.relative_to(REPO)})")
    parser.add_argument("--only", action="append", choices=sorted(DIAGRAMS), metavar="NAME",
                        help=f"draw only this one (repeatable): {', '.join(DIAGRAMS)}")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"{parser.prog}: error: --out {out}: not a folder", file=sys.stderr)
        return 2
    for name in args.only or DIAGRAMS:
        print(DIAGRAMS[name](out / f"{name}.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
