"""numpy_ref's ops against torch.nn.functional (float64 and float32), naive == fast, and bad input.

Every forward and backward is compared with torch on random shapes (odd sizes, channel counts that are not
powers of two, every argument combination via hypothesis); max pooling also compares torch's indices.
"""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import numpy_ref
from numpy_ref import functional as Fn
from numpy_ref import geometry
from numpy_ref import naive

# dtype -> (atol, rtol). float64: sums of a few hundred products in another order agree to ~1e-15 relative.
# float32: the same sums agree to a few ulps of the largest term.
TOL = {np.float64: (1e-12, 1e-10), np.float32: (1e-5, 1e-4)}


def assert_close(actual: np.ndarray, expected, what: str, dtype=np.float64):
    """np.allclose with a message naming the worst element, its index and both values."""
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != expected {expected.shape}"
    assert actual.dtype == np.dtype(dtype), f"{what}: dtype {actual.dtype}, want {np.dtype(dtype)}"
    atol, rtol = TOL[dtype]
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    same = (a == e) | (np.isnan(a) & np.isnan(e))  # equal infinities, NaN on both sides
    with np.errstate(invalid="ignore"):  # inf - inf where only one side is infinite: caught as NaN below
        err = np.where(same, 0.0, np.abs(a - e))
    excess = np.where(np.isnan(err), np.inf, err) - (atol + rtol * np.nan_to_num(np.abs(e), posinf=0.0))
    if a.size and excess.max() > 0:
        idx = np.unravel_index(int(excess.argmax()), a.shape)
        raise AssertionError(f"{what}: {int((excess > 0).sum())}/{a.size} elements off; worst at {idx}: got "
                             f"{a[idx]!r}, expected {e[idx]!r} (|diff| {abs(a[idx] - e[idx]):.3g}, "
                             f"atol {atol}, rtol {rtol})")


def torch_grads(fn, arrays: dict, dout: np.ndarray):
    """Run fn(**tensors) in torch with requires_grad on every array, backward dout; return (out, grads)."""
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in arrays.items() if v is not None}
    out = fn(**tensors, **{k: None for k, v in arrays.items() if v is None})
    out0 = out[0] if isinstance(out, tuple) else out
    out0.backward(torch.from_numpy(dout))
    return out, {k: t.grad for k, t in tensors.items()}


# ------------------------------------------------------------------------------------------------ conv2d

conv_cases = st.fixed_dictionaries({
    "N": st.integers(1, 3), "Cg": st.sampled_from([1, 2, 3]), "Fg": st.sampled_from([1, 2, 5]),
    "groups": st.sampled_from([1, 2, 3]), "H": st.integers(1, 13), "W": st.integers(1, 13),
    "KH": st.integers(1, 5), "KW": st.integers(1, 5), "stride": st.sampled_from([1, 2, 3, (1, 2), (3, 1)]),
    "padding": st.sampled_from([0, 1, 2, (0, 2), (1, 0), "same", "valid"]),
    "dilation": st.sampled_from([1, 2, (1, 3)]), "bias": st.booleans(), "batched": st.booleans(),
    "seed": st.integers(0, 2**31 - 1),
})


def _conv_inputs(c, dtype=np.float64):
    """Random inputs for one drawn case, or None when torch itself would refuse the case."""
    rng = np.random.default_rng(c["seed"])
    stride = c["stride"]
    if c["padding"] == "same" and stride not in (1, (1, 1)):
        return None
    C, F_ = c["Cg"] * c["groups"], c["Fg"] * c["groups"]
    shape = (c["N"], C, c["H"], c["W"]) if c["batched"] else (C, c["H"], c["W"])
    x = rng.standard_normal(shape).astype(dtype)                                     # (N, C, H, W)
    w = rng.standard_normal((F_, c["Cg"], c["KH"], c["KW"])).astype(dtype)            # (F, C/G, KH, KW)
    b = rng.standard_normal(F_).astype(dtype) if c["bias"] else None                  # (F,)
    try:
        geometry.conv2d_geometry(x, w, b, stride, c["padding"], c["dilation"], c["groups"])
    except ValueError:
        return None  # kernel larger than the padded input: the error tests cover this
    return x, w, b, rng


@settings(max_examples=60, deadline=None)
@given(conv_cases)
def test_conv2d_matches_torch_float64(c):
    inputs = _conv_inputs(c)
    if inputs is None:
        return
    x, w, b, rng = inputs
    args = (c["stride"], c["padding"], c["dilation"], c["groups"])
    out, cache = Fn.conv2d_forward(x, w, b, *args)
    dout = rng.standard_normal(out.shape)                                              # like out
    ref, grads = torch_grads(lambda input, weight, bias: F.conv2d(input, weight, bias, *args),
                             {"input": x, "weight": w, "bias": b}, dout)
    what = f"conv2d {c}"
    assert_close(out, ref, f"{what} out")
    dx, dw, db = Fn.conv2d_backward(dout, cache)
    assert_close(dx, grads["input"], f"{what} dx")
    assert_close(dw, grads["weight"], f"{what} dweight")
    if b is None:
        assert db is None
    else:
        assert_close(db, grads["bias"], f"{what} dbias")


@pytest.mark.parametrize("stride,padding,groups", [(4, 1, 1), (1, 2, 2), (1, "same", 3)])
def test_conv2d_float32_follows_the_input(stride, padding, groups):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 6, 19, 17)).astype(np.float32)                        # (N, C, H, W)
    w = rng.standard_normal((12, 6 // groups, 5, 3)).astype(np.float32)               # (F, C/G, KH, KW)
    b = rng.standard_normal(12).astype(np.float32)                                    # (F,)
    out, cache = Fn.conv2d_forward(x, w, b, stride, padding, 1, groups)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    ref, grads = torch_grads(lambda input, weight, bias: F.conv2d(input, weight, bias, stride, padding, 1, groups),
                             {"input": x, "weight": w, "bias": b}, dout)
    assert_close(out, ref, "conv2d f32 out", np.float32)
    for got, name in zip(Fn.conv2d_backward(dout, cache), ("input", "weight", "bias")):
        assert_close(got, grads[name], f"conv2d f32 d{name}", np.float32)


# -------------------------------------------------------------------------------------------- max_pool2d

pool_cases = st.fixed_dictionaries({
    "N": st.integers(1, 3), "C": st.sampled_from([1, 3, 5]), "H": st.integers(1, 14), "W": st.integers(1, 14),
    "kernel_size": st.sampled_from([1, 2, 3, (2, 3), (3, 1)]),
    "stride": st.sampled_from([None, 1, 2, 3, (2, 1)]), "padding": st.sampled_from([0, 1, (1, 0)]),
    "dilation": st.sampled_from([1, 2, (2, 1)]), "ceil_mode": st.booleans(), "batched": st.booleans(),
    "ties": st.booleans(), "seed": st.integers(0, 2**31 - 1),
})


def _pool_inputs(c):
    """x, the positional arguments after it, and the case's generator."""
    rng = np.random.default_rng(c["seed"])
    shape = (c["N"], c["C"], c["H"], c["W"]) if c["batched"] else (c["C"], c["H"], c["W"])
    # ties=True draws from a handful of values, so windows hold equal maxima: the first one must win, as in torch
    x = (rng.integers(-2, 3, shape) if c["ties"] else rng.standard_normal(shape)).astype(np.float64)
    return x, (c["kernel_size"], c["stride"], c["padding"], c["dilation"], c["ceil_mode"]), rng


@settings(max_examples=80, deadline=None)
@given(pool_cases)
def test_max_pool2d_matches_torch_float64(c):
    x, args, rng = _pool_inputs(c)
    try:
        geometry.max_pool2d_geometry(x, *args)
    except ValueError:
        with pytest.raises(RuntimeError):  # then torch refuses it too
            F.max_pool2d(torch.from_numpy(x), *args)
        return
    (out, idx), cache = Fn.max_pool2d_forward(x, *args, return_indices=True)
    dout = rng.standard_normal(out.shape)                                              # like out
    what = f"max_pool2d {c}"
    if np.isneginf(out).any():
        # A window with no tap inside the input (dilation > 1 lets that happen): its index is torch's
        # placeholder, and torch's backward may scatter through it outside the plane and abort. Forward only.
        ref, ref_idx = F.max_pool2d(torch.from_numpy(x), *args, return_indices=True)
    else:
        (ref, ref_idx), grads = torch_grads(lambda input: F.max_pool2d(input, *args, return_indices=True),
                                            {"input": x}, dout)
        assert_close(Fn.max_pool2d_backward(dout, cache), grads["input"], f"{what} dx")
    assert_close(out, ref, f"{what} out")
    assert idx.dtype == np.int64 and idx.shape == tuple(ref_idx.shape), f"{what}: indices {idx.dtype}{idx.shape}"
    bad = np.argwhere(idx != ref_idx.numpy())
    assert not len(bad), f"{what}: {len(bad)} indices differ, first at {tuple(bad[0])}: " \
                         f"{idx[tuple(bad[0])]} vs torch {ref_idx.numpy()[tuple(bad[0])]}"


def test_max_pool2d_alexnet_shape_float32():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 96, 54, 54)).astype(np.float32)                       # conv1's output
    out, cache = Fn.max_pool2d_forward(x, 3, 2)
    assert out.shape == (2, 96, 26, 26)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    ref, grads = torch_grads(lambda input: F.max_pool2d(input, 3, 2), {"input": x}, dout)
    assert_close(out, ref, "pool f32 out", np.float32)
    assert_close(Fn.max_pool2d_backward(dout, cache), grads["input"], "pool f32 dx", np.float32)


# -------------------------------------------------------------------- relu, linear, flatten, cross-entropy

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu_linear_flatten_cross_entropy_match_torch(dtype):
    rng = np.random.default_rng(11)
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    x = r(3, 5, 7)
    x[0, 0, :3] = 0.0  # exactly zero: torch's relu gradient there is 0
    out, cache = Fn.relu_forward(x)
    dout = r(*out.shape)
    ref, g = torch_grads(lambda input: F.relu(input), {"input": x}, dout)
    assert_close(out, ref, "relu out", dtype)
    assert_close(Fn.relu_backward(dout, cache), g["input"], "relu dx", dtype)

    x[1, 0, :5] = [np.nan, np.inf, -np.inf, -0.0, -2.0]  # torch: relu(NaN) = NaN and its gradient passes
    out, cache = Fn.relu_forward(x)
    ref, g = torch_grads(lambda input: F.relu(input), {"input": x}, dout)
    assert_close(out, ref, "relu out, NaN and infinities", dtype)
    dx = Fn.relu_backward(dout, cache)
    assert_close(dx, g["input"], "relu dx, NaN and infinities", dtype)
    assert dx[1, 0, 0] == dout[1, 0, 0] and dx[1, 0, 1] == dout[1, 0, 1] and not dx[1, 0, 2:5].any()

    x, w, b = r(2, 3, 7), r(5, 7), r(5)  # a 3-D input: linear acts on the last axis
    for bias in (b, None):
        out, cache = Fn.linear_forward(x, w, bias)
        dout = r(*out.shape)
        ref, g = torch_grads(lambda input, weight, bias: F.linear(input, weight, bias),
                             {"input": x, "weight": w, "bias": bias}, dout)
        assert_close(out, ref, "linear out", dtype)
        dx, dw, db = Fn.linear_backward(dout, cache)
        assert_close(dx, g["input"], "linear dx", dtype)
        assert_close(dw, g["weight"], "linear dweight", dtype)
        if bias is None:
            assert db is None
        else:
            assert_close(db, g["bias"], "linear dbias", dtype)

    x = r(2, 3, 4, 5)
    for start, end in ((1, -1), (0, -1), (1, 2), (2, 3)):
        out, cache = Fn.flatten_forward(x, start, end)
        assert out.shape == tuple(torch.flatten(torch.from_numpy(x), start, end).shape)
        dout = r(*out.shape)
        assert np.array_equal(Fn.flatten_backward(dout, cache), dout.reshape(x.shape))

    logits, target = r(6, 7) * 5, rng.integers(0, 7, 6)
    loss, cache = Fn.cross_entropy_forward(logits, target)
    ref, g = torch_grads(lambda input: F.cross_entropy(input, torch.from_numpy(target)), {"input": logits},
                         np.asarray(1.7, dtype=dtype))
    assert_close(loss, ref, "cross_entropy loss", dtype)
    assert_close(Fn.cross_entropy_backward(1.7, cache), g["input"], "cross_entropy dlogits", dtype)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, -1000.0, 0.0], [-1e4, 1e4, 3.0]])
    target = np.array([0, 2])
    loss, cache = Fn.cross_entropy_forward(logits, target)
    ref = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(target))
    assert np.isfinite(loss) and np.isclose(loss, ref.item(), rtol=1e-12)
    assert np.isfinite(Fn.cross_entropy_backward(1.0, cache)).all()


# ------------------------------------------------------------------------------------- local_response_norm

LRN_SHAPES = {"N=2, 4-D": (2, None, 3, 4), "N=1, 4-D": (1, None, 5, 2), "3-D (N, C, L)": (3, None, 4),
              "5-D": (2, None, 2, 3, 2)}


@pytest.mark.parametrize("shape", list(LRN_SHAPES), ids=list(LRN_SHAPES))
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("C", [1, 3, 7, 10])  # below, around and above every window size
def test_local_response_norm_matches_torch_float64(size, C, shape):
    rng = np.random.default_rng(size * 100 + C)
    x = rng.standard_normal(tuple(C if d is None else d for d in LRN_SHAPES[shape])) * 2  # (N, C, *)
    alpha, beta, k = 0.3, 0.75, 1.5  # a large alpha, so the neighbours matter at this scale
    out, cache = Fn.local_response_norm_forward(x, size, alpha, beta, k)
    dout = rng.standard_normal(out.shape)
    ref, g = torch_grads(lambda input: F.local_response_norm(input, size, alpha, beta, k), {"input": x}, dout)
    what = f"local_response_norm size={size} C={C} {shape}"
    assert_close(out, ref, f"{what} out")
    assert_close(Fn.local_response_norm_backward(dout, cache), g["input"], f"{what} dx")


def test_local_response_norm_defaults_and_float32_follow_torch():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((2, 9, 5, 5)) * 30).astype(np.float32)  # large values: the default alpha 1e-4 bites
    out, cache = Fn.local_response_norm_forward(x, 5)                                  # torch's defaults
    dout = rng.standard_normal(out.shape).astype(np.float32)
    ref, g = torch_grads(lambda input: F.local_response_norm(input, 5), {"input": x}, dout)
    assert_close(out, ref, "lrn f32 out", np.float32)
    assert_close(Fn.local_response_norm_backward(dout, cache), g["input"], "lrn f32 dx", np.float32)
    assert not np.allclose(out, x, rtol=1e-3), "the normalizer should matter at this scale"


@pytest.mark.parametrize("size,shape", [(1, (2, 3, 4)), (2, (1, 5, 2, 3)), (4, (2, 3, 2, 2)), (5, (1, 7, 3, 2)),
                                        (6, (2, 4, 3))])
def test_local_response_norm_naive_equals_fast(size, shape):
    rng = np.random.default_rng(size)
    x = rng.standard_normal(shape)
    fast, fcache = Fn.local_response_norm_forward(x, size, 0.4, 0.6, 1.2)
    slow, scache = naive.local_response_norm_forward(x, size, 0.4, 0.6, 1.2)
    assert_close(slow, fast, f"naive lrn size={size} {shape} out")
    dout = rng.standard_normal(shape)
    assert_close(naive.local_response_norm_backward(dout, scache), Fn.local_response_norm_backward(dout, fcache),
                 f"naive lrn size={size} {shape} dx")


def _paper_lrn(a: np.ndarray, n: int, k: float, alpha: float, beta: float) -> np.ndarray:
    """Krizhevsky et al. 2012, section 3.3, as printed: for N kernels (channels),
    b[i] = a[i] / (k + alpha * sum_{j = max(0, i - n/2)}^{min(N-1, i + n/2)} a[j]^2)^beta, n/2 rounded down."""
    N = a.shape[1]
    b = np.empty_like(a)
    for i in range(N):
        js = range(max(0, i - n // 2), min(N - 1, i + n // 2) + 1)
        b[:, i] = a[:, i] / (k + alpha * sum(a[:, j] ** 2 for j in js)) ** beta
    return b


def test_paper_lrn_is_local_response_norm_with_alpha_times_size():
    """The paper's k=2, n=5, alpha=1e-4, beta=0.75 is local_response_norm(size=5, alpha=5e-4, beta=0.75, k=2):
    torch (and numpy_ref) divide alpha by the window size. numpy_ref's PAPER_LRN is torch_model's."""
    from numpy_ref.model import PAPER_LRN
    from torch_model.model import PAPER_LRN as TORCH_PAPER_LRN

    assert PAPER_LRN == TORCH_PAPER_LRN == dict(size=5, alpha=5e-4, beta=0.75, k=2.0)
    a = np.abs(np.random.default_rng(2).standard_normal((2, 11, 3, 3))) * 40  # ReLU outputs, large enough to bite
    paper = _paper_lrn(a, n=5, k=2.0, alpha=1e-4, beta=0.75)
    ours, _ = Fn.local_response_norm_forward(a, **PAPER_LRN)
    assert_close(ours, paper, "numpy_ref LRN vs the paper's formula")
    assert_close(ours, torch.nn.LocalResponseNorm(**PAPER_LRN)(torch.from_numpy(a)), "numpy_ref vs torch")
    unmapped, _ = Fn.local_response_norm_forward(a, 5, alpha=1e-4, beta=0.75, k=2.0)  # the paper's alpha, unmapped
    assert np.abs(unmapped - paper).max() > 1e-3 * np.abs(paper).max(), "alpha must be scaled by the size"


def test_local_response_norm_layer_and_bad_arguments():
    x = np.random.default_rng(3).standard_normal((2, 6, 4, 4))
    layer = numpy_ref.LocalResponseNorm(4, alpha=0.2, beta=0.5, k=1.0)
    out = layer.forward(x)
    assert_close(out, F.local_response_norm(torch.from_numpy(x), 4, 0.2, 0.5, 1.0), "LocalResponseNorm layer")
    dx = layer.backward(np.ones_like(out))
    assert dx.shape == x.shape and "4, alpha=0.2" in repr(layer)
    for kwargs, words in [(dict(size=0), ["size", "0"]), (dict(size=2.0), ["size", "2.0"]),
                          (dict(size=3, alpha="a"), ["alpha"]), (dict(size=3, beta=None), ["beta"]),
                          (dict(size=3, k=True), ["k must"])]:
        with pytest.raises(ValueError) as info:
            Fn.local_response_norm_forward(x, **kwargs)
        assert all(w in str(info.value) for w in words), (kwargs, str(info.value))
    with pytest.raises(ValueError, match=r"3 or more dimensions.*\(6, 4\)"):
        Fn.local_response_norm_forward(x[0, :, :, 0], 3)
    with pytest.raises(ValueError, match="dout"):
        Fn.local_response_norm_backward(np.ones((2, 6, 4)), Fn.local_response_norm_forward(x, 3)[1])


# ------------------------------------------------------------------------------------ cross_entropy reduction

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_reduction_matches_torch(reduction, dtype):
    rng = np.random.default_rng(12)
    logits, target = (rng.standard_normal((6, 5)) * 3).astype(dtype), rng.integers(0, 5, 6)
    loss, cache = Fn.cross_entropy_forward(logits, target, reduction=reduction)
    dloss = rng.standard_normal(loss.shape).astype(dtype)                             # () or (N,)
    ref, g = torch_grads(lambda input: F.cross_entropy(input, torch.from_numpy(target), reduction=reduction),
                         {"input": logits}, dloss)
    assert_close(loss, ref, f"cross_entropy({reduction}) loss", dtype)
    assert_close(Fn.cross_entropy_backward(dloss, cache), g["input"], f"cross_entropy({reduction}) dlogits", dtype)
    with pytest.raises(ValueError, match="dloss must have the loss's shape"):
        Fn.cross_entropy_backward(np.ones(7) if reduction == "none" else np.ones(6), cache)


def test_cross_entropy_refuses_an_unknown_reduction():
    with pytest.raises(ValueError, match=r"reduction must be one of \('mean', 'sum', 'none'\), got 'avg'"):
        Fn.cross_entropy_forward(np.zeros((2, 3)), np.array([0, 1]), reduction="avg")


# --------------------------------------------------------------------------------------------------- dropout

def test_dropout_semantics():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1000)) + 3.0                                           # never zero
    out, cache = Fn.dropout_forward(x, p=0.3, training=True, rng=np.random.default_rng(5))
    dropped = out == 0
    assert abs(dropped.mean() - 0.3) < 0.01, f"drop rate {dropped.mean():.4f}, want 0.3 (p is the DROP probability)"
    np.testing.assert_allclose(out[~dropped], x[~dropped] / 0.7, rtol=1e-15)            # inverted scaling
    dout = rng.standard_normal(x.shape)
    dx = Fn.dropout_backward(dout, cache)
    assert np.array_equal(dx == 0, dropped) and np.allclose(dx[~dropped], dout[~dropped] / 0.7, rtol=1e-15)
    again, _ = Fn.dropout_forward(x, p=0.3, training=True, rng=np.random.default_rng(5))
    assert np.array_equal(again, out), "the same generator state must give the same mask"
    ev, cache = Fn.dropout_forward(x, p=0.3, training=False)
    assert np.array_equal(ev, x) and np.array_equal(Fn.dropout_backward(dout, cache), dout)
    zero, _ = Fn.dropout_forward(x, p=1.0, training=True)
    assert not zero.any()
    assert Fn.dropout_forward(x.astype(np.float32), 0.5, True, rng)[0].dtype == np.float32


# ------------------------------------------------------------------------------------------- naive == fast

@settings(max_examples=12, deadline=None)
@given(st.fixed_dictionaries({
    "N": st.integers(1, 2), "Cg": st.integers(1, 3), "Fg": st.integers(1, 2), "groups": st.sampled_from([1, 2]),
    "H": st.integers(3, 7), "W": st.integers(3, 7), "KH": st.integers(1, 3), "KW": st.integers(1, 3),
    "stride": st.sampled_from([1, 2, (2, 1)]), "padding": st.sampled_from([0, 1, "same"]),
    "dilation": st.sampled_from([1, 2]), "bias": st.booleans(), "batched": st.booleans(),
    "seed": st.integers(0, 2**31 - 1),
}))
def test_conv2d_naive_equals_fast(c):
    inputs = _conv_inputs(c)
    if inputs is None:
        return
    x, w, b, rng = inputs
    args = (c["stride"], c["padding"], c["dilation"], c["groups"])
    fast, fcache = Fn.conv2d_forward(x, w, b, *args)
    slow, scache = naive.conv2d_forward(x, w, b, *args)
    assert_close(slow, fast, f"naive conv2d {c} out")
    dout = rng.standard_normal(fast.shape)
    for s, f, name in zip(naive.conv2d_backward(dout, scache), Fn.conv2d_backward(dout, fcache), "x w b".split()):
        assert (s is None) == (f is None)
        if s is not None:
            assert_close(s, f, f"naive conv2d {c} d{name}")


@settings(max_examples=20, deadline=None)
@given(pool_cases)
def test_max_pool2d_naive_equals_fast(c):
    x, args, rng = _pool_inputs(c)
    try:
        (fast, fidx), fcache = Fn.max_pool2d_forward(x, *args, return_indices=True)
    except ValueError:
        with pytest.raises(ValueError):
            naive.max_pool2d_forward(x, *args)
        return
    (slow, sidx), scache = naive.max_pool2d_forward(x, *args, return_indices=True)
    assert np.array_equal(slow, fast) and np.array_equal(sidx, fidx), f"naive max_pool2d {c}"
    dout = rng.standard_normal(fast.shape)
    assert_close(naive.max_pool2d_backward(dout, scache), Fn.max_pool2d_backward(dout, fcache),
                 f"naive max_pool2d {c} dx")


# ---------------------------------------------------------------------------------------------- bad input

def _a(*shape, dtype=np.float64):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


BAD = [
    # (call, words the message must contain)
    (lambda: Fn.conv2d_forward(_a(1, 1, 2, 3, 4), _a(2, 3, 3, 3)), ["input", "(1, 1, 2, 3, 4)"]),
    (lambda: Fn.conv2d_forward(_a(1, 4, 8, 8), _a(2, 4, 3)), ["weight", "(2, 4, 3)"]),
    (lambda: Fn.conv2d_forward(_a(1, 4, 8, 8), _a(6, 3, 3, 3)), ["channels", "(1, 4, 8, 8)", "(6, 3, 3, 3)"]),
    (lambda: Fn.conv2d_forward(_a(1, 4, 8, 8), _a(6, 1, 3, 3), groups=2), ["groups=2", "(6, 1, 3, 3)"]),
    (lambda: Fn.conv2d_forward(_a(1, 4, 8, 8), _a(5, 2, 3, 3), groups=2), ["groups=2", "(5, 2, 3, 3)"]),
    (lambda: Fn.conv2d_forward(_a(1, 3, 8, 8), _a(3, 1, 3, 3), groups=0), ["groups"]),
    (lambda: Fn.conv2d_forward(_a(1, 2, 4, 4), _a(3, 2, 7, 7), padding=1), ["kernel", "padded input", "6x6"]),
    (lambda: Fn.conv2d_forward(_a(1, 2, 8, 8), _a(3, 2, 3, 3), padding=-1), ["padding", "-1"]),
    (lambda: Fn.conv2d_forward(_a(1, 2, 8, 8), _a(3, 2, 3, 3), stride=2, padding="same"), ["same", "stride"]),
    (lambda: Fn.conv2d_forward(_a(1, 2, 8, 8), _a(3, 2, 3, 3), padding="full"), ["padding", "full"]),
    (lambda: Fn.conv2d_forward(_a(1, 2, 8, 8), _a(3, 2, 3, 3), stride=0), ["stride"]),
    (lambda: Fn.conv2d_forward(_a(1, 2, 8, 8), _a(3, 2, 3, 3), _a(4)), ["bias", "(4,)"]),
    (lambda: Fn.conv2d_forward(_a(1, 2, 8, 8), _a(3, 2, 3, 3, dtype=np.float32)), ["dtype", "float32"]),
    (lambda: Fn.max_pool2d_forward(_a(8, 8), 2), ["input", "(8, 8)"]),
    (lambda: Fn.max_pool2d_forward(_a(1, 1, 8, 8), 3, padding=2), ["padding", "half"]),
    (lambda: Fn.max_pool2d_forward(_a(1, 1, 2, 2), 3), ["too small", "(1, 1, 2, 2)"]),
    (lambda: Fn.max_pool2d_forward(_a(1, 1, 8, 8), 2, stride=0), ["stride"]),
    (lambda: Fn.max_pool2d_forward(_a(1, 1, 8, 8), 2, padding=-1), ["padding"]),
    (lambda: Fn.linear_forward(_a(2, 5), _a(3, 4)), ["in_features=4", "(2, 5)"]),
    (lambda: Fn.linear_forward(_a(2, 4), _a(3, 4), _a(2)), ["bias", "(2,)"]),
    (lambda: Fn.cross_entropy_forward(_a(3, 4), np.array([0.0, 1.0, 2.0])), ["target", "integer", "float64"]),
    (lambda: Fn.cross_entropy_forward(_a(3, 4), np.array([0, 4, 1])), ["target", "[0, 4)", "max 4"]),
    (lambda: Fn.cross_entropy_forward(_a(3, 4), np.array([0, -1, 1])), ["target", "min -1"]),
    (lambda: Fn.cross_entropy_forward(_a(3, 4), np.array([0, 1])), ["target", "(3,)", "(2,)"]),
    (lambda: Fn.cross_entropy_forward(_a(3, 4, 2), np.array([0, 1, 2])), ["input", "(3, 4, 2)"]),
    (lambda: Fn.dropout_forward(_a(3, 4), p=1.5), ["p", "1.5"]),
    (lambda: Fn.dropout_forward(_a(3, 4), p=0.5, training=True, rng=None), ["rng", "Generator"]),
    (lambda: Fn.relu_forward(np.arange(4)), ["float32 or float64", "int64"]),
    (lambda: Fn.flatten_forward(_a(2, 3), 1, 0), ["start_dim=1", "(2, 3)"]),
    (lambda: Fn.conv2d_backward(_a(1, 3, 5, 5), Fn.conv2d_forward(_a(1, 2, 8, 8), _a(3, 2, 3, 3))[1]),
     ["dout", "(1, 3, 6, 6)", "(1, 3, 5, 5)"]),
    (lambda: Fn.max_pool2d_backward(_a(1, 1, 3, 3), Fn.max_pool2d_forward(_a(1, 1, 8, 8), 2)[1]),
     ["dout", "(1, 1, 4, 4)"]),
]


@pytest.mark.parametrize("call,words", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input_raises_value_error_naming_argument_and_shapes(call, words):
    with pytest.raises(ValueError) as info:
        call()
    missing = [w for w in words if w not in str(info.value)]
    assert not missing, f"message {str(info.value)!r} lacks {missing}"


def test_bad_conv_inputs_are_refused_by_torch_too():
    """The refusals above are torch's: the same shapes make F.conv2d raise."""
    t = lambda *s: torch.from_numpy(_a(*s))  # noqa: E731
    for x, w, kw in [((1, 4, 8, 8), (6, 3, 3, 3), {}), ((1, 4, 8, 8), (5, 2, 3, 3), {"groups": 2}),
                     ((1, 2, 4, 4), (3, 2, 7, 7), {"padding": 1}), ((1, 2, 8, 8), (3, 2, 3, 3), {"padding": -1})]:
        with pytest.raises(RuntimeError):
            F.conv2d(t(*x), t(*w), **kw)
        with pytest.raises(ValueError):
            Fn.conv2d_forward(_a(*x), _a(*w), **kw)
    with pytest.raises(RuntimeError):
        F.max_pool2d(t(1, 1, 8, 8), 3, padding=2)


def test_max_pool2d_nan_and_inf_follow_torch():
    """NaN propagates (torch keeps the last NaN of a window), -inf inputs keep the window's first tap."""
    x = np.random.default_rng(4).standard_normal((2, 3, 7, 8))                        # (N, C, H, W)
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = np.nan                                            # two NaNs in one window
    x[1, 2, :4, :4] = -np.inf                                                         # a window of -inf
    x[0, 1, 3, 3] = np.inf
    for args in [(3, 2, 1), (2, 2, 0, 1, True), (3, 1, 1, 2)]:
        (out, idx), cache = Fn.max_pool2d_forward(x, *args, return_indices=True)
        (slow, sidx), _ = naive.max_pool2d_forward(x, *args, return_indices=True)
        dout = np.random.default_rng(5).standard_normal(out.shape)
        (ref, ref_idx), grads = torch_grads(lambda input: F.max_pool2d(input, *args, return_indices=True),
                                            {"input": x}, dout)
        assert_close(out, ref, f"max_pool2d{args} out")
        assert_close(slow, ref, f"naive max_pool2d{args} out")
        assert np.array_equal(idx, ref_idx.numpy()) and np.array_equal(sidx, idx), f"max_pool2d{args} indices"
        assert_close(Fn.max_pool2d_backward(dout, cache), grads["input"], f"max_pool2d{args} dx")


# ------------------------------------------------------------------------------------------- output sizes

def test_output_size_formulas_match_torch():
    """geometry's one conv formula and one pool formula give torch's output size wherever torch accepts the
    arguments: every size 1..10 against every kernel, stride, padding and dilation below (and ceil_mode)."""
    checked = {"conv": 0, "pool": 0}
    for size in range(1, 11):
        x = torch.zeros(1, 1, size, 1, dtype=torch.float64)                          # one axis at a time
        for k in range(1, 6):
            w = torch.zeros(1, 1, k, 1, dtype=torch.float64)
            for s in (1, 2, 3):
                for p in (0, 1, 2):
                    for d in (1, 2, 3):
                        if d < 3:  # a conv call costs ~1 ms on the CPU: a smaller grid than the pool's
                            try:
                                ref = F.conv2d(x, w, stride=(s, 1), padding=(p, 0), dilation=(d, 1)).shape[2]
                            except RuntimeError:
                                ref = None  # kernel larger than the padded input
                            if ref is not None:
                                assert geometry.conv_output_size(size, k, s, p, d) == ref, (size, k, s, p, d)
                                assert geometry.conv_output_size(size, k, s, (p, p), d) == ref
                                checked["conv"] += 1
                        if p > k // 2:
                            continue
                        for ceil in (False, True):
                            try:
                                ref = F.max_pool2d(x, (k, 1), (s, 1), (p, 0), (d, 1), ceil).shape[2]
                            except RuntimeError:
                                continue  # output below one pixel: geometry refuses it too (test_bad_input)
                            assert geometry.pool_output_size(size, k, s, p, d, ceil) == ref, (size, k, s, p, d, ceil)
                            checked["pool"] += 1
        for k in range(1, 6):  # padding='same': an uneven (before, after) split for an even kernel
            w = torch.zeros(1, 1, k, 1, dtype=torch.float64)
            for d in (1, 2):
                total = d * (k - 1)
                with warnings.catch_warnings():  # torch notes that it copies the input for an uneven split
                    warnings.simplefilter("ignore", UserWarning)
                    ref = F.conv2d(x, w, padding="same", dilation=(d, 1)).shape[2]
                assert geometry.conv_output_size(size, k, 1, (total // 2, total - total // 2), d) == ref == size
    assert checked["conv"] > 300 and checked["pool"] > 300, checked


def _transposed_conv_dxp(dout: np.ndarray, w: np.ndarray, x_shape, stride, padding, dilation, groups,
                         extra_rows: bool = True) -> np.ndarray:
    """docs/numpy_reference.md's recipe for conv2d's dx, step by step: spread dout out by the stride, pad it
    by d*(K-1) (plus r = (Hp - d*(K-1) - 1) % s extra zero rows/columns at the bottom/right), correlate it with
    the kernel rotated by 180 degrees with its channel axes swapped per group. Returns the gradient of the
    padded input, (N, C, Hp, Wp) (r rows/columns fewer without the extra ones)."""
    N, F_, OH, OW = dout.shape
    _, Cg, KH, KW = w.shape
    H, W = x_shape[2:]
    Hp, Wp = H + 2 * padding, W + 2 * padding
    spread = np.zeros((N, F_, (OH - 1) * stride + 1, (OW - 1) * stride + 1))          # zeros between
    spread[:, :, ::stride, ::stride] = dout
    th, tw = dilation * (KH - 1), dilation * (KW - 1)
    rh, rw = ((Hp - th - 1) % stride, (Wp - tw - 1) % stride) if extra_rows else (0, 0)
    z = np.pad(spread, ((0, 0), (0, 0), (th, th + rh), (tw, tw + rw)))
    Fg = F_ // groups
    wt = np.concatenate([w[g * Fg:(g + 1) * Fg].transpose(1, 0, 2, 3) for g in range(groups)])  # (C, Fg, KH, KW)
    dxp, _ = Fn.conv2d_forward(z, np.ascontiguousarray(wt[:, :, ::-1, ::-1]), dilation=dilation, groups=groups)
    return dxp                                                                         # (N, C, Hp, Wp)


@pytest.mark.parametrize("N,C,F_,H,K,stride,padding,dilation,groups", [
    (1, 2, 3, 224, 11, 4, 1, 1, 1),   # conv1's geometry: r = (226 - 10 - 1) % 4 = 3 extra rows
    (2, 4, 6, 13, 3, 3, 1, 2, 2),     # dilation and groups: r = (15 - 4 - 1) % 3 = 1
    (1, 2, 2, 12, 5, 2, 2, 1, 1),     # r = (16 - 4 - 1) % 2 = 1
    (1, 3, 2, 9, 3, 2, 0, 1, 1),      # r = 0: the extra rows are not always needed
])
def test_transposed_convolution_recipe_gives_dx(N, C, F_, H, K, stride, padding, dilation, groups):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, H))
    w = rng.standard_normal((F_, C // groups, K, K))
    out, cache = Fn.conv2d_forward(x, w, None, stride, padding, dilation, groups)
    dout = rng.standard_normal(out.shape)
    dx, _, _ = Fn.conv2d_backward(dout, cache)
    dxp = _transposed_conv_dxp(dout, w, x.shape, stride, padding, dilation, groups)
    assert dxp.shape == (N, C, H + 2 * padding, H + 2 * padding)
    assert_close(dxp[:, :, padding:padding + H, padding:padding + H], dx, "recipe dx")  # the padding cut off
    r = (H + 2 * padding - dilation * (K - 1) - 1) % stride
    short = _transposed_conv_dxp(dout, w, x.shape, stride, padding, dilation, groups, extra_rows=False)
    assert short.shape[2] == H + 2 * padding - r  # without the extra rows: r rows short of the padded input
    if (H, K, stride, padding) == (224, 11, 4, 1):
        assert r == 3 and short.shape[2] == 223  # conv1: 223 rows, not 226


# ------------------------------------------------------------------ every op twice in a row: nothing shared

def _twice_cases():
    """(name, forward, backward, make(lead, rng) -> inputs): `lead` is the batch part of the shape, () for an
    unbatched call. Every op of numpy_ref.functional and numpy_ref.naive."""
    r = lambda rng, *s: rng.standard_normal(s)  # noqa: E731
    conv = lambda lead, rng: {"input": r(rng, *lead, 4, 7, 6), "weight": r(rng, 6, 2, 3, 3),  # noqa: E731
                              "bias": r(rng, 6)}
    pool = lambda lead, rng: {"input": r(rng, *lead, 3, 7, 6)}  # noqa: E731
    cases = []
    for mod in (Fn, naive):
        cases += [
            (f"{mod.__name__}.conv2d", lambda m=mod, **a: m.conv2d_forward(**a, stride=2, padding=1, groups=2),
             mod.conv2d_backward, conv),
            (f"{mod.__name__}.max_pool2d", lambda m=mod, **a: m.max_pool2d_forward(**a, kernel_size=3, stride=2),
             mod.max_pool2d_backward, pool),
            (f"{mod.__name__}.local_response_norm", lambda m=mod, **a: m.local_response_norm_forward(**a, size=3),
             mod.local_response_norm_backward, pool),
        ]
    cases += [
        ("relu", Fn.relu_forward, Fn.relu_backward, lambda lead, rng: {"input": r(rng, *lead, 5)}),
        ("linear", Fn.linear_forward, Fn.linear_backward,
         lambda lead, rng: {"input": r(rng, *lead, 7), "weight": r(rng, 5, 7), "bias": r(rng, 5)}),
        ("dropout", lambda input: Fn.dropout_forward(input, 0.5, True, np.random.default_rng(0)),
         Fn.dropout_backward, lambda lead, rng: {"input": r(rng, *lead, 9)}),
        ("dropout(eval)", lambda input: Fn.dropout_forward(input, 0.5, False), Fn.dropout_backward,
         lambda lead, rng: {"input": r(rng, *lead, 9)}),
        ("flatten", lambda input: Fn.flatten_forward(input, 0), Fn.flatten_backward,
         lambda lead, rng: {"input": r(rng, *lead, 3, 2)}),
    ]
    # cross_entropy has no unbatched form here: its batch-1 case stands in for it
    for reduction in ("mean", "sum", "none"):
        cases.append((f"cross_entropy({reduction})",
                      lambda red=reduction, **a: Fn.cross_entropy_forward(**a, reduction=red),
                      Fn.cross_entropy_backward,
                      lambda lead, rng: {"input": r(rng, *(lead or (1,)), 4),
                                         "target": rng.integers(0, 4, (lead or (1,))[0])}))
    return cases


def _arrays(result) -> list[np.ndarray]:
    result = result if isinstance(result, tuple) else (result,)
    return [a for a in result if isinstance(a, np.ndarray)]


@pytest.mark.parametrize("lead", [(1,), (), (2,)], ids=["batch1", "unbatched", "batch2"])
@pytest.mark.parametrize("name,forward,backward,make", _twice_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_op_twice_in_a_row_leaves_the_first_result_alone(name, forward, backward, make, lead):
    """A reference never hands out its scratch space: the first call's output and gradients keep their values
    after a second call with other inputs, and share no memory with the second call's."""
    rng = np.random.default_rng(0)
    first_in, second_in = make(lead, rng), make(lead, rng)
    out1, cache1 = forward(**first_in)
    kept = [a.copy() for a in _arrays(out1)]
    out2, cache2 = forward(**second_in)
    for a, b, k in zip(_arrays(out1), _arrays(out2), kept):
        assert np.array_equal(a, k), f"{name} {lead}: the first output changed when the op ran again"
        assert not np.shares_memory(a, b), f"{name} {lead}: the two outputs share memory"
    d1 = rng.standard_normal(np.shape(_arrays(out1)[0]))
    d2 = rng.standard_normal(np.shape(_arrays(out2)[0]))
    g1 = backward(d1, cache1)
    kept = [a.copy() for a in _arrays(g1)]
    g2 = backward(d2, cache2)
    for a, b, k in zip(_arrays(g1), _arrays(g2), kept):
        assert np.array_equal(a, k), f"{name} {lead}: the first backward's gradient changed when it ran again"
        assert not np.shares_memory(a, b), f"{name} {lead}: the two backwards' gradients share memory"


@pytest.mark.parametrize("kwargs,name", [
    (dict(stride=1.5), "stride"), (dict(padding=1.0), "padding"), (dict(dilation=None), "dilation"),
    (dict(stride="2"), "stride"), (dict(dilation=(1, 2, 3)), "dilation"), (dict(padding=(1.0, 0)), "padding"),
])
def test_conv2d_non_int_arguments_raise_value_error_naming_them(kwargs, name):
    x, w = _a(1, 2, 8, 8), _a(3, 2, 3, 3)
    for mod in (Fn, naive):
        message = f"{name} must be an int or a pair of ints, got {kwargs[name]!r}"
        with pytest.raises(ValueError, match=re.escape(message)):
            mod.conv2d_forward(x, w, **kwargs)


@pytest.mark.parametrize("kwargs,name", [
    (dict(kernel_size=2.0), "kernel_size"), (dict(kernel_size=None), "kernel_size"),
    (dict(kernel_size=2, stride=1.5), "stride"), (dict(kernel_size=2, padding=0.0), "padding"),
    (dict(kernel_size=2, dilation=None), "dilation"),
])
def test_max_pool2d_non_int_arguments_raise_value_error_naming_them(kwargs, name):
    for mod in (Fn, naive):
        with pytest.raises(ValueError, match=f"{name} must be an int or a pair of ints"):
            mod.max_pool2d_forward(_a(1, 2, 8, 8), **kwargs)
    with pytest.raises(ValueError, match="kernel_size must be an int or a pair of ints, got 2.5"):
        numpy_ref.Conv2d(2, 3, kernel_size=2.5)


def test_local_response_norm_keeps_float32_with_numpy_scalar_arguments():
    x = np.random.default_rng(0).standard_normal((1, 4, 3, 3)).astype(np.float32)
    for mod in (Fn, naive):
        out, cache = mod.local_response_norm_forward(x, 3, np.float64(0.1), np.float64(0.75), np.float64(1.0))
        assert out.dtype == np.float32, mod.__name__
        assert mod.local_response_norm_backward(np.ones_like(out), cache).dtype == np.float32, mod.__name__
