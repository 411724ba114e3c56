"""What the benches share on their command line and in their output: the flags and list parsers, the dtypes a
figure is measured in, the printed table, and the results file, one JSON row appended per figure to
`<out-dir>/<machine>.jsonl` (one file per machine: every run's rows, in the order measured; each row carries the
machine, the date and the peaks it is set against, so it stands on its own).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

DEFAULT_OUT_DIR = Path("docs/benchmarks/results")
DTYPES = ("bf16", "tf32", "fp32")        # fp32 = strict fp32 (TF32 off); on a CPU the only one there is
# relative error (||out - ref|| / ||ref|| against float64) above which a figure is flagged as wrong, per dtype
REL_ERR_TOL = {"fp32": 1e-4, "tf32": 5e-3, "bf16": 5e-2}


# ----------------------------------------------------------------------------------------------- flags

def add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA if there is one) | cpu | cuda[:N]")
    parser.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR),
                        help="each figure is appended as one JSON row to <out-dir>/<machine>.jsonl "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def csv_choices(allowed: Sequence[str], name: str) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated subset of `allowed` (or "all"), in the order given, no repeats."""
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if items == ["all"]:
            return list(allowed)
        bad = [t for t in items if t not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"invalid {name} {','.join(bad) or repr(text)} "
                                             f"(choose a comma-separated list from: {', '.join(allowed)}, or all)")
        return list(dict.fromkeys(items))
    parse.__name__ = name
    return parse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def report_failures(failures: list[str]) -> int:
    """Print the figures that failed (each was recorded and the run went on); the exit status: 1 if any."""
    if failures:
        print(f"{len(failures)} figure(s) FAILED:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
    return 1 if failures else 0


# ----------------------------------------------------------------------------------------------- output

def num(value) -> str:
    """3 significant figures, no exponent for everyday magnitudes; '' for None."""
    if value is None:
        return ""
    if value == 0 or not 1e-3 <= abs(value) < 1e7:
        return f"{value:.3g}"
    return f"{value:.{max(0, 2 - math.floor(math.log10(abs(value))))}f}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], markdown: bool = False) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = lambda r: "  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in cells[1:]])


def clean_json(value):
    """NaN/inf -> None, so the file stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def append_rows(path: str | os.PathLike, rows: Sequence[dict]) -> Path:
    """Append each row as one line of JSON to path (created with its folder), flushed and fsync'd: a run cut short
    keeps every row written before it stopped."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(clean_json(r), allow_nan=False, default=str) + "\n" for r in rows)
    with open(path, "a") as f:
        if f.tell() and not _ends_with_newline(path):
            f.write("\n")
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return path


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def read_rows(path: str | os.PathLike) -> list[dict]:
    """Every row of a results file, in the order appended."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
