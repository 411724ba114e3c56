"""triton_kernels.conv2d / conv2d_relu against torch.nn.functional.conv2d: forward, grads of x, weight and bias,
every argument form, layouts, wrapper errors, the op registration and the sm_90 compile of a forward spec.

On a CPU machine the kernels run in the Triton interpreter (tiny odd shapes, exact IEEE dots, compared with a
float64 reference); the `gpu` tests run AlexNet's five conv shapes at batch 128 on CUDA in fp32/TF32/bf16.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import triton_kernels
from triton_kernels import _common
from triton_kernels import codegen_specs
from triton_kernels import conv as conv_mod
from triton_kernels import conv2d, conv2d_relu
from conftest import CUDA, DEVICE, assert_close_verbose

REPO = Path(__file__).resolve().parents[1]

# Our fp32 result vs the float64 reference, with exact IEEE fp32 dots (input_precision="ieee"). The worst sum
# here has ~600 products of unit-normal numbers (wgrad over N*OH*OW); fp32 rounding per add is 6e-8 relative,
# so the random-walk error is about sqrt(600) * 6e-8 * |partial sums ~ 25| ~ 4e-5 at worst: tolerance 1e-4
# absolute plus 1e-5 relative. (Measured worst: a few 1e-6.) fp16 (interpreter) rounds inputs/outputs to 11 bits.
# float64 (fp64 dots and accumulators): the same random walk at 1.1e-16 per add, ~1e-13: 1e-12 both ways.
TOL = {  # dtype -> (atol, rtol) against the float64 reference
    torch.float64: (1e-12, 1e-12),
    torch.float32: (1e-4, 1e-5),
    torch.float16: (5e-2, 5e-3),
}


@pytest.fixture
def poison(monkeypatch):
    """Every tensor the kernels write starts as NaN, so an element a kernel forgets to write fails the test."""
    new_output = conv_mod._new_output

    def poisoned(like, shape, dtype=None, channels_last=None):
        return new_output(like, shape, dtype, channels_last).fill_(float("nan"))

    monkeypatch.setattr(conv_mod, "_new_output", poisoned)


def _forward_path(monkeypatch, path: str) -> None:
    """Force the forward's K walk: "flat" (SMALL_C, k over (kh, kw, c)) or "taps" (tap by tap, channel chunks)."""
    monkeypatch.setattr(conv_mod, "SMALL_C_BELOW", 10**9 if path == "flat" else 0)


def _random(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(DEVICE)  # random, never zeros


def check_against_torch(x, weight, bias, what, relu=False, dtype=torch.float32, x_grad=True, **kwargs):
    """Forward and the grads of x (if x_grad), weight and bias, ours (in x's dtype) vs torch in float64 on the
    same values."""
    ours = [t.detach().clone().requires_grad_(x_grad or i > 0) if t is not None else None
            for i, t in enumerate((x, weight, bias))]
    ref = [t.detach().double().requires_grad_(x_grad or i > 0) if t is not None else None
           for i, t in enumerate((x, weight, bias))]
    out = conv2d(*ours, **kwargs, relu=relu, input_precision="ieee")
    expected = F.conv2d(*ref, **kwargs)
    if relu:
        expected = expected.relu()
    atol, rtol = TOL[dtype]
    assert_close_verbose(out, expected, atol, rtol, f"{what} forward")
    assert out.dtype == x.dtype, f"{what}: output dtype {out.dtype}, want {x.dtype}"
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        assert out.is_contiguous(memory_format=torch.channels_last), f"{what}: output lost channels_last"
    if relu:
        assert (out == 0).any() and (out > 0).any(), f"{what}: the ReLU mask should cut some outputs, not all"
    grad = _random(expected.shape, seed=1)  # (N, F, OH, OW)
    names = [n for n, t in zip(("x", "weight", "bias"), ours) if t is not None and t.requires_grad]
    got = torch.autograd.grad(out, [t for t in ours if t is not None and t.requires_grad], grad.to(out.dtype))
    want = torch.autograd.grad(expected, [t for t in ref if t is not None and t.requires_grad], grad.double())
    for name, g_ours, g_ref in zip(names, got, want):
        assert_close_verbose(g_ours, g_ref, atol, rtol, f"{what} grad {name}")
    if x_grad:
        assert got[0].stride() == ours[0].stride() or not x.is_contiguous(), f"{what}: grad x layout"


# (id, x shape, weight shape, kwargs, bias, relu, forward path): odd sizes, every argument form, both K walks.
# The conv1-like case takes no grad of x, like the images it stands for (the interpreter would spend minutes in
# a 121-tap dgrad; strided dgrad is covered by "k5-s3-p2-no-bias" and "rect-kernel-stride").
CASES = [
    ("3x3-pad1-relu", (2, 3, 7, 7), (5, 3, 3, 3), dict(padding=1), True, True, "taps"),
    ("3x3-pad1", (2, 3, 7, 7), (5, 3, 3, 3), dict(padding=1), True, False, "flat"),
    ("alexnet-conv1-mini", (2, 1, 23, 23), (6, 1, 11, 11), dict(stride=4, padding=1), True, True, "flat"),
    ("k5-s3-p2-no-bias", (1, 3, 13, 11), (4, 3, 5, 5), dict(stride=3, padding=2), False, True, "taps"),
    ("pairs-dil-groups2", (2, 4, 9, 8), (6, 2, 3, 3),
     dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2), True, True, "flat"),
    ("same-even-kernel-dil2", (2, 2, 6, 7), (3, 2, 2, 4), dict(padding="same", dilation=2), True, False, "taps"),
    ("valid", (2, 3, 5, 6), (2, 3, 3, 3), dict(padding="valid"), True, True, "flat"),
    ("1x1-groups3", (2, 6, 5, 5), (9, 2, 1, 1), dict(groups=3), True, False, "taps"),
    ("depthwise", (2, 4, 7, 7), (4, 1, 3, 3), dict(padding=1, groups=4), True, True, "taps"),
    ("kernel-fills-padded-input", (2, 3, 5, 5), (4, 3, 7, 7), dict(padding=1), True, False, "flat"),
    ("rect-kernel-stride", (2, 3, 9, 6), (5, 3, 3, 2), dict(stride=(2, 3), padding=(0, 1)), True, True, "taps"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_torch_fp32(case, poison, monkeypatch):
    what, x_shape, w_shape, kwargs, has_bias, relu, path = case
    _forward_path(monkeypatch, path)
    x, w = _random(x_shape, seed=2), _random(w_shape, seed=3)
    b = _random((w_shape[0],), seed=4) if has_bias else None
    check_against_torch(x, w, b, what, relu=relu, x_grad=what != "alexnet-conv1-mini", **kwargs)


@pytest.mark.parametrize("path", ["flat", "taps"])
def test_channels_last(path, poison, monkeypatch):
    _forward_path(monkeypatch, path)
    x = _random((2, 5, 7, 6), seed=5).to(memory_format=torch.channels_last)  # (N, C, H, W), C fastest in memory
    w = _random((4, 5, 3, 3), seed=6).to(memory_format=torch.channels_last)
    check_against_torch(x, w, _random((4,), seed=7), f"channels_last/{path}", relu=True, stride=2, padding=1)


@pytest.mark.parametrize("which", ["x", "weight"])
def test_output_layout_follows_torch_for_one_channel(which, poison):
    """conv1 sees C == 1: a (N, 1, H, W) tensor is contiguous in both formats, so only its strides tell.
    torch's conv answers channels_last when x's or weight's strides say so; ours must too, or a channels_last
    AlexNet would fall back to NCHW after its first layer."""
    x, w = _random((2, 1, 9, 9), seed=40), _random((4, 1, 3, 3), seed=41)
    if which == "x":
        x = x.to(memory_format=torch.channels_last)                    # strides (81, 1, 9, 1)
    else:
        w = w.to(memory_format=torch.channels_last)                    # strides (9, 1, 3, 1)
    ours = conv2d_relu(x, w, stride=2, input_precision="ieee")         # (2, 4, 4, 4)
    ref = F.relu(F.conv2d(x, w, stride=2))
    assert ours.stride() == ref.stride() and ref.is_contiguous(memory_format=torch.channels_last)
    assert_close_verbose(ours, ref, *TOL[torch.float32], f"C=1 channels_last {which}")
    plain = conv2d(_random((2, 1, 9, 9), seed=40), _random((4, 1, 3, 3), seed=41), input_precision="ieee")
    assert plain.stride() == F.conv2d(_random((2, 1, 9, 9)), _random((4, 1, 3, 3))).stride()  # NCHW stays NCHW


def test_unbatched(poison):
    x, w, b = _random((3, 7, 6), seed=8), _random((4, 3, 3, 3), seed=9), _random((4,), seed=10)  # x: (C, H, W)
    check_against_torch(x, w, b, "unbatched", relu=True, padding=1)


def test_strided_views(poison):
    """Non-contiguous input, weight and incoming gradient: the kernels read any strides they are given."""
    x = _random((2, 3, 11, 9), seed=11)[:, :, ::2, 1:]  # (2, 3, 6, 8) view with row stride 2*9
    w = _random((3, 4, 3, 3), seed=12).transpose(0, 1)  # (4, 3, 3, 3) view, filters not outermost
    assert not x.is_contiguous() and not w.is_contiguous()
    check_against_torch(x, w, _random((4,), seed=13), "strided views", relu=True, padding=1)
    # an expanded (stride-0) gradient, as x.sum().backward() produces
    xr = x.detach().clone().requires_grad_(True)
    conv2d(xr, w, padding=1, input_precision="ieee").sum().backward()
    x64 = x.double().requires_grad_(True)
    F.conv2d(x64, w.double(), padding=1).sum().backward()
    assert_close_verbose(xr.grad, x64.grad, *TOL[torch.float32], "grad x from an expanded gradient")


def test_fp16_in_the_interpreter(poison):
    """fp16 in, fp32 accumulation, fp16 out (bf16 is checked on the GPU only: the interpreter mishandles it)."""
    x, w, b = _random((2, 3, 6, 6), torch.float16, 14), _random((4, 3, 3, 3), torch.float16, 15), None
    check_against_torch(x, w, b, "fp16", relu=True, dtype=torch.float16, padding=1)


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("path", ["flat", "taps"])
def test_nan_propagates_like_torch(relu, path, poison, monkeypatch):
    """relu(conv2d(...)) keeps a NaN as torch's does (so a diverging run trips the NaN stop), and the backward's
    ReLU mask lets the gradient through a NaN output as torch's relu backward does (it zeroes only out <= 0)."""
    _forward_path(monkeypatch, path)
    x = _random((2, 3, 7, 6), seed=70)
    x[0, 1, 3, 2] = float("nan")  # one NaN pixel: 9 NaN outputs per filter through a 3x3 window
    x[1, 0, 0, 0] = float("nan")  # in a corner, next to the padding
    w, b = _random((4, 3, 3, 3), seed=71), _random((4,), seed=72)
    out = conv2d(x, w, b, padding=1, relu=relu, input_precision="ieee")
    assert out.isnan().any(), "a NaN input must give NaN outputs"
    check_against_torch(x, w, b, f"NaN input, relu={relu}, {path}", relu=relu, padding=1)


def test_nan_output_passes_the_gradient_in_every_backward_kernel(poison):
    """The backward ops themselves, given a saved output holding NaN: dgrad, wgrad and the bias grad gate
    grad_out by `out <= 0 -> 0`, so a NaN output passes its gradient (torch's threshold_backward)."""
    x, w = _random((1, 2, 5, 5), seed=73), _random((3, 2, 3, 3), seed=74)
    out = conv2d_relu(x, w, padding=1, input_precision="ieee").detach()  # (1, 3, 5, 5)
    out[0, 1, 2, 2] = float("nan")
    dy = _random(out.shape, seed=75)
    g = torch.where(out.double() <= 0, 0.0, dy.double())  # torch's rule, NaN out -> dy
    x64, w64 = x.double().requires_grad_(True), w.double().requires_grad_(True)
    b64 = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    dx_ref, dw_ref, db_ref = torch.autograd.grad(F.conv2d(x64, w64, b64, padding=1), [x64, w64, b64], g)
    args = ([1, 1], [1, 1, 1, 1], [1, 1], 1, "ieee")
    ops = torch.ops.triton_kernels
    assert_close_verbose(ops.conv2d_dgrad(dy, out, w, x, *args), dx_ref, *TOL[torch.float32], "dgrad, NaN out")
    assert_close_verbose(ops.conv2d_wgrad(dy, out, x, w, *args), dw_ref, *TOL[torch.float32], "wgrad, NaN out")
    assert_close_verbose(ops.conv2d_bias_grad(dy, out), db_ref, *TOL[torch.float32], "bias grad, NaN out")


@pytest.mark.parametrize("path", ["flat", "taps"])
def test_float64(path, poison, monkeypatch):
    """float64 end to end (fp64 dots and accumulators, fp64 split-K workspaces), for gradient checks."""
    _forward_path(monkeypatch, path)
    x, w, b = (_random(s, torch.float64, seed) for s, seed in (((2, 3, 7, 6), 76), ((4, 3, 3, 3), 77), ((4,), 78)))
    check_against_torch(x, w, b, f"float64/{path}", relu=True, dtype=torch.float64, padding=1, stride=(1, 2))
    x, w = _random((2, 3, 17, 17), torch.float64, 79), _random((4, 3, 3, 3), torch.float64, 80)
    out = conv2d_relu(x, w, padding=1)  # (2, 4, 17, 17)
    dy = _random(out.shape, torch.float64, 81)
    x64, w64 = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    b64 = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    dw_ref, db_ref = torch.autograd.grad(F.conv2d(x64, w64, b64, padding=1), [w64, b64], dy * (out > 0))
    for splits in (1, 3):  # the split partial sums are fp64 too: fp32 ones would miss 1e-12 by far
        args = ((1, 1), (1, 1, 1, 1), (1, 1), 1, True, "ieee")
        dw = conv_mod._launch_wgrad(dy, out, x, w, *args, splits=splits)
        assert_close_verbose(dw, dw_ref, *TOL[torch.float64], f"float64 wgrad, {splits} splits")
        db = conv_mod._launch_bias_grad(dy, out, True, splits=splits)
        assert_close_verbose(db, db_ref, *TOL[torch.float64], f"float64 bias grad, {splits} splits")


def test_gradcheck_float64():
    """torch.autograd.gradcheck through the registered ops (forward, dgrad, wgrad, bias grad): every Jacobian
    entry (slow mode) for a plain strided, padded conv; fast mode (random projections) for the fused ReLU, whose
    inputs are drawn away from its kink (no pre-activation within 1e-3 of 0, where h = 1e-6 would cross it)."""
    x = _random((1, 2, 4, 3), torch.float64, 82).requires_grad_(True)
    w = _random((2, 2, 2, 2), torch.float64, 83).requires_grad_(True)
    b = _random((2,), torch.float64, 84).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda *t: conv2d(*t, stride=(2, 1), padding=1), (x, w, b))
    x = _random((1, 3, 5, 5), torch.float64, 85).requires_grad_(True)
    w = _random((4, 3, 3, 3), torch.float64, 86).requires_grad_(True)
    with torch.no_grad():
        z = F.conv2d(x, w, b.new_zeros(4), padding=1, groups=1)
    assert z.abs().min() > 1e-3, "a pre-activation sits on the ReLU's kink: pick another seed"
    assert torch.autograd.gradcheck(lambda *t: conv2d_relu(*t, padding=1), (x, w), fast_mode=True)


interpreted_only = pytest.mark.skipif(not triton_kernels.INTERPRET, reason="about the Triton interpreter")


@interpreted_only
def test_bfloat16_refused_in_the_interpreter(no_launch):
    """The interpreter computes bf16 wrongly (a conv was off by ~1e10): refused, the dtype named, nothing run."""
    x, w, b = _x(dtype=torch.bfloat16), _w(dtype=torch.bfloat16), _random((4,), torch.bfloat16)
    for call in (lambda: conv2d(x, w, b), lambda: conv2d_relu(x, w, b)):
        with pytest.raises(ValueError, match=r"x dtype torch.bfloat16 is not supported in the Triton interpreter"):
            call()
    dy, args = _random((2, 4, 5, 5), torch.bfloat16), ([1, 1], [0, 0, 0, 0], [1, 1], 1, "ieee")
    ops = torch.ops.triton_kernels
    for op, op_args in ((ops.conv2d_dgrad, (dy, None, w, x, *args)), (ops.conv2d_wgrad, (dy, None, x, w, *args)),
                        (ops.conv2d_bias_grad, (dy, None))):
        with pytest.raises(ValueError, match=r"grad_out dtype torch.bfloat16 is not supported in the Triton interp"):
            op(*op_args)
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(ValueError, match=r"x dtype torch.bfloat16 is"):
        conv2d(_x(), _w())  # `--amp bf16` on a CPU: refused, not garbage


@interpreted_only
def test_interpreted_launch_does_not_need_wrap_triton(monkeypatch, poison):
    """torch < 2.13's wrap_triton refuses interpreted kernels (the GPU machine has torch 2.11): under the
    interpreter the ops launch the kernels directly, so forward and backward run without it."""
    def refuse(*args, **kwargs):
        raise AssertionError("wrap_triton called under the interpreter")

    monkeypatch.setattr(torch.library, "wrap_triton", refuse)
    check_against_torch(_random((1, 2, 5, 5), seed=87), _random((3, 2, 3, 3), seed=88), _random((3,), seed=89),
                        "without wrap_triton", relu=True, padding=1)


@pytest.mark.parametrize("triton_version, numpy_version, broken", [
    ("3.6.0", "2.4.6", True), ("3.6.0", "2.5.2", True), ("3.5.1", "2.4.0", True),
    ("3.6.0", "2.3.5", False), ("3.8.0", "2.4.6", False), ("3.9.0", "2.5.2", False), ("3.6.0", "1.26.4", False),
])
def test_interpreter_stack_check(triton_version, numpy_version, broken):
    """triton < 3.7's interpreter breaks on numpy >= 2.4 (an upstream interpreter bug, fixed in triton 3.8): refused at import, both named."""
    if broken:
        with pytest.raises(ImportError, match=rf"triton {triton_version}'s interpreter does not work with numpy "
                                              rf"{numpy_version}"):
            _common.check_interpreter_stack(triton_version, numpy_version)
    else:
        _common.check_interpreter_stack(triton_version, numpy_version)


def test_autocast_runs_the_conv_in_the_autocast_dtype(poison):
    """`--amp bf16` relies on this: autocast knows no rule for a custom op, so conv2d casts like torch's conv.
    (fp16 on the CPU here: the interpreter mishandles bf16.) fp32 parameters still get fp32 gradients."""
    x = _random((2, 3, 6, 6), seed=30)
    w = _random((4, 3, 3, 3), seed=31).requires_grad_(True)
    b = _random((4,), seed=32).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.float16):
        out = conv2d_relu(x, w, b, padding=1)                        # (2, 4, 6, 6)
    assert out.dtype == torch.float16
    out.float().sum().backward()
    assert w.grad.dtype == torch.float32 and b.grad.dtype == torch.float32
    w64, b64 = w.detach().double().requires_grad_(True), b.detach().double().requires_grad_(True)
    F.relu(F.conv2d(x.half().double(), w64.half().double(), b64.half().double(), padding=1)).sum().backward()
    assert_close_verbose(w.grad, w64.grad.float(), *TOL[torch.float16], "grad weight under autocast")
    assert_close_verbose(b.grad, b64.grad.float(), *TOL[torch.float16], "grad bias under autocast")


def test_conv2d_relu_is_the_fused_conv2d(poison):
    x, w, b = _random((2, 3, 6, 5), seed=16), _random((4, 3, 3, 3), seed=17), _random((4,), seed=18)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    fused = conv2d_relu(xs[0], w, b, padding=1, input_precision="ieee")
    flag = conv2d(xs[1], w, b, padding=1, relu=True, input_precision="ieee")
    assert torch.equal(fused, flag), "conv2d_relu differs from conv2d(relu=True)"
    assert (fused >= 0).all() and (fused == 0).any()
    grad = _random(fused.shape, seed=19)
    assert torch.equal(*(torch.autograd.grad(o, xi, grad)[0] for o, xi in zip((fused, flag), xs)))


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_split_k_wgrad_and_split_bias_grad(layout, poison):
    """The split-K partial sums (fp32 slabs, summed by the bias-grad kernel) equal torch's, in weight's layout."""
    x, w = _random((2, 3, 17, 17), seed=20), _random((4, 3, 3, 3), seed=21)  # K = 2*17*17 = 578 rows
    if layout == "channels_last":
        x, w = x.to(memory_format=torch.channels_last), w.to(memory_format=torch.channels_last)
    out = conv2d(x, w, _random((4,), seed=22), padding=1, relu=True, input_precision="ieee")  # (2, 4, 17, 17)
    dy = _random(out.shape, seed=23)
    args = ((1, 1), (1, 1, 1, 1), (1, 1), 1, True, "ieee")
    x64, w64 = x.double().requires_grad_(True), w.double().requires_grad_(True)
    b64 = torch.zeros(4, dtype=torch.float64, requires_grad=True)  # the bias value does not change its grad
    ref = F.conv2d(x64, w64, b64, padding=1)
    dw_ref, db_ref = torch.autograd.grad(ref, [w64, b64], dy.double() * (out > 0))
    for splits in (1, 3):
        dw = conv_mod._launch_wgrad(dy, out, x, w, *args, splits=splits)
        assert_close_verbose(dw, dw_ref, *TOL[torch.float32], f"wgrad, {splits} splits")
        assert dw.stride() == w.stride(), f"wgrad, {splits} splits: strides {dw.stride()}, weight {w.stride()}"
        db = conv_mod._launch_bias_grad(dy, out, True, splits=splits)
        assert_close_verbose(db, db_ref, *TOL[torch.float32], f"bias grad, {splits} splits")


@pytest.mark.parametrize("rows, tiles", [(128 * 54 * 54, 1), (128 * 26 * 26, 38), (18432, 81), (100, 1)])
def test_split_heuristic_covers_every_row_once(rows, tiles):
    splits, per = conv_mod._split_rows(rows, tiles, torch.device("cpu"))
    assert per % conv_mod._SPLIT_ALIGN == 0, f"rows per split {per} not a multiple of the largest block"
    assert (splits - 1) * per < rows <= splits * per, f"{splits} splits of {per} rows do not tile {rows} rows"
    assert splits == 1 or per >= conv_mod._MIN_ROWS_PER_SPLIT


def test_backward_launches_only_what_is_needed(poison, monkeypatch):
    """Images need no gradient: the dgrad kernel must not run; weight and bias grads still match torch."""
    def refuse(*args, **kwargs):
        raise AssertionError("dgrad launched for an input that does not require grad")

    monkeypatch.setattr(conv_mod, "_launch_dgrad", refuse)
    x = _random((2, 1, 9, 9), seed=24)  # requires_grad False, like a batch of images
    w, b = _random((3, 1, 3, 3), seed=25).requires_grad_(True), _random((3,), seed=26).requires_grad_(True)
    out = conv2d_relu(x, w, b, stride=2, input_precision="ieee")
    w64, b64 = w.detach().double().requires_grad_(True), b.detach().double().requires_grad_(True)
    ref = F.conv2d(x.double(), w64, b64, stride=2).relu()
    grad = _random(ref.shape, seed=27)
    got = torch.autograd.grad(out, [w, b], grad)
    want = torch.autograd.grad(ref, [w64, b64], grad.double())
    for name, g, r in zip(("weight", "bias"), got, want):
        assert_close_verbose(g, r, *TOL[torch.float32], f"grad {name}")


def test_default_precision_follows_cudnn_allow_tf32(monkeypatch):
    seen = []
    launch = conv_mod._launch_fwd

    def spy(*args):
        seen.append(args[-1])  # input_precision is the launcher's last argument
        return launch(*args)

    monkeypatch.setattr(conv_mod, "_launch_fwd", spy)
    x, w = _random((1, 2, 4, 4), seed=28), _random((2, 2, 3, 3), seed=29)
    for allow, want in ((True, "tf32"), (False, "ieee")):
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", allow)
        conv2d(x, w)
        assert seen[-1] == want, f"allow_tf32={allow}: input_precision {seen[-1]!r}, want {want!r}"
    conv2d(x, w, input_precision="tf32")
    assert seen[-1] == "tf32", "an explicit input_precision must win over cudnn.allow_tf32"


# --- wrapper errors: ValueError naming the argument, and nothing launched -----------------------------------

def _x(shape=(2, 3, 7, 7), dtype=torch.float32):
    return _random(shape, dtype, seed=30)


def _w(shape=(4, 3, 3, 3), dtype=torch.float32):
    return _random(shape, dtype, seed=31)


ERRORS = [  # (id, thunk making the call's arguments, text the message must contain)
    ("x-2d", lambda: dict(x=_x((3, 7)), weight=_w()), "x must be 3-D or 4-D"),
    ("x-int", lambda: dict(x=_x().long(), weight=_w()), "x dtype"),
    ("x-no-channels", lambda: dict(x=_x((2, 0, 7, 7)), weight=_w()), "x must have non-empty C, H, W"),
    ("x-no-rows", lambda: dict(x=_x((3, 0, 7)), weight=_w()), "x must have non-empty C, H, W"),
    ("weight-empty", lambda: dict(x=_x(), weight=_w((0, 3, 3, 3))), "weight must not be empty"),
    ("x-not-tensor", lambda: dict(x=[[1.0]], weight=_w()), "x must be a torch.Tensor"),
    ("weight-3d", lambda: dict(x=_x(), weight=_w((4, 3, 3))), "weight must be 4-D"),
    ("weight-dtype", lambda: dict(x=_x(), weight=_w(dtype=torch.float16)), "weight dtype"),
    ("weight-device", lambda: dict(x=_x(), weight=_w().to("meta")), "weight is on meta"),
    ("channels", lambda: dict(x=_x((2, 5, 7, 7)), weight=_w()), "weight.shape[1]*groups"),
    ("groups-channels", lambda: dict(x=_x(), weight=_w(), groups=3), "weight.shape[1]*groups"),
    ("groups-filters", lambda: dict(x=_x((2, 6, 7, 7)), weight=_w((5, 2, 3, 3)), groups=3), "divisible by groups"),
    ("groups-zero", lambda: dict(x=_x(), weight=_w(), groups=0), "groups must be a positive int"),
    ("groups-bool", lambda: dict(x=_x(), weight=_w(), groups=True), "groups must be a positive int"),
    ("bias-shape", lambda: dict(x=_x(), weight=_w(), bias=_random((5,))), "bias must have shape (4,)"),
    ("bias-2d", lambda: dict(x=_x(), weight=_w(), bias=_random((4, 1))), "bias must be 1-D"),
    ("bias-dtype", lambda: dict(x=_x(), weight=_w(), bias=_random((4,), torch.float16)), "bias dtype"),
    ("stride-zero", lambda: dict(x=_x(), weight=_w(), stride=0), "stride must be >= 1"),
    ("stride-triple", lambda: dict(x=_x(), weight=_w(), stride=(1, 1, 1)), "stride must be an int or a pair"),
    ("stride-float", lambda: dict(x=_x(), weight=_w(), stride=1.5), "stride must be an int or a pair"),
    ("dilation-zero", lambda: dict(x=_x(), weight=_w(), dilation=(1, 0)), "dilation must be >= 1"),
    ("padding-negative", lambda: dict(x=_x(), weight=_w(), padding=-1), "padding must be >= 0"),
    ("padding-word", lambda: dict(x=_x(), weight=_w(), padding="full"), "padding must be an int, a pair"),
    ("same-strided", lambda: dict(x=_x(), weight=_w(), padding="same", stride=2), "padding='same' needs stride 1"),
    ("kernel-too-big", lambda: dict(x=_x((2, 3, 4, 4)), weight=_w((4, 3, 5, 5))), "larger than the padded input"),
    ("dilated-too-big", lambda: dict(x=_x(), weight=_w(), dilation=4), "larger than the padded input"),
    ("precision", lambda: dict(x=_x(), weight=_w(), input_precision="fp64"), "input_precision must be one of"),
    ("relu-not-bool", lambda: dict(x=_x(), weight=_w(), relu="yes"), "relu must be a bool"),
]


@pytest.fixture
def no_launch(monkeypatch):
    """Any kernel launch fails the test: a refused call must be refused before anything runs."""
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel was launched for a call that should have been refused")

    for name in ("_launch_fwd", "_launch_dgrad", "_launch_wgrad", "_launch_bias_grad"):
        monkeypatch.setattr(conv_mod, name, refuse)


@pytest.mark.parametrize("make, match", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_bad_arguments_raise_value_error(make, match, no_launch):
    with pytest.raises(ValueError, match=re.escape(match)):
        conv2d(**make())


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_empty_batch_is_returned_like_torch(relu, layout, poison):
    """N = 0: an empty output of the right shape, and in the backward an empty dx and zero dweight and dbias (a
    sum over no images), as torch's conv gives."""
    x = _random((0, 3, 7, 6))                                         # (0, C, H, W)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    w, b = _random((4, 3, 3, 2), seed=2), _random((4,), seed=3)
    ours = [t.clone().requires_grad_(True) for t in (x, w, b)]
    ref = [t.clone().requires_grad_(True) for t in (x, w, b)]
    out = conv2d(*ours, padding=1, relu=relu)
    expected = F.conv2d(*ref, padding=1)
    assert out.shape == expected.shape == (0, 4, 7, 7) and out.dtype == x.dtype
    got = torch.autograd.grad(out.sum(), ours)
    want = torch.autograd.grad(expected.sum(), ref)
    for name, g, r in zip(("x", "weight", "bias"), got, want):
        assert g.shape == r.shape and torch.equal(g, r), f"grad {name}: {g} vs torch {r}"
    assert not got[1].isnan().any() and not got[2].isnan().any()     # written, not left poisoned


def test_cpu_tensors_refused_without_interpreter(monkeypatch, no_launch):
    monkeypatch.setattr(_common, "INTERPRET", False)
    with pytest.raises(ValueError, match="x must be on a CUDA device, got cpu"):
        conv2d(torch.randn(1, 3, 5, 5), torch.randn(2, 3, 3, 3))


def test_backward_ops_check_grad_out(no_launch):
    x, w = _x(), _w()
    bad = _random((2, 4, 6, 6))  # the forward's output is (2, 4, 5, 5)
    args = ([1, 1], [0, 0, 0, 0], [1, 1], 1, "ieee")
    with pytest.raises(ValueError, match=r"grad_out must have the forward output's shape \(2, 4, 5, 5\)"):
        torch.ops.triton_kernels.conv2d_dgrad(bad, None, w, x, *args)
    with pytest.raises(ValueError, match=r"grad_out must have the forward output's shape"):
        torch.ops.triton_kernels.conv2d_wgrad(bad, None, x, w, *args)
    with pytest.raises(ValueError, match=r"out shape \(2, 4, 5, 5\) differs from grad_out"):
        torch.ops.triton_kernels.conv2d_bias_grad(bad, _random((2, 4, 5, 5)))


def test_op_schema_and_autograd_registration():
    """opcheck's schema and autograd-registration checks run anywhere; the fake-tensor/compile checks need
    compiled kernels (the interpreter reads data pointers) and run in test_gpu_opcheck."""
    x, w, b = (_random(s, seed=i).requires_grad_(True) for i, s in enumerate([(1, 2, 5, 5), (3, 2, 3, 3), (3,)]))
    utils = ("test_schema", "test_autograd_registration")
    torch.library.opcheck(torch.ops.triton_kernels.conv2d_fwd.default,
                          (x, w, b, [1, 1], [1, 0, 1, 1], [1, 1], 1, True, "ieee"), test_utils=utils)
    out = conv2d_relu(x, w, b, padding=1).detach()
    dy = _random(out.shape, seed=5)
    args = ([1, 1], [1, 1, 1, 1], [1, 1], 1, "ieee")
    for op, op_args in ((torch.ops.triton_kernels.conv2d_dgrad.default, (dy, out, w.detach(), x.detach(), *args)),
                        (torch.ops.triton_kernels.conv2d_wgrad.default, (dy, out, x.detach(), w.detach(), *args)),
                        (torch.ops.triton_kernels.conv2d_bias_grad.default, (dy, out))):
        torch.library.opcheck(op, op_args, test_utils=("test_schema",))


# --- sm_90 codegen without a GPU --------------------------------------------------------------------------

def test_sm90_specs_cover_every_kernel_and_dtype():
    specs = codegen_specs.CONV_SPECS
    names = [s["name"] for s in specs]
    assert len(set(names)) == len(names), "duplicate spec names"
    for kernel in ("conv2d_fwd[", "conv2d_fwd_small_c[", "conv2d_dgrad[", "conv2d_wgrad[", "conv2d_bias_grad["):
        for dtype in ("fp32", "bf16", "fp64"):
            assert any(n.startswith(kernel) and dtype in n for n in names), f"no spec for {kernel}{dtype}"
    for s in specs:
        assert list(s["signature"]) == list(s["fn"].arg_names), f"{s['name']}: signature misses arguments"
        for arg, kind in s["signature"].items():
            assert (kind == "constexpr") == (arg in s["constexprs"]), f"{s['name']}: {arg} is {kind}"


_COMPILE_ONE = """
import json, os, sys
os.environ["TRITON_INTERPRET"] = "0"  # the real @triton.jit functions, not the interpreter's
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton_kernels.codegen_specs import CONV_SPECS
spec = next(s for s in CONV_SPECS if s["name"] == sys.argv[1])
k = triton.compile(ASTSource(fn=spec["fn"], signature=spec["signature"], constexprs=spec["constexprs"],
                             attrs=spec.get("attrs")),
                   target=GPUTarget("cuda", 90, 32),
                   options={"num_warps": spec["num_warps"], "num_stages": spec["num_stages"]})
print(json.dumps({"wgmma": "wgmma" in k.asm["ptx"], "shared": k.metadata.shared,
                  "cubin": len(k.asm["cubin"])}))
"""


def test_sm90_compile_of_a_forward_spec():
    """The bf16 forward of AlexNet's conv1 compiles for the H200 with tensor cores (wgmma), on this machine."""
    name = next(s["name"] for s in codegen_specs.CONV_SPECS if s["name"].startswith("conv2d_fwd_small_c[bf16"))
    env = dict(os.environ, TRITON_INTERPRET="0")
    proc = subprocess.run([sys.executable, "-c", _COMPILE_ONE, name], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"{name} failed to compile for sm_90:\n{proc.stderr[-3000:]}"
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["wgmma"], f"{name}: no wgmma in the PTX: {info}"
    assert info["cubin"] > 0 and 0 < info["shared"] <= 227 * 1024, f"{name}: {info}"


def test_interpreter_runs_on_this_machine():
    if CUDA:
        pytest.skip("CUDA machine: the kernels ran compiled")
    assert triton_kernels.INTERPRET and conv_mod.INTERPRET, "no CUDA, yet the interpreter is off"


# --- GPU: AlexNet's five convolutions at batch 128 ------------------------------------------------------------

ALEXNET_CONVS = [  # (x shape, weight shape, stride, padding), from torch_model/model.py at 224x224
    ((128, 1, 224, 224), (96, 1, 11, 11), 4, 1),
    ((128, 96, 26, 26), (256, 96, 5, 5), 1, 2),
    ((128, 256, 12, 12), (384, 256, 3, 3), 1, 1),
    ((128, 384, 12, 12), (384, 384, 3, 3), 1, 1),
    ((128, 384, 12, 12), (256, 384, 3, 3), 1, 1),
]


# "2x torch's own error" needs a floor where torch's algorithm is far more exact than ours can be: cuDNN may
# pick a non-TF32 algorithm under allow_tf32 (TF32 keeps 10 mantissa bits: 2^-10), or sum fp32 in a tree where
# our wgrad adds up to ~4000 rows in a row per split (random walk: sqrt(4000) * 6e-8 ~ 4e-6, so 1e-5).
# bf16 has no floor: both sides round the output to bf16 (2^-9), which dominates.
RMS_FLOOR = {"fp32-ieee": 1e-5, "tf32": 2.0**-10, "bf16": 0.0}


def _rms(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.double() - ref).square().mean().sqrt() / ref.square().mean().sqrt()).item()


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["fp32-ieee", "tf32", "bf16"])
@pytest.mark.parametrize("layer", range(5), ids=[f"conv{i + 1}" for i in range(5)])
def test_gpu_alexnet_shapes(layer, mode):
    """Ours vs torch (cuDNN) in the same precision, both against float64: relative RMS error of the output and
    of every gradient at most 2x torch's own (or RMS_FLOOR[mode])."""
    x_shape, w_shape, stride, padding = ALEXNET_CONVS[layer]
    dtype = torch.bfloat16 if mode == "bf16" else torch.float32
    x64, w64 = _random(x_shape, torch.float64, 40), _random(w_shape, torch.float64, 41) * 0.05
    b64 = _random((w_shape[0],), torch.float64, 42) * 0.1

    def run(fn, dt):
        # conv1's input is the images: no grad of x there, as in training
        ts = [t.to(dt).requires_grad_(layer > 0 or i > 0) for i, t in enumerate((x64, w64, b64))]
        return fn(*ts, stride=stride, padding=padding), ts

    prev = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = mode == "tf32"
    try:
        precision = "ieee" if mode == "fp32-ieee" else "tf32"
        ours, ours_in = run(lambda *a, **k: conv2d_relu(*a, input_precision=precision, **k), dtype)
        theirs, theirs_in = run(lambda *a, **k: F.conv2d(*a, **k).relu(), dtype)
        ref, ref_in = run(lambda *a, **k: F.conv2d(*a, **k).relu(), torch.float64)
        dy = _random(ref.shape, torch.float64, 44)
        needs = [t.requires_grad for t in ref_in]
        g_ours = torch.autograd.grad(ours, [t for t in ours_in if t.requires_grad], dy.to(dtype))
        g_theirs = torch.autograd.grad(theirs, [t for t in theirs_in if t.requires_grad], dy.to(dtype))
        g_ref = torch.autograd.grad(ref, [t for t in ref_in if t.requires_grad], dy)
    finally:
        torch.backends.cudnn.allow_tf32 = prev
    names = [n for n, need in zip(("x", "weight", "bias"), needs) if need]
    for name, a, t, r in zip(["out", *names], [ours, *g_ours], [theirs, *g_theirs], [ref, *g_ref]):
        e_ours, e_torch = _rms(a, r), _rms(t, r)
        allowed = max(2 * e_torch, RMS_FLOOR[mode])
        assert e_ours <= allowed, (f"conv{layer + 1} {name} {mode}: our relative RMS error {e_ours:.2e} > "
                                   f"{allowed:.2e} (torch's own: {e_torch:.2e})")


@pytest.mark.gpu
def test_gpu_opcheck():
    for dtype, cl in ((torch.float32, False), (torch.bfloat16, True)):
        x = _random((2, 6, 9, 8), dtype, 50).requires_grad_(True)
        if cl:
            x = x.detach().to(memory_format=torch.channels_last).requires_grad_(True)
        w = _random((8, 3, 3, 3), dtype, 51).requires_grad_(True)
        b = _random((8,), dtype, 52).requires_grad_(True)
        torch.library.opcheck(torch.ops.triton_kernels.conv2d_fwd.default,
                              (x, w, b, [2, 1], [1, 1, 0, 2], [1, 2], 2, True, "ieee"))
        out = conv2d_relu(x, w, b, stride=(2, 1), padding=(1, 1), dilation=(1, 2), groups=2).detach()
        dy = _random(out.shape, dtype, 53)
        args = ([2, 1], [1, 1, 1, 1], [1, 2], 2, "ieee")
        torch.library.opcheck(torch.ops.triton_kernels.conv2d_dgrad.default, (dy, out, w.detach(), x.detach(), *args))
        torch.library.opcheck(torch.ops.triton_kernels.conv2d_wgrad.default, (dy, out, x.detach(), w.detach(), *args))
        torch.library.opcheck(torch.ops.triton_kernels.conv2d_bias_grad.default, (dy, out))


@pytest.mark.gpu
def test_gpu_torch_compile_of_conv2d_relu():
    x = _random((4, 3, 17, 17), seed=60)
    w, b = _random((8, 3, 5, 5), seed=61), _random((8,), seed=62)
    leaves = [t.clone().requires_grad_(True) for t in (x, w, b)]
    leaves_eager = [t.clone().requires_grad_(True) for t in (x, w, b)]
    fn = torch.compile(lambda a, c, d: conv2d_relu(a, c, d, stride=2, padding=2, input_precision="ieee").square().sum(),
                       fullgraph=True)
    loss = fn(*leaves)
    loss.backward()
    eager = conv2d_relu(*leaves_eager, stride=2, padding=2, input_precision="ieee").square().sum()
    eager.backward()
    assert_close_verbose(loss, eager, 1e-4, 1e-6, "compiled loss")
    for name, a, e in zip(("x", "weight", "bias"), leaves, leaves_eager):
        assert_close_verbose(a.grad, e.grad, 1e-4, 1e-5, f"compiled grad {name}")


def test_output_size_formula_is_torchs():
    """numpy_ref.geometry.conv_output_size, the one formula conv.py uses, against torch's own shapes (meta tensors)."""
    for h in (1, 2, 5, 13, 224):
        for k, s, p, d in ((1, 1, 0, 1), (3, 1, 1, 1), (11, 4, 1, 1), (5, 2, 2, 1), (3, 3, 0, 2), (2, 1, 0, 3)):
            if h + 2 * p < d * (k - 1) + 1:
                continue
            want = F.conv2d(torch.empty(1, 1, h, h, device="meta"), torch.empty(1, 1, k, k, device="meta"),
                            stride=s, padding=p, dilation=d).shape[-1]
            assert conv_mod.conv_output_size(h, k, s, p, d) == want, (h, k, s, p, d)
