"""Triton exercises, checked in the interpreter on a CPU (on a GPU, compiled): numpy_ref.exercises' machinery
(the blank derived from the project's source, your workspace, the worst element on failure) on two kernels.

    python -m triton_kernels.lessons.exercises list                         # these two and numpy_ref's
    python -m triton_kernels.lessons.exercises start triton_masked_load     # ./exercises/triton_masked_load.py
    python -m triton_kernels.lessons.exercises check triton_masked_load

    triton_masked_load  the primer's ReLU kernel (step0_primer._relu_kernel): program id, block, mask, load, store
    triton_tap_walk     step 3's forward (step3_tap_walk._conv2d_tap_kernel): the (tap, channel chunk) K walk, the
                        per-row padding test, strided loads (NCHW and channels_last), the bias + ReLU epilogue

`check` runs your kernel through the lesson's own launcher (its grid, its arguments) with the output poisoned
with NaN first, so a lane your kernel never writes shows up as `got nan`, and compares with torch in float64.
The numpy_ref exercises work here too (`list` shows them all).
"""
from __future__ import annotations

import sys

import torch

import triton_kernels  # noqa: F401  (first: on a CPU it turns the interpreter on before any kernel is defined)
from numpy_ref import exercises as E

PROG = "python -m triton_kernels.lessons.exercises"


class _Poisoned:
    """Stands in for a lesson's kernel (or autotuned kernel) object: `[grid](*args, **meta)` fills the argument
    named `out_ptr` with NaN, then launches the learner's kernel with the same grid and arguments (an autotuned
    one: with its first config's meta-parameters)."""

    def __init__(self, kernel, configs=None):
        self.kernel, self.configs = kernel, configs

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            names = self.kernel.arg_names
            args[names.index("out_ptr")].fill_(float("nan"))  # poison: unwritten lanes read NaN
            meta = dict(kwargs)
            if self.configs:
                cfg = self.configs[0]
                meta.update(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
            g = grid(meta) if callable(grid) else grid
            return self.kernel[g](*args, **meta)
        return launch


def _torch_compare(report: E.Report, what: str, got: torch.Tensor, expected: torch.Tensor) -> None:
    # fp32 kernels against float64: sums of up to 17*9 products of O(1) values, each add rounding ~6e-8 relative
    report.compare(what, got.detach().double().numpy(), expected.detach().double().numpy(), tol=1e-5, atol=1e-5)


def _check_masked_load(kernel, report: E.Report) -> None:
    from triton_kernels.lessons import step0_primer

    real = step0_primer._relu_kernel
    step0_primer._relu_kernel = _Poisoned(kernel)
    try:
        g = torch.Generator().manual_seed(0)
        for size in (1, 7, step0_primer.BLOCK, 1000):  # one element, a partial block, one full block, four blocks
            x = torch.randn(size, generator=g)
            if size > 3:
                x[3] = float("nan")  # NaN in, NaN out
            out = step0_primer.relu(x)
            _torch_compare(report, f"relu of {size} element(s) (BLOCK = {step0_primer.BLOCK}) vs torch.relu", out,
                           torch.relu(x.double()))
    finally:
        step0_primer._relu_kernel = real


def _check_tap_walk(kernel, report: E.Report) -> None:
    import triton

    from triton_kernels.lessons import step3_tap_walk

    real = step3_tap_walk._conv2d_tap
    step3_tap_walk._conv2d_tap = _Poisoned(kernel, [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16},
                                                                  num_warps=1, num_stages=1)])
    try:
        g = torch.Generator().manual_seed(1)
        rnd = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
        # (N, C, H, W, F, K, stride, padding, bias, relu, layout): conv2's 5/1/2, conv1's 11/4/1, 17 channels and
        # filters in channels_last (two channel chunks, two filter tiles of 16)
        for n, c, h, w, f, k, s, p, bias, relu, layout in (
                (1, 3, 7, 7, 5, 5, 1, 2, True, True, "nchw"), (1, 1, 15, 15, 3, 11, 4, 1, False, False, "nchw"),
                (2, 17, 5, 6, 17, 3, 1, 1, True, True, "channels_last")):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            x, wt = rnd(n, c, h, w).contiguous(memory_format=fmt), rnd(f, c, k, k).contiguous(memory_format=fmt)
            b = rnd(f) if bias else None
            with torch.no_grad():
                out = step3_tap_walk.conv2d(x, wt, b, stride=s, padding=p, relu=relu)  # (N, F, OH, OW)
            ref = torch.nn.functional.conv2d(x.double(), wt.double(), None if b is None else b.double(), s, p)
            _torch_compare(report, f"conv2d x {n}x{c}x{h}x{w}, {f} filters {k}x{k}, stride {s}, padding {p}, "
                                   f"bias={bias}, relu={relu}, {layout} vs torch", out,
                           torch.relu(ref) if relu else ref)
    finally:
        step3_tap_walk._conv2d_tap = real


TRITON_EXERCISES = {ex.name: ex for ex in [
    E.Exercise("triton_masked_load", "triton_kernels.lessons.step0_primer:_relu_kernel",
               "the primer's kernel: program id, a block of offsets, the mask, a masked load and store",
               "pass", _check_masked_load),
    E.Exercise("triton_tap_walk", "triton_kernels.lessons.step3_tap_walk:_conv2d_tap_kernel",
               "step 3's implicit GEMM: K walked (tap, channel chunk), one padding test per row, the epilogue",
               "pass", _check_tap_walk),
]}
EXERCISES = {**E.EXERCISES, **TRITON_EXERCISES}


def main(argv=None) -> int:
    return E.main(argv, EXERCISES, PROG)


if __name__ == "__main__":
    sys.exit(main())
