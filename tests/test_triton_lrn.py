"""triton_kernels.lrn.local_response_norm against torch.nn.functional.local_response_norm in float64: values,
gradients, layouts, NaN, the general power, gradcheck, errors, and the sm_90 compile specs.

On a CPU machine the kernels run in the Triton interpreter (small odd shapes); the `gpu` tests run AlexNet's two
LRNs (after conv1 and conv2) at batch 128 on CUDA.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from triton_kernels._common import ELEMENTWISE_GPU_CONFIGS
import triton_kernels
from triton_kernels import _common, codegen_specs
from triton_kernels import lrn as lrn_mod
from triton_kernels.lrn import local_response_norm
from conftest import assert_close_verbose

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (kernels are checked in the interpreter otherwise)")
REPO = Path(__file__).resolve().parents[1]
EPS32 = torch.finfo(torch.float32).eps


# ----------------------------------------------------------------------------------------------------------------
# Tolerances, derived. Inside, every kernel works in fp32 (fp64 for fp64). Forward, relative to |out|: the sum of
# n squares (n = size) is off by <= n eps (positive terms), s = k + alpha/n * sum by 2 eps more; s ** -beta =
# exp2(-beta log2 s) turns a relative error r of s into beta r, and adds ~ln2 |beta log2 s| eps (|.| <= 6 here)
# plus an eps or two for exp2 and the product: <= (n + 10) eps in all; twice that as margin for the GPU's
# approximate lg2/ex2. Backward: dx = dy s^-beta - coef x sum_c (...): two terms that may cancel, so the bound is
# relative to their magnitudes |dy s^-beta| + coef |x| sum_c |dy x s^(-beta-1)| (`scale` below); each product
# carries the forward's error and the sum over n windows n eps more: 2 (2n + 10) eps. fp16 in and out adds the
# final rounding, half an fp16 ulp of the result: 2^-11 |expected| (one ulp, 2^-10, as margin), and, below fp16's
# smallest normal, its absolute spacing 2^-24.
# ----------------------------------------------------------------------------------------------------------------

def fwd_rtol(size: int) -> float:
    return 2 * (size + 10) * EPS32


def bwd_rtol(size: int) -> float:
    return 2 * (2 * size + 10) * EPS32


# fp64 computes in fp64, but its scalars reach the kernel as fp32 (Triton's type for a Python float): alpha/size,
# k and beta each off by <= 2^-24 relative, which s ** -beta turns into <= (|beta| (1 + |log s|) + 1) 2^-24: 2^-20
# covers the parameters used here.
FP64_RTOL = 2.0**-20

OUT_ROUNDING = {  # dtype -> (rtol of the final rounding, absolute spacing below the smallest normal)
    torch.float64: (0.0, 0.0),
    torch.float32: (EPS32, torch.finfo(torch.float32).tiny),
    torch.float16: (2.0**-10, 2.0**-24),
    torch.bfloat16: (2.0**-7, torch.finfo(torch.bfloat16).tiny),
}


def assert_within(actual: torch.Tensor, expected: torch.Tensor, bound: torch.Tensor, what: str):
    """|actual - expected| <= bound elementwise (NaN must meet NaN); the message names the worst element."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e, b = actual.detach().double().cpu(), expected.detach().double().cpu(), bound.detach().double().cpu()
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    if not torch.equal(nan_a, nan_e):
        idx = tuple(int(i) for i in (nan_a != nan_e).nonzero()[0])
        raise AssertionError(f"{what}: NaN in one only, first at {idx}: got {a[idx].item()!r}, "
                             f"expected {e[idx].item()!r}")
    same = (a == e) | nan_a  # equal infinities agree
    excess = torch.where(same, torch.full_like(a, -1.0), (a - e).abs() - b)
    if a.numel() and excess.max() > 0:
        flat = int(excess.argmax())
        idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), a.shape))
        raise AssertionError(f"{what}: {int((excess > 0).sum())}/{a.numel()} elements off; worst at {idx}: got "
                             f"{a[idx].item()!r}, expected {e[idx].item()!r} (|diff| {(a - e).abs()[idx].item():.3g}"
                             f" > bound {b[idx].item():.3g})")


def reference(x: torch.Tensor, dy: torch.Tensor, size: int, alpha: float, beta: float, k: float):
    """torch's LRN in float64 on the same values: out, dx, and the scale of dx's two terms (see above)."""
    x64 = x.detach().double().requires_grad_(True)
    out = F.local_response_norm(x64, size, alpha, beta, k)
    (dx,) = torch.autograd.grad(out, x64, dy.double())
    with torch.no_grad():  # s, from its definition: zero-padded window sums over dim 1
        sq = x64.square().transpose(1, -1)  # (N, *, C)
        pad = F.pad(sq, (size // 2, (size - 1) // 2))  # (N, *, C + size - 1)
        s = k + alpha / size * pad.unfold(-1, size, 1).sum(-1).transpose(1, -1)  # (N, C, *)
        t = (dy.double() * x64 * s.pow(-beta - 1)).abs().transpose(1, -1)  # (N, *, C)
        # window sums of t over W'(i) = [i - (size-1)//2, i + size//2]: the mirrored padding
        t_sum = F.pad(t, ((size - 1) // 2, size // 2)).unfold(-1, size, 1).sum(-1).transpose(1, -1)
        scale = (dy.double() * s.pow(-beta)).abs() + 2 * alpha * beta / size * x64.abs() * t_sum
    return out.detach(), dx, scale


def check_against_torch(x: torch.Tensor, size: int, what: str, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0, dy: torch.Tensor | None = None):
    """Forward and input gradient of ours (in x's dtype and layout) vs torch in float64 on the same values."""
    x_ours = x.detach().clone().requires_grad_(True)
    out = local_response_norm(x_ours, size, alpha=alpha, beta=beta, k=k)
    assert out.dtype == x.dtype and out.shape == x.shape, f"{what}: {out.dtype} {tuple(out.shape)}"
    # x's layout when dense (read in place), else contiguous (as torch's output then is)
    assert out.stride() == x.stride() if lrn_mod._is_dense(x) else out.is_contiguous(), (
        f"{what}: output strides {out.stride()}, input {x.stride()}")
    if dy is None:
        dy = torch.randn(x.shape, dtype=torch.float64, device=x.device).to(x.dtype)  # random, never zeros
    (dx,) = torch.autograd.grad(out, x_ours, dy)
    ref_out, ref_dx, scale = reference(x, dy, size, alpha, beta, k)
    rtol_out, tiny = OUT_ROUNDING[x.dtype]
    rtol_fwd, rtol_bwd = (FP64_RTOL, FP64_RTOL) if x.dtype == torch.float64 else (fwd_rtol(size), bwd_rtol(size))
    assert_within(out, ref_out, (rtol_fwd + rtol_out) * ref_out.abs() + tiny, f"{what} forward")
    assert_within(dx, ref_dx, rtol_bwd * scale + rtol_out * ref_dx.abs() + tiny, f"{what} grad x")
    return out, dx


# (shape, size, params): sizes odd and even, windows wider and narrower than C, 3-D (N, C, L) and 5-D inputs,
# the default alpha (where dx is nearly dy * s^-beta) and large ones (where the window term matters).
CASES = [
    ((2, 7, 5, 3), 5, {}),
    ((2, 7, 5, 3), 5, dict(alpha=0.5, beta=0.75, k=2.0)),
    ((2, 9, 3, 4), 4, dict(alpha=1.0, beta=0.6, k=1.0)),
    ((1, 13, 3, 3), 2, dict(alpha=2.0, beta=1.3, k=0.5)),
    ((3, 6, 2, 5), 3, dict(alpha=0.9, beta=0.75, k=1.0)),
    ((2, 3, 4, 3), 5, dict(alpha=1.5, beta=0.75, k=2.0)),  # C < size: every window is clipped
    ((2, 2, 3, 3), 6, dict(alpha=1.5, beta=0.5, k=1.0)),  # even, C < size/2
    ((2, 1, 5, 5), 3, dict(alpha=3.0)),  # one channel
    ((2, 5, 7, 7), 1, dict(alpha=0.8)),  # a window of one channel
    ((2, 6, 11), 3, dict(alpha=0.7)),  # 3-D: (N, C, L)
    ((1, 5, 2, 3, 2), 4, dict(alpha=1.2, k=1.5)),  # 5-D: (N, C, D, H, W)
    ((3, 11, 1, 1), 5, dict(alpha=0.6)),  # the classifier-like 1x1 map
]


def _case_id(case):
    shape, size, params = case
    return "x".join(map(str, shape)) + f"-n{size}" + "".join(f"-{k}={v}" for k, v in params.items())


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_matches_torch_fp32(case):
    shape, size, params = case
    torch.manual_seed(0)
    check_against_torch(torch.randn(shape, device=DEVICE), size, _case_id(case), **params)


@pytest.mark.parametrize("case", [c for c in CASES if len(c[0]) == 4][:4], ids=lambda c: _case_id(c))
def test_channels_last(case):
    shape, size, params = case
    torch.manual_seed(1)
    x = torch.randn(shape, device=DEVICE).to(memory_format=torch.channels_last)  # (N, C, H, W), C fastest
    out, dx = check_against_torch(x, size, "channels_last " + _case_id(case), **params)
    assert out.is_contiguous(memory_format=torch.channels_last) and dx.is_contiguous(
        memory_format=torch.channels_last), (out.stride(), dx.stride())


def test_other_layouts_and_a_strided_grad():
    """channels_last_3d, a permuted dense layout (read in place), a strided view (copied to contiguous, as torch's
    output is), and an incoming gradient in another layout than x."""
    torch.manual_seed(2)
    x5 = torch.randn(2, 6, 3, 2, 4, device=DEVICE).to(memory_format=torch.channels_last_3d)
    out, _ = check_against_torch(x5, 3, "channels_last_3d", alpha=0.9)
    assert out.stride() == x5.stride()
    xp = torch.randn(2, 5, 4, 3, device=DEVICE).permute(0, 1, 3, 2)  # (2, 5, 3, 4), W before H in memory
    out, _ = check_against_torch(xp, 4, "permuted", alpha=0.9)
    assert out.stride() == xp.stride()
    xs = torch.randn(2, 10, 5, 8, device=DEVICE)[:, ::2, :, 1::2]  # (2, 5, 5, 4), not dense
    out, _ = check_against_torch(xs, 3, "strided", alpha=0.9)
    assert out.is_contiguous() and out.stride() == F.local_response_norm(xs, 3).stride()
    x = torch.randn(2, 5, 4, 3, device=DEVICE)
    dy = torch.randn(3, 4, 5, 2, device=DEVICE).permute(3, 2, 1, 0)  # (2, 5, 4, 3), reversed strides
    check_against_torch(x, 5, "strided grad", alpha=0.9, dy=dy)


def test_3d_input_is_n_c_l_like_torch():
    """Like torch, a 3-D x is (N, C, L): the window runs over dim 1. An unbatched image (C, H, W) would be
    normalized over H, in torch as here; unsqueeze(0) it to normalize over channels."""
    torch.manual_seed(3)
    x = torch.randn(4, 6, 5, device=DEVICE)
    out = local_response_norm(x, 3, alpha=1.0)
    assert_close_verbose(out, F.local_response_norm(x.double(), 3, alpha=1.0), 0.0, fwd_rtol(3), "3-D")
    image = torch.randn(6, 5, 4, device=DEVICE)  # (C, H, W)
    per_image = local_response_norm(image.unsqueeze(0), 3, alpha=1.0).squeeze(0)
    assert_close_verbose(per_image, F.local_response_norm(image.unsqueeze(0).double(), 3, alpha=1.0)[0], 0.0,
                         fwd_rtol(3), "unsqueezed image")


def test_paper_parameters():
    """The paper's b = a / (2 + 1e-4 * sum over 5 channels of a^2)^0.75 is torch's (and our) size=5,
    alpha=5e-4, k=2: torch divides alpha by size."""
    torch.manual_seed(4)
    x = 20 * torch.randn(2, 9, 4, 4, device=DEVICE, dtype=torch.float64)  # ReLU-sized activations
    out = local_response_norm(x, 5, alpha=5e-4, beta=0.75, k=2.0)
    sq = F.pad(x.square(), (0, 0, 0, 0, 2, 2))  # (N, C + 4, H, W)
    paper = x / (2.0 + 1e-4 * sum(sq[:, j:j + 9] for j in range(5))) ** 0.75
    # the scalars travel as fp32: alpha/size = 1e-4 is off by <= 2^-24 relative
    assert_close_verbose(out, paper, 0.0, 1e-12 + 2.0**-24, "paper formula")


def test_fp16():
    torch.manual_seed(5)
    x = torch.randn(2, 7, 5, 3, device=DEVICE).half()
    check_against_torch(x, 5, "fp16", alpha=0.5, k=2.0)
    check_against_torch(x.to(memory_format=torch.channels_last), 4, "fp16 channels_last", alpha=0.5, k=2.0)


def test_fp64_and_gradcheck():
    torch.manual_seed(6)
    check_against_torch(torch.randn(2, 7, 3, 3, device=DEVICE, dtype=torch.float64), 5, "fp64", alpha=0.5)
    for size, params in ((4, dict(alpha=1.3, beta=0.6, k=0.7)),
                         (3, dict(alpha=-0.3, beta=2.0, k=-1.5))):  # the second takes the general power
        x = torch.randn(2, 5, 1, 1, dtype=torch.float64, device=DEVICE, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t: local_response_norm(t, size, **params), (x,), eps=1e-6,
                                        atol=1e-7), (size, params)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy in the interpreter: 0/0, log2(0)
def test_nan_and_inf_propagate_like_torch():
    """A NaN poisons every window it is in, forward and backward, and an inf zeroes its neighbours (x / inf) and
    makes itself NaN (inf / inf), exactly where torch's do."""
    torch.manual_seed(7)
    for size in (3, 4):
        x = torch.randn(2, 9, 3, 2, device=DEVICE)
        x[0, 2, 1, 0] = float("nan")
        x[1, 6, 0, 1] = float("inf")
        x[1, 0, 2, 1] = float("-inf")
        check_against_torch(x, size, f"nan/inf size {size}", alpha=0.5)


# Parameters off the usual k > 0, alpha >= 0, beta > 0: s can be 0 or negative, beta 0 or negative, and the kernels'
# power takes its general form (IEEE pow's signs, NaN for a fractional power of a negative, 0 ** 0 = 1).
GENERAL = [
    dict(alpha=1.0, beta=0.75, k=0.0),  # all-zero windows: s = 0, out = 0 / 0 = NaN, as torch
    dict(alpha=1.0, beta=1.0, k=-2.0),  # s < 0 and > 0, an odd integer power
    dict(alpha=0.5, beta=2.0, k=-1.0),  # an even integer power
    dict(alpha=0.5, beta=0.75, k=-1.0),  # a fractional power of a negative s: NaN
    dict(alpha=0.5, beta=0.0, k=1.0),  # out = x
    dict(alpha=-0.5, beta=-1.0, k=1.0),  # negative alpha and beta
]


@pytest.mark.parametrize("params", GENERAL, ids=[str(p) for p in GENERAL])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy in the interpreter: 0/0, log2(0)
def test_general_power_matches_torch(params):
    torch.manual_seed(8)
    x = torch.randn(2, 7, 3, 3, device=DEVICE)
    x[0, :4] = 0.0  # all-zero windows (and 0 * s^-beta)
    x[1, 5, 1, 1] = float("nan")
    assert lrn_mod._kernel_args(x, 4, params["alpha"], params["beta"], params["k"])["GENERAL_POW"]
    check_against_torch(x, 4, str(params), **params)


@triton.jit
def _pow_probe_kernel(s_ptr, out_ptr, e, N: tl.constexpr, GENERAL_POW: tl.constexpr):
    offs = tl.arange(0, N)
    s = tl.load(s_ptr + offs)
    tl.store(out_ptr + offs, lrn_mod._pow(s, e, GENERAL_POW))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy in the interpreter: 0/0, log2(0)
def test_pow_helper_is_torch_pow():
    """The kernels' _pow against torch.pow on IEEE pow's special values; the fast form only where it is used
    (s > 0, +inf, NaN). Not 0.5 or -0.5: torch.pow takes sqrt / rsqrt for them, which give NaN at -inf where
    IEEE pow (and ours) gives inf / 0 -- a difference LRN meets only with alpha < 0 and an infinite input."""
    specials = [0.0, -0.0, 0.5, 2.0, 3.0, float("inf"), float("nan"), -0.5, -2.0, -3.0, float("-inf"), 1.0,
                -1.0, 1e-3, -1e-3, 7.5]
    s = torch.tensor(specials, dtype=torch.float64, device=DEVICE)  # (16,)
    for e in (0.75, -0.75, -1.75, 1.0, -1.0, 2.0, -2.0, 3.0, -3.0, 0.0, 1.5):
        for general, sel in ((True, slice(None)), (False, slice(2, 7) if e != 0 else slice(0))):
            out = torch.full_like(s, 12345.0)
            _pow_probe_kernel[(1,)](s, out, e, N=16, GENERAL_POW=general)
            assert_close_verbose(out[sel], torch.pow(s, e)[sel], 0.0, 1e-14, f"pow(s, {e}) general={general}")


def test_empty_input_is_returned_like_torch():
    x = torch.randn(0, 4, 3, 3, device=DEVICE)
    assert local_response_norm(x, 3) is x and F.local_response_norm(x, 3) is x


def test_forward_writes_every_element_and_no_grad():
    """Outputs are allocated uninitialized: a NaN-free x gives a NaN-free out; under no_grad too."""
    torch.manual_seed(9)
    x = torch.randn(3, 17, 7, 9, device=DEVICE)  # 3213 elements: 13 programs of 256, the last partial
    with torch.no_grad():
        out = local_response_norm(x, 5, alpha=0.5)
    assert not out.requires_grad and torch.isfinite(out).all()
    assert_close_verbose(out, F.local_response_norm(x.double(), 5, alpha=0.5), 0.0, fwd_rtol(5), "no_grad")


@pytest.mark.parametrize("args, kwargs, match", [
    ((torch.randn(2, 3), 3), {}, r"x must be \(N, C, \*\) with at least 3 dims, got shape \(2, 3\)"),
    ((torch.randn(1, 3, 4), 0), {}, r"size must be between 1 and 32 .*got 0"),
    ((torch.randn(1, 3, 4), 33), {}, r"size must be between 1 and 32 .*got 33"),
    ((torch.randn(1, 3, 4), 2.0), {}, r"size must be an int, got 2.0"),
    ((torch.randn(1, 3, 4), True), {}, r"size must be an int, got True"),
    ((torch.randn(1, 3, 4), 3), dict(alpha="1"), r"alpha must be a finite real number, got '1'"),
    ((torch.randn(1, 3, 4), 3), dict(beta=float("nan")), r"beta must be a finite real number, got nan"),
    ((torch.randn(1, 3, 4), 3), dict(k=float("inf")), r"k must be a finite real number, got inf"),
    ((torch.randn(1, 3, 4), 3), dict(k=None), r"k must be a finite real number, got None"),
    (([[[1.0]]], 3), {}, r"x must be a torch.Tensor, got list"),
    ((torch.ones(1, 3, 4, dtype=torch.int64), 3), {}, r"x dtype must be one of .*got torch.int64"),
])
def test_bad_arguments_raise_value_error(args, kwargs, match):
    args = tuple(a.to(DEVICE) if isinstance(a, torch.Tensor) else a for a in args)
    with pytest.raises(ValueError, match=match):
        local_response_norm(*args, **kwargs)


def test_bfloat16_refused_in_the_interpreter(monkeypatch):
    """Refused by the public function and by both ops, before anything is launched."""
    if CUDA:
        pytest.skip("CUDA machine: bf16 runs compiled (test_gpu_alexnet_shapes)")

    def refuse(*args, **kwargs):
        raise AssertionError("a kernel was launched for a call that should have been refused")

    monkeypatch.setattr(lrn_mod, "launcher", refuse)
    x = torch.randn(1, 3, 4, 4, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"x dtype torch.bfloat16 is not supported in the Triton interpreter"):
        local_response_norm(x, 3)
    with pytest.raises(ValueError, match=r"x dtype torch.bfloat16 is not supported in the Triton interpreter"):
        torch.ops.triton_kernels.local_response_norm(x, 3, 1e-4, 0.75, 1.0)
    with pytest.raises(ValueError, match=r"x dtype torch.bfloat16 is not supported in the Triton interpreter"):
        torch.ops.triton_kernels.local_response_norm_backward(x, x, 3, 1e-4, 0.75, 1.0)


def test_cpu_tensor_refused_without_interpreter(monkeypatch):
    monkeypatch.setattr(_common, "INTERPRET", False)
    with pytest.raises(ValueError, match=r"x must be on a CUDA device, got cpu \(shape \(1, 2, 4, 4\)\)"):
        local_response_norm(torch.randn(1, 2, 4, 4), 3)


def test_op_refuses_malformed_calls():
    """The registered ops (torch.ops.triton_kernels.local_response_norm*) check their own arguments too."""
    x = torch.randn(1, 4, 3, 3, device=DEVICE)
    ops = torch.ops.triton_kernels
    with pytest.raises(ValueError, match=r"x must be \(N, C, \*\) with at least 3 dims, got shape \(3, 3\)"):
        ops.local_response_norm(x[0, 0], 3, 1e-4, 0.75, 1.0)
    with pytest.raises(ValueError, match=r"strides \(72, 18, 3, 1\)"):
        ops.local_response_norm(torch.randn(1, 8, 3, 3, device=DEVICE)[:, ::2], 3, 1e-4, 0.75, 1.0)
    with pytest.raises(ValueError, match=r"size 40"):
        ops.local_response_norm(x, 40, 1e-4, 0.75, 1.0)
    with pytest.raises(ValueError, match=r"grad_out must match x's shape \(1, 4, 3, 3\).*got \(1, 4, 3\)"):
        ops.local_response_norm_backward(x[..., 0], x, 3, 1e-4, 0.75, 1.0)


def test_interpreter_runs_on_this_machine():
    """The CPU tests above ran in the interpreter (the premise of this file on a CPU box)."""
    if CUDA:
        pytest.skip("CUDA machine: the kernels ran compiled")
    assert triton_kernels.INTERPRET and lrn_mod.INTERPRET
    x = torch.randn(1, 3, 2, 2)
    out = torch.full_like(x, float("nan"))
    lrn_mod._lrn_fwd_kernel[(1,)](x, out, 12, 3, 4, 0.5 / 3, -0.75, 1.0, SIZE=3, GENERAL_POW=False,
                                  INDEX_64=False, ACC_DTYPE=tl.float32, BLOCK=16)
    assert_close_verbose(out, F.local_response_norm(x.double(), 3, alpha=0.5), 0.0, fwd_rtol(3),
                         "direct kernel call")


def test_tritonize_swaps_local_response_norm():
    """tritonize: nn.LocalResponseNorm -> TritonLocalResponseNorm with the same parameters and training flag (a
    subclass with its own forward stays); twice is once; the module computes torch's LRN, gradient included."""
    from torch import nn

    from triton_kernels.modules import TritonLocalResponseNorm, tritonize

    class MyLRN(nn.LocalResponseNorm):
        pass

    net = nn.Sequential(nn.LocalResponseNorm(4, alpha=0.9, beta=0.6, k=1.5), nn.Sequential(MyLRN(3)))
    net[0].eval()
    tritonize(net)
    tritonize(net)
    assert type(net[0]) is TritonLocalResponseNorm and type(net[1][0]) is MyLRN
    assert (net[0].size, net[0].alpha, net[0].beta, net[0].k, net[0].training) == (4, 0.9, 0.6, 1.5, False)
    torch.manual_seed(13)
    x = torch.randn(2, 6, 3, 3, device=DEVICE, requires_grad=True)
    x_ref = x.detach().double().requires_grad_(True)
    out, ref = net[0](x), nn.LocalResponseNorm(4, alpha=0.9, beta=0.6, k=1.5)(x_ref)
    assert_close_verbose(out, ref, 0.0, fwd_rtol(4), "TritonLocalResponseNorm")
    dy = torch.randn(ref.shape, dtype=torch.float64, device=DEVICE)
    out.backward(dy.float())
    ref.backward(dy)
    # dx here is O(1): 1e-6 absolute is ~4x bwd_rtol(4) of its terms (check_against_torch has the exact bound)
    assert_close_verbose(x.grad, x_ref.grad, 1e-6, 1e-5, "TritonLocalResponseNorm grad")


# ----------------------------------------------------------------------------------------------------------------
# sm_90 codegen: lrn.py's specs in triton_kernels/codegen_specs.py (`python -m triton_kernels.codegen --filter lrn`).
# ----------------------------------------------------------------------------------------------------------------

def test_sm90_specs_cover_both_kernels_dtypes_and_layouts():
    specs = codegen_specs.LRN_SPECS
    assert len({s["name"] for s in specs}) == len(specs), "duplicate spec names"
    assert len(specs) == 2 * 3 * 2 * len(ELEMENTWISE_GPU_CONFIGS)  # (fwd, bwd) x dtypes x layouts x configs
    for s in specs:
        assert set(s) == {"name", "fn", "signature", "constexprs", "num_warps", "num_stages"}
        assert list(s["signature"]) == list(s["fn"].arg_names), s["name"]  # every argument, in order
        assert all(s["signature"][k] == "constexpr" for k in s["constexprs"]), s["name"]
        assert {v for k, v in s["signature"].items() if k not in s["constexprs"]} <= {
            "*fp32", "*bf16", "*fp16", "i32", "fp32"}, s["name"]
    assert {(s["fn"].__name__, s["signature"]["x_ptr"], s["constexprs"].get("stride_c")) for s in specs} == {
        (fn, f"*{ty}", cl) for fn in ("_lrn_fwd_kernel", "_lrn_bwd_kernel") for ty in ("fp32", "bf16", "fp16")
        for cl in (None, 1)}


def test_specs_compile_for_sm90():
    """The bf16 fwd and bwd specs compile for sm_90 (in a fresh process: the kernels here are interpreted), and the
    backward loads x at 2*SIZE-1 distinct channels, not SIZE*SIZE: the compiler merged the repeated taps."""
    script = textwrap.dedent('''
        import re, triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
        from triton_kernels.codegen_specs import LRN_SPECS
        for spec in LRN_SPECS:
            if "BLOCK=256,w4" not in spec["name"] or "bf16" not in spec["name"]:
                continue
            src = ASTSource(fn=spec["fn"], signature=spec["signature"], constexprs=spec["constexprs"])
            k = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                               options={"num_warps": spec["num_warps"], "num_stages": spec["num_stages"]})
            ptx = k.asm["ptx"]
            print(spec["name"], len(re.findall(r"ld\\.global", ptx)), len(re.findall(r"ex2\\.approx", ptx)),
                  len(re.findall(r"lg2\\.approx", ptx)))
    ''')
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=os.pathsep.join(
        [str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {line.split()[0]: [int(v) for v in line.split()[1:]] for line in proc.stdout.strip().splitlines()}
    assert len(rows) == 4, proc.stdout  # (fwd, bwd) x (nchw, nhwc), bf16
    per_thread = 256 // (4 * 32)  # BLOCK=256 over 4 warps: 2 elements a thread, one load instruction each
    n = codegen_specs.ALEXNET_LRN_SIZE
    for name, (loads, ex2, lg2) in rows.items():
        if name.startswith("lrn_fwd"):
            assert (loads, ex2, lg2) == (n * per_thread, per_thread, per_thread), (name, loads, ex2, lg2)
        else:  # x at 2n-1 channels and dy at n; n powers s^(-beta-1) and s_i^-beta sharing s_i's log2
            assert (loads, ex2, lg2) == ((3 * n - 1) * per_thread, (n + 1) * per_thread, n * per_thread), (
                name, loads, ex2, lg2)


# ----------------------------------------------------------------------------------------------------------------
# GPU: AlexNet's two LRNs (after conv1 and conv2) at batch 128, forward and backward; opcheck; torch.compile.
# ----------------------------------------------------------------------------------------------------------------

ALEXNET_LRNS = [(128, 96, 55, 55), (128, 256, 27, 27)]
GPU_CASES = ([(shape, dtype, False) for shape in ALEXNET_LRNS for dtype in (torch.float32, torch.bfloat16)]
             + [(ALEXNET_LRNS[1], torch.bfloat16, True), (ALEXNET_LRNS[1], torch.float32, True),
                (ALEXNET_LRNS[0], torch.float16, False)])


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("shape, dtype, channels_last", GPU_CASES,
                         ids=["x".join(map(str, s)) + f"-{str(d)[6:]}-{'nhwc' if cl else 'nchw'}"
                              for s, d, cl in GPU_CASES])
def test_gpu_alexnet_shapes(shape, dtype, channels_last):
    torch.manual_seed(10)
    x = torch.relu(10 * torch.randn(shape, device="cuda")).to(dtype)  # ReLU outputs, as after conv1/conv2
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    check_against_torch(x, 5, f"{shape} {dtype}", alpha=5e-4, beta=0.75, k=2.0)  # the paper's LRN


@pytest.mark.gpu
@gpu
def test_gpu_opcheck():
    torch.manual_seed(11)
    x = torch.randn(4, 7, 5, 3, device="cuda", requires_grad=True)
    op = torch.ops.triton_kernels.local_response_norm.default
    torch.library.opcheck(op, (x, 5, 0.5, 0.75, 2.0))
    xc = x.detach().to(memory_format=torch.channels_last).requires_grad_(True)
    torch.library.opcheck(op, (xc, 4, 0.5, 0.75, 1.0))


@pytest.mark.gpu
@gpu
def test_gpu_torch_compile():
    torch.manual_seed(12)
    x = torch.randn(8, 16, 13, 13, device="cuda", requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    fn = torch.compile(lambda t: local_response_norm(t, 5, 5e-4, 0.75, 2.0).square().sum(), fullgraph=True)
    fn(x).backward()
    F.local_response_norm(x_ref, 5, 5e-4, 0.75, 2.0).square().sum().backward()
    assert_close_verbose(x.grad, x_ref.grad, 1e-6, 1e-5, "compiled grad")
