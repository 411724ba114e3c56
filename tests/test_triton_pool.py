"""triton_kernels.max_pool2d against torch.nn.functional.max_pool2d: values, indices, gradients, layouts, errors.

On a CPU machine the kernels run in the Triton interpreter (tiny odd shapes); the `gpu` tests run the AlexNet
pool shapes at batch 128 on CUDA.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from triton_kernels._common import ELEMENTWISE_GPU_CONFIGS
import triton_kernels
from triton_kernels import max_pool2d
from triton_kernels import _common
from triton_kernels import codegen_specs
from triton_kernels import pool as pool_mod
from conftest import CUDA, DEVICE, assert_close_verbose


# Max pooling only copies values, so the forward is exact in every dtype; the backward sums at most
# ceil(K/S)^2 gradients in fp32 (in torch's order), so fp32/fp64 are exact too and fp16/bf16 differ from torch
# by at most the final rounding. On the CPU the reference is torch's CPU backward, which adds in the same order:
# bitwise equal. cuda's kernels are not promised to keep that order, so there fp32 gets one rounding of room.
TOL = {  # dtype -> (atol, rtol) for the gradient
    torch.float64: (0.0, 0.0),
    torch.float32: (1e-6, 1e-6) if CUDA else (0.0, 0.0),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (1e-2, 1e-2),
}


def assert_indices_equal(actual: torch.Tensor, expected: torch.Tensor, what: str):
    assert actual.dtype == torch.int64, f"{what}: indices dtype {actual.dtype}, want int64"
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    bad = actual.cpu() != expected.cpu()
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise AssertionError(f"{what}: {int(bad.sum())}/{bad.numel()} indices differ; first at {idx}:"
                             f" got {actual[idx].item()}, expected {expected[idx].item()}")


def check_against_torch(x: torch.Tensor, what: str, **kwargs):
    """Forward values, indices, output layout and the input gradient of ours vs torch's on the same x, through
    both records the forward can keep for the backward: torch's flat indices (return_indices=True) and the
    1-byte taps (return_indices=False, x requiring grad)."""
    x_ours = x.detach().clone().requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    out, idx = max_pool2d(x_ours, **kwargs, return_indices=True)
    ref, ref_idx = F.max_pool2d(x_ref, **kwargs, return_indices=True)
    assert_close_verbose(out, ref, 0.0, 0.0, f"{what} forward")
    assert_indices_equal(idx, ref_idx, f"{what} indices")
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        assert out.is_contiguous(memory_format=torch.channels_last), f"{what}: output lost channels_last"
    grad = torch.randn(ref.shape, dtype=x.dtype, device=x.device)  # (N, C, OH, OW) random, never zeros
    (gx_ref,) = torch.autograd.grad(ref, x_ref, grad)
    (gx_flat,) = torch.autograd.grad(out, x_ours, grad)
    assert_close_verbose(gx_flat, gx_ref, *TOL[x.dtype], f"{what} grad x (flat indices)")
    out_taps = max_pool2d(x_ours, **kwargs)
    assert_close_verbose(out_taps, ref, 0.0, 0.0, f"{what} forward (taps)")
    (gx,) = torch.autograd.grad(out_taps, x_ours, grad)
    assert_close_verbose(gx, gx_ref, *TOL[x.dtype], f"{what} grad x (taps)")
    assert gx.stride() == x_ours.stride() or not x.is_contiguous(), f"{what}: grad layout {gx.stride()}"


# (shape, kwargs): odd sizes, every argument form; AlexNet's own pool (3, stride 2) on a 13x13 map first.
CASES = [
    ((2, 3, 13, 13), dict(kernel_size=3, stride=2)),
    ((2, 5, 7, 9), dict(kernel_size=2)),
    ((1, 3, 7, 7), dict(kernel_size=3, stride=1, padding=1)),
    ((2, 3, 9, 11), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0))),
    ((1, 2, 11, 8), dict(kernel_size=3, stride=2, dilation=2)),
    ((1, 3, 13, 10), dict(kernel_size=(2, 3), stride=(3, 2), padding=(1, 1), dilation=(3, 2))),
    ((2, 3, 8, 8), dict(kernel_size=3, stride=2, ceil_mode=True)),
    ((1, 3, 9, 6), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ((1, 2, 10, 7), dict(kernel_size=2, stride=3, ceil_mode=True)),  # last window would start in the padding
    ((1, 3, 7, 13), dict(kernel_size=(1, 3), stride=(1, 2), dilation=(1, 2), ceil_mode=True)),
    ((3, 1, 5, 5), dict(kernel_size=5)),  # one window covers the whole image
    ((2, 3, 1, 9), dict(kernel_size=(1, 2), stride=(1, 2))),
    ((1, 4, 6, 6), dict(kernel_size=4, stride=1, padding=2)),  # padding = kernel/2, the largest allowed
    ((1, 3, 6, 7), dict(kernel_size=[3], stride=[], padding=[1])),  # one-element lists, empty stride
]


def _case_id(case):
    shape, kw = case
    return "x".join(map(str, shape)) + "-" + "-".join(f"{k}={v}" for k, v in kw.items())


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_matches_torch_fp32(case):
    shape, kwargs = case
    torch.manual_seed(0)
    check_against_torch(torch.randn(shape, device=DEVICE), _case_id(case), **kwargs)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_matches_torch_other_dtypes(dtype):
    # bfloat16 is wrong in the Triton interpreter (refused there, test_bfloat16_refused_in_the_interpreter): it is
    # checked in the gpu tests.
    torch.manual_seed(1)
    check_against_torch(torch.randn(2, 3, 9, 8, device=DEVICE, dtype=dtype), str(dtype), kernel_size=3, stride=2,
                        padding=1)


def test_unbatched():
    torch.manual_seed(2)
    check_against_torch(torch.randn(3, 9, 7, device=DEVICE), "unbatched", kernel_size=3, stride=2, ceil_mode=True)


@pytest.mark.parametrize("kwargs", [dict(kernel_size=3, stride=2), dict(kernel_size=2, padding=1, dilation=2)])
def test_channels_last(kwargs):
    torch.manual_seed(3)
    x = torch.randn(2, 5, 9, 7, device=DEVICE).to(memory_format=torch.channels_last)  # (N, C, H, W), C fastest
    check_against_torch(x, "channels_last", **kwargs)


def test_one_channel_channels_last_layout_follows_torch():
    """(N, 1, H, W) is contiguous in both formats; its strides decide, as in torch (a channels_last AlexNet's
    first pool sees conv1's 96 channels, but a C == 1 input must not flip the layout either)."""
    torch.manual_seed(5)
    x = torch.randn(2, 1, 9, 9, device=DEVICE).to(memory_format=torch.channels_last).requires_grad_(True)
    out, idx = max_pool2d(x, 3, 2, return_indices=True)
    ref, ref_idx = F.max_pool2d(x, 3, 2, return_indices=True)
    assert out.stride() == ref.stride() and idx.stride() == ref_idx.stride(), (out.stride(), ref.stride())
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
    (gx,) = torch.autograd.grad(out, x, torch.ones_like(out))
    (gx_ref,) = torch.autograd.grad(ref, x, torch.ones_like(ref))
    assert torch.equal(gx, gx_ref)


def test_strided_input_and_grad():
    """A view that is neither NCHW- nor channels_last-contiguous, and a non-contiguous incoming gradient."""
    torch.manual_seed(4)
    base = torch.randn(2, 6, 11, 9, device=DEVICE)
    x = base[:, ::2, 1:, :].transpose(2, 3).requires_grad_(True)  # (2, 3, 9, 10), odd strides
    x_ref = x.detach().clone().requires_grad_(True)
    out = max_pool2d(x, 3, 2)
    ref = F.max_pool2d(x_ref, 3, 2)
    assert_close_verbose(out, ref, 0.0, 0.0, "strided forward")
    grad = torch.randn(ref.shape[::-1], device=DEVICE).permute(3, 2, 1, 0)  # (N, C, OH, OW), reversed strides
    (gx,) = torch.autograd.grad(out, x, grad)
    (gx_ref,) = torch.autograd.grad(ref, x_ref, grad)
    assert_close_verbose(gx, gx_ref, 0.0, 0.0, "strided grad x")
    # out.sum() hands the backward an expanded gradient: every stride 0
    (gx,) = torch.autograd.grad(max_pool2d(x, 3, 2).sum(), x)
    (gx_ref,) = torch.autograd.grad(F.max_pool2d(x_ref, 3, 2).sum(), x_ref)
    assert_close_verbose(gx, gx_ref, 0.0, 0.0, "grad x from an expanded gradient")


def test_ties_nan_and_inf_follow_torch():
    """Ties: the first maximum in the window wins. NaN wins over anything. An all -inf window points at its first
    element inside the image, as torch's does."""
    torch.manual_seed(5)
    x = torch.randint(0, 3, (2, 3, 9, 9), device=DEVICE).float()  # (N, C, H, W), many ties
    x[0, 0, 2, 3] = float("nan")
    x[1, 2, 4:7, 4:7] = float("-inf")
    x[1, 1, 0, 0] = float("inf")
    check_against_torch(x, "ties/nan/inf", kernel_size=3, stride=2, padding=1)


def test_several_nans_in_a_window_follow_torch():
    """torch takes a NaN over anything, and a later NaN over an earlier one: out is NaN, the index points at the
    window's last NaN, and the gradient goes there. A window of NaN only, and NaN next to +inf, too."""
    torch.manual_seed(12)
    x = torch.randn(1, 2, 7, 7, device=DEVICE)  # (N, C, H, W)
    x[0, 0, 1, 1] = x[0, 0, 2, 2] = float("nan")  # two NaN in the window of output (0, 0) and (1, 1)
    x[0, 1, 4:7, 4:7] = float("nan")  # a window of NaN only
    x[0, 1, 0, 0], x[0, 1, 0, 1] = float("nan"), float("inf")
    for kwargs in (dict(kernel_size=3, stride=2), dict(kernel_size=3, stride=1, padding=1)):
        check_against_torch(x, f"several NaN {kwargs}", **kwargs)


def test_return_indices_false_returns_tensor_and_grad_accumulates():
    torch.manual_seed(6)
    x = torch.randn(1, 2, 6, 5, device=DEVICE, requires_grad=True)
    out = max_pool2d(x, 2)
    assert isinstance(out, torch.Tensor)
    (2 * out).sum().backward()
    (out.detach() * 0 + max_pool2d(x, 2)).sum().backward()  # a second backward adds to x.grad
    x_ref = x.detach().clone().requires_grad_(True)
    (3 * F.max_pool2d(x_ref, 2)).sum().backward()
    assert_close_verbose(x.grad, x_ref.grad, 0.0, 0.0, "accumulated grad")


def test_what_the_forward_records():
    """torch's int64 flat indices when asked for; 1-byte taps kh*KW + kw when only a backward needs them;
    nothing under no_grad or for an input that needs no gradient."""
    torch.manual_seed(11)
    x = torch.randn(2, 3, 9, 8, device=DEVICE)  # (N, C, H, W)
    args = ([3, 3], [2, 2], [1, 1], [1, 1], False)
    out_t, taps = torch.ops.triton_kernels.max_pool2d(x, *args, "taps")
    out_n, none = torch.ops.triton_kernels.max_pool2d(x, *args, "none")
    ref, flat = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert taps.dtype == torch.int8 and taps.shape == ref.shape and none.numel() == 0
    assert_close_verbose(out_t, ref, 0.0, 0.0, "taps forward")
    assert_close_verbose(out_n, ref, 0.0, 0.0, "no-indices forward")
    # the tap kh*KW + kw of the maximum, turned back into torch's flat index: ih*W + iw
    oh = torch.arange(ref.shape[2], device=DEVICE).view(-1, 1)  # (OH, 1)
    ow = torch.arange(ref.shape[3], device=DEVICE).view(1, -1)  # (1, OW)
    kh, kw = taps.long() // 3, taps.long() % 3  # (N, C, OH, OW)
    assert_indices_equal((oh * 2 - 1 + kh) * x.shape[3] + (ow * 2 - 1 + kw), flat, "taps as flat indices")
    with torch.no_grad():
        assert_close_verbose(max_pool2d(x.requires_grad_(True), 3, 2, 1), ref, 0.0, 0.0, "no_grad forward")
    x5 = torch.randn(1, 1, 12, 12, device=DEVICE)
    _, wide = torch.ops.triton_kernels.max_pool2d(x5, [12, 11], [1, 1], [0, 0], [1, 1], False, "taps")
    assert wide.dtype == torch.int16  # 132 taps do not fit in int8


def test_batch_of_zero():
    out, idx = max_pool2d(torch.randn(0, 3, 6, 6, device=DEVICE), 2, return_indices=True)
    assert out.shape == idx.shape == (0, 3, 3, 3)


def test_gradcheck_float64():
    torch.manual_seed(7)
    x = torch.randn(1, 2, 4, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: max_pool2d(t, 2, 1, padding=1), (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("x_shape, kwargs, match", [
    ((5, 5), dict(kernel_size=2), r"x must be \(N, C, H, W\) or \(C, H, W\), got shape \(5, 5\)"),
    ((1, 1, 2, 3, 4), dict(kernel_size=2), r"got shape \(1, 1, 2, 3, 4\)"),
    ((1, 2, 6, 6), dict(kernel_size=2, padding=2), r"padding must be between 0 and half the kernel_size"),
    ((1, 2, 6, 6), dict(kernel_size=0), r"kernel_size must be positive"),
    ((1, 2, 6, 6), dict(kernel_size=2, stride=0), r"stride must be positive"),
    ((1, 2, 6, 6), dict(kernel_size=2, dilation=0), r"dilation must be positive"),
    ((1, 2, 6, 6), dict(kernel_size=(2, 2, 2)), r"kernel_size must be an int or a pair of ints"),
    ((1, 2, 6, 6), dict(kernel_size=2.0), r"kernel_size must be an int or a pair of ints"),
    ((1, 2, 6, 6), dict(kernel_size=2, stride="2"), r"stride must be an int or a pair of ints"),
    ((1, 2, 2, 6), dict(kernel_size=3), r"output size \(0, 2\) is too small: x shape \(1, 2, 2, 6\)"),
    ((1, 0, 6, 6), dict(kernel_size=2), r"non-empty C, H, W, got shape \(1, 0, 6, 6\)"),
])
def test_bad_arguments_raise_value_error(x_shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        max_pool2d(torch.randn(x_shape, device=DEVICE), **kwargs)


def test_bad_tensor_arguments():
    with pytest.raises(ValueError, match="x must be a torch.Tensor, got list"):
        max_pool2d([[1.0]], 2)
    with pytest.raises(ValueError, match=r"x dtype must be one of .* got torch.int64 \(shape \(1, 2, 4, 4\)\)"):
        max_pool2d(torch.ones(1, 2, 4, 4, dtype=torch.int64, device=DEVICE), 2)


def test_op_refuses_malformed_calls():
    """The registered op (reachable as torch.ops.triton_kernels.max_pool2d) checks its own arguments too."""
    x = torch.randn(1, 2, 6, 6, device=DEVICE)
    with pytest.raises(ValueError, match="indices_kind 'all'"):
        torch.ops.triton_kernels.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False, "all")
    with pytest.raises(ValueError, match=r"got x \(2, 6, 6\)"):
        torch.ops.triton_kernels.max_pool2d(x[0], [2, 2], [2, 2], [0, 0], [1, 1], False, "taps")


def test_cpu_tensor_refused_without_interpreter(monkeypatch):
    monkeypatch.setattr(_common, "INTERPRET", False)
    with pytest.raises(ValueError, match=r"x must be on a CUDA device, got cpu \(shape \(1, 2, 4, 4\)\)"):
        max_pool2d(torch.randn(1, 2, 4, 4), 2)


interpreted_only = pytest.mark.skipif(not triton_kernels.INTERPRET, reason="about the Triton interpreter")


@interpreted_only
def test_bfloat16_refused_in_the_interpreter(monkeypatch):
    """The interpreter gets bf16 pools wrong (values and indices): refused with the dtype named, forward and
    backward op, before anything is launched. (float16 and float64 come out right: checked above.)"""
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel was launched for a call that should have been refused")

    monkeypatch.setattr(pool_mod, "launcher", refuse)
    x = torch.randn(1, 2, 6, 6, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"x dtype torch.bfloat16 is not supported in the Triton interpreter"):
        max_pool2d(x, 2)
    with pytest.raises(ValueError, match=r"x dtype torch.bfloat16 is not supported in the Triton interpreter"):
        torch.ops.triton_kernels.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False, "taps")
    taps = torch.zeros(1, 2, 3, 3, dtype=torch.int8)
    with pytest.raises(ValueError, match=r"grad_out dtype torch.bfloat16 is not supported in the Triton interp"):
        torch.ops.triton_kernels.max_pool2d_backward(torch.randn(1, 2, 3, 3, dtype=torch.bfloat16), taps,
                                                     [1, 2, 6, 6], [2, 2], [2, 2], [0, 0], [1, 1], False, False)


@interpreted_only
def test_interpreted_launch_does_not_need_wrap_triton(monkeypatch):
    """torch < 2.13's wrap_triton refuses interpreted kernels: under the interpreter the ops launch directly."""
    def refuse(*args, **kwargs):
        raise AssertionError("wrap_triton called under the interpreter")

    monkeypatch.setattr(torch.library, "wrap_triton", refuse)
    torch.manual_seed(13)
    check_against_torch(torch.randn(1, 2, 7, 6), "without wrap_triton", kernel_size=3, stride=2, padding=1)


def test_sm90_specs_cover_every_kernel_dtype_and_layout():
    specs = codegen_specs.POOL_SPECS
    assert len({s["name"] for s in specs}) == len(specs), "duplicate spec names"
    assert len(specs) == 3 * 3 * 2 * len(ELEMENTWISE_GPU_CONFIGS)  # (fwd taps, fwd none, bwd) x dtypes x layouts
    for s in specs:
        assert set(s) == {"name", "fn", "signature", "constexprs", "num_warps", "num_stages"}
        assert set(s["constexprs"]) <= set(s["signature"]), s["name"]
        assert all(s["signature"][k] == "constexpr" for k in s["constexprs"]), s["name"]


def test_interpreter_runs_on_this_machine():
    """The CPU tests above ran in the interpreter, not some fallback (the premise of this file on a CPU box)."""
    if CUDA:
        pytest.skip("CUDA machine: the kernels ran compiled")
    assert triton_kernels.INTERPRET
    x = torch.randn(1, 1, 4, 4)
    # a @triton.jit kernel called directly with CPU tensors only works in the interpreter
    out = torch.full((1, 1, 2, 2), float("nan"))
    idx = torch.full((1, 1, 2, 2), -7, dtype=torch.int64)
    pool_mod._max_pool2d_fwd_kernel[(1,)](x, out, idx, 1, 4, 4, 2, 2, 4, *x.stride(), KH=2, KW=2, SH=2, SW=2, PH=0,
                                          PW=0, DH=1, DW=1, CHANNELS_LAST=False, INDEX_64=False, INDICES=2,
                                          BLOCK=4)
    assert_close_verbose(out, F.max_pool2d(x, 2), 0.0, 0.0, "direct kernel call")


# ------------------------------------------------------------------------------------------------------------
# GPU: AlexNet's three pools at batch 128, fp32 and bf16, forward and backward; opcheck.
# ------------------------------------------------------------------------------------------------------------

ALEXNET_POOLS = [(128, 96, 54, 54), (128, 256, 26, 26), (128, 256, 12, 12)]  # inputs of pools 2, 5, 12


# Every pool in fp32 and bf16 (NCHW, what the model runs); channels_last and fp16 on the biggest one.
GPU_CASES = ([(shape, dtype, False) for shape in ALEXNET_POOLS for dtype in (torch.float32, torch.bfloat16)]
             + [(ALEXNET_POOLS[0], torch.bfloat16, True), (ALEXNET_POOLS[0], torch.float32, True),
                (ALEXNET_POOLS[0], torch.float16, False)])


@pytest.mark.gpu
@pytest.mark.parametrize("shape, dtype, channels_last", GPU_CASES,
                         ids=["x".join(map(str, s)) + f"-{str(d)[6:]}-{'nhwc' if cl else 'nchw'}"
                              for s, d, cl in GPU_CASES])
def test_gpu_alexnet_shapes(shape, dtype, channels_last):
    torch.manual_seed(8)
    x = torch.randn(shape, device="cuda", dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    check_against_torch(x, f"{shape} {dtype} {'nhwc' if channels_last else 'nchw'}", kernel_size=3, stride=2)


@pytest.mark.gpu
def test_gpu_opcheck():
    torch.manual_seed(9)
    x = torch.randn(4, 6, 13, 11, device="cuda", requires_grad=True)
    op = torch.ops.triton_kernels.max_pool2d.default
    torch.library.opcheck(op, (x, [3, 3], [2, 2], [1, 1], [1, 1], True, "taps"))
    torch.library.opcheck(op, (x, [3, 3], [2, 2], [1, 1], [1, 1], False, "flat"))
    xc = x.detach().to(memory_format=torch.channels_last).requires_grad_(True)
    torch.library.opcheck(op, (xc, [2, 3], [2, 1], [0, 1], [2, 1], False, "taps"))


@pytest.mark.gpu
def test_gpu_torch_compile():
    torch.manual_seed(10)
    x = torch.randn(8, 16, 27, 27, device="cuda", requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    fn = torch.compile(lambda t: max_pool2d(t, 3, 2).square().sum(), fullgraph=True)
    fn(x).backward()
    F.max_pool2d(x_ref, 3, 2).square().sum().backward()
    assert_close_verbose(x.grad, x_ref.grad, 1e-6, 1e-6, "compiled grad")


def test_output_size_formula_is_torchs():
    """numpy_ref.geometry.pool_output_size, the one formula pool.py uses, against torch's shapes, ceil_mode included."""
    for h in (1, 2, 5, 8, 10, 13, 54):
        for k, s, p, d in ((1, 1, 0, 1), (2, 2, 0, 1), (3, 2, 0, 1), (3, 2, 1, 1), (2, 3, 1, 1), (3, 2, 1, 2)):
            for ceil_mode in (False, True):
                if h + 2 * p < d * (k - 1) + 1:
                    continue
                want = F.max_pool2d(torch.empty(1, 1, h, h, device="meta"), k, s, p, d, ceil_mode).shape[-1]
                assert pool_mod.pool_output_size(h, k, s, p, d, ceil_mode) == want, (h, k, s, p, d, ceil_mode)
