"""What `alexnet bench layers`, `bench train` and `bench lessons` share, one concern per module:

    machine.py      who ran it: machine_info (the results file's name), versions, today / now_iso
    timing.py       the timer (time_ms), input Rotation, precision switches, measure_peaks / matmul_peak
    layer_specs.py  LayerSpec, alexnet_specs, paper_lrn_specs: the layers timed and their napkin math (FLOPs, bytes)
    results.py      the results file: schema (validate_results), load, merge, save_run (atomic)
    report.py       tables, the README's markdown, the PNG charts, finish(); `python -m` re-renders the README

This module re-exports all of them under one name (`from torch_model.bench import common as C`) and holds the
command-line pieces the benches share (flags, list parsers, the failure report).
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from torch_model.bench.layer_specs import LayerSpec, alexnet_specs, paper_lrn_specs, train_step_flops  # noqa: F401
from torch_model.bench.machine import import_triton_kernels, machine_info, now_iso, today  # noqa: F401
from torch_model.bench.report import (  # noqa: F401
    BEGIN,
    DEFAULT_README,
    END,
    baseline_impl,
    best_by_impl,
    describe,
    finish,
    format_table,
    goal,
    latest_gpu_results,
    layer_rows,
    main,
    plot_layers,
    plot_lessons,
    plot_train,
    render_markdown,
    seed_rows,
    summary_rows,
    train_rows,
    update_readme,
)
from torch_model.bench.results import (  # noqa: F401
    CPU_IMPLS,
    DEFAULT_OUT_DIR,
    DTYPES,
    GPU_IMPLS,
    LAYER_KEY,
    LAYER_ORDER,
    LESSON_KEY,
    PASSES,
    REL_ERR_TOL,
    REQUIRED,
    SECTION_KEYS,
    SEED_KEY,
    TRAIN_KEY,
    atomic_write_bytes,
    clean_json,
    load_results,
    merge_results,
    results_path,
    save_run,
    validate_results,
    write_json,
)
from torch_model.bench.timing import (  # noqa: F401
    Rotation,
    check_dtypes,
    cudnn_benchmark,
    matmul_peak,
    measure_peaks,
    precision,
    sync,
    time_ms,
    torch_dtype,
)
from torch_model.device import resolve_device  # noqa: F401  (C.resolve_device in the benches)


def report_failures(failures: list[str]) -> int:
    """Print the figures that failed (each was recorded and the run went on); the exit status: 1 if any."""
    if failures:
        print(f"{len(failures)} figure(s) FAILED:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
    return 1 if failures else 0


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA if there is one) | cpu | cuda[:N]")
    parser.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR),
                        help="where <date>-<machine>.json and its PNG charts go (default: %(default)s)")
    parser.add_argument("--update-readme", nargs="?", const=str(DEFAULT_README), default=None, metavar="README",
                        help="afterwards, re-render the results tables in README (default %(const)s) from the "
                             "newest GPU results file in --out-dir")
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


if __name__ == "__main__":
    sys.exit(main())
