"""Local response normalization (AlexNet's LRN) in Triton: one fused kernel forward, one backward, a torch op.

Legend: N batch, C channels, (*) any trailing dims (H, W), n = size the window, c a channel, x the input.

    local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0)     # torch.nn.functional's arguments and semantics

    s[c]   = k + (alpha / n) * sum_{j in W(c)} x[j]^2          W(c) = [c - n//2, c + (n-1)//2] clipped to [0, C)
    out[c] = x[c] / s[c]^beta                                  (an even n puts one more channel before c than after)

Backward (dy = dL/dout; i is in W(c) exactly when c is in W'(i) = [i - (n-1)//2, i + n//2], the mirrored window):

    dx[i] = dy[i] * s[i]^-beta  -  (2 * alpha * beta / n) * x[i] * sum_{c in W'(i)} dy[c] * x[c] * s[c]^(-beta-1)

(d out[c] / d x[i] = [c == i] s[c]^-beta - beta x[c] s[c]^(-beta-1) * (alpha/n) * 2 x[i] [i in W(c)]; sum over c.)

The 2012 paper's b = a / (k + alpha' * sum_{5 neighbours} a^2)^beta with k = 2, alpha' = 1e-4, beta = 0.75 is
local_response_norm(x, size=5, alpha=5 * 1e-4, beta=0.75, k=2.0): torch divides alpha by the window size.

Both kernels walk the tensor in its own memory order, one element per lane, with any dense layout (NCHW,
channels_last, 3-D (N, C, L), 5-D): the element at memory offset o is channel c = (o // stride_c) % C and its
neighbour c + d sits at o + d * stride_c. So every load and store is coalesced, and the window's other loads hit
L1/L2 (NCHW: the same pixels of the neighbouring planes; channels_last: the same cache line).
The normalizer s is recomputed in the backward, not kept from the forward: LRN moves bytes and does little
arithmetic, and keeping s (or s^(-beta-1)) would cost one more write in the forward and one more read in the
backward for each element, plus that tensor held in memory between them, to save n*n FMAs and n+1 powers per
element (docs/triton_lrn.md has the napkin math at AlexNet's shapes).

What the H200 compiles of this file (both kernels x config x dtype x layout) is listed, as tooling, in
triton_kernels/codegen_specs.py: `python -m triton_kernels.codegen --filter lrn` compiles it for sm_90 anywhere.
"""
from __future__ import annotations

import math
import numbers

import torch
import triton
import triton.language as tl
from torch.library import triton_op
from triton.language.extra import libdevice

from triton_kernels._common import INTERPRET, check_device, check_tensor, elementwise_configs, launcher

# Compiled for a GPU, an fp32 log2 is the hardware's lg2.approx (one MUFU instruction, ~2 ulp): tl.log2 compiles
# to a ~30-instruction accurate software log2, and the backward takes SIZE + 1 of them per element. The
# interpreter has no libdevice: there, tl.log2 (numpy's).
_HW_LOG2: tl.constexpr = tl.constexpr(not INTERPRET)
# The window is unrolled at compile time (n loads forward, n*n FMAs backward): a window wider than this is refused
# rather than compiled into a huge kernel. Torch has no such limit; LRN windows in practice are 3..9 channels.
MAX_SIZE = 32

# ----------------------------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------------------------

@triton.jit
def _log2(s):
    """log2(s), the hardware approximation for fp32 on a GPU (see _HW_LOG2)."""
    if _HW_LOG2 and s.dtype == tl.float32:
        r = libdevice.fast_log2f(s)
    else:
        r = tl.log2(s)
    return r


@triton.jit
def _pow(s, e, GENERAL_POW: tl.constexpr):
    """s ** e for a tensor s and a scalar e, as torch.pow. exp2(e * log2(s)) is exactly that for s > 0, s = +inf
    and NaN (what LRN has when k > 0, alpha >= 0 and beta > 0). GENERAL_POW adds the rest of IEEE pow: s < 0 (NaN,
    or for an integer e the sign of an odd power), s = -0, and e == 0 (1, even for NaN)."""
    if GENERAL_POW:
        r = tl.exp2(e * _log2(tl.abs(s)))  # (BLOCK,) |s| ** e
        ef = tl.zeros_like(s) + e  # (BLOCK,) e, broadcast
        is_int = tl.floor(ef) == ef
        is_odd = is_int & (tl.floor(ef * 0.5) * 2.0 != ef)
        negative = (s < 0) | ((s == 0) & (1.0 / s < 0))  # -0 counts: pow(-0, -1) = -inf
        r = tl.where(negative & is_odd, -r, r)
        r = tl.where((s < 0) & (s > float("-inf")) & ~is_int, float("nan"), r)
        r = tl.where(ef == 0, 1.0, r)
    else:
        r = tl.exp2(e * _log2(s))  # (BLOCK,)
    return r


# Forward. Computes numpy_ref.functional.local_response_norm_forward (d = k + alpha/size * the window sum of
# x*x, added up from shifted channel slices; out = x * d**-beta) and its loop twin
# numpy_ref.naive.local_response_norm_forward (for n, c, p: acc += x[n, j, p]**2 over j in c's window;
# out = x / (k + alpha/size * acc)**beta), one lane per element, with s for numpy_ref's d:
#     out[c] = x[c] * s[c]**neg_beta,   s[c] = k + alpha_n * sum_{j in W(c)} x[j]^2
#     alpha_n = alpha / SIZE, neg_beta = -beta, W(c) = [c - SIZE//2, c + (SIZE-1)//2] inside [0, C)
# Sizes are not specialized (one compiled kernel serves every shape); stride_c is (channels_last: stride_c == 1).
@triton.jit(do_not_specialize=["C", "TOTAL"])
def _lrn_fwd_kernel(
    # Pointers (x and out share one dense layout)
    x_ptr, out_ptr,
    # Sizes (TOTAL: elements of x)
    TOTAL, C,
    # Strides (in elements): the channel's, the same in x and out
    stride_c,
    # The normalization (fp32 scalars)
    alpha_n, neg_beta, k,
    # Meta-parameters: the window, the power's variant, 64-bit offsets, the accumulator dtype, the block
    SIZE: tl.constexpr, GENERAL_POW: tl.constexpr, INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    if INDEX_64:
        pid = pid.to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,) memory offsets of x and out
    mask = offs < TOTAL
    c = (offs // stride_c) % C  # (BLOCK,) channel of each lane
    sq = tl.zeros([BLOCK], dtype=ACC_DTYPE)  # (BLOCK,) sum of squares over the window
    xc = tl.zeros([BLOCK], dtype=ACC_DTYPE)  # (BLOCK,) x[c]
    for t in tl.static_range(SIZE):
        d = t - SIZE // 2  # channel offset of tap t
        ok = mask & (c + d >= 0) & (c + d < C)
        v = tl.load(x_ptr + offs + d * stride_c, mask=ok, other=0.0).to(ACC_DTYPE)  # (BLOCK,) x[c + d]
        sq += v * v
        if d == 0:
            xc = v
    s = k + alpha_n * sq  # (BLOCK,)
    out = xc * _pow(s, neg_beta, GENERAL_POW)  # (BLOCK,)
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


# Backward. Computes numpy_ref.functional.local_response_norm_backward (dx = dout * d**-beta
# - 2*alpha*beta/size * x * the mirrored window sum of dout * out / d) and its loop twin
# numpy_ref.naive.local_response_norm_backward (each output sends dout back to every x[j] of its window:
# `dx[n, j, p] += ...`), turned from a scatter into a gather, one lane per input element i:
#     dx[i] = dy[i] * s[i]**neg_beta - coef * x[i] * sum_{c in W'(i)} dy[c] * x[c] * s[c]**(neg_beta - 1)
#     coef = 2*alpha*beta / SIZE, W'(i) = [i - (SIZE-1)//2, i + SIZE//2] inside [0, C): the windows W(c) holding i
# (numpy_ref's dout_c * out_c / d_c is dy[c] * x[c] * s[c]**(-beta-1)). s[c] is recomputed from x for each of those
# SIZE windows: SIZE*SIZE taps, but only 2*SIZE-1 distinct addresses (tap e of window c = i + d reads channel
# i + d + e - SIZE//2, the same pointer and mask expression for equal d + e), which the compiler loads once each.
@triton.jit(do_not_specialize=["C", "TOTAL"])
def _lrn_bwd_kernel(
    # Pointers (x, dy and dx share one dense layout)
    x_ptr, dy_ptr, dx_ptr,
    # Sizes (TOTAL: elements of x)
    TOTAL, C,
    # Strides (in elements): the channel's, the same in x, dy and dx
    stride_c,
    # The normalization (fp32 scalars; coef = 2 * alpha * beta / SIZE)
    alpha_n, neg_beta, k, coef,
    # Meta-parameters: the window, the power's variant, 64-bit offsets, the accumulator dtype, the block
    SIZE: tl.constexpr, GENERAL_POW: tl.constexpr, INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    if INDEX_64:
        pid = pid.to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,) memory offsets of x, dy and dx
    mask = offs < TOTAL
    c = (offs // stride_c) % C  # (BLOCK,) channel i of each lane
    acc = tl.zeros([BLOCK], dtype=ACC_DTYPE)  # (BLOCK,) sum over W'(i) of dy[c] x[c] s[c]^(-beta-1)
    xi = tl.zeros([BLOCK], dtype=ACC_DTYPE)  # (BLOCK,) x[i]
    dyi = tl.zeros([BLOCK], dtype=ACC_DTYPE)  # (BLOCK,) dy[i]
    si = tl.zeros([BLOCK], dtype=ACC_DTYPE)  # (BLOCK,) s[i]
    for t in tl.static_range(SIZE):
        d = t - (SIZE - 1) // 2  # window of channel c = i + d, one of those that contain i
        ok = mask & (c + d >= 0) & (c + d < C)
        sq = tl.zeros([BLOCK], dtype=ACC_DTYPE)  # (BLOCK,) sum of x^2 over W(i + d)
        xd = tl.zeros([BLOCK], dtype=ACC_DTYPE)  # (BLOCK,) x[i + d]
        for e in tl.static_range(SIZE):
            f = d + e - SIZE // 2  # channel offset from i of tap e of window i + d
            okf = mask & (c + f >= 0) & (c + f < C)
            v = tl.load(x_ptr + offs + f * stride_c, mask=okf, other=0.0).to(ACC_DTYPE)  # (BLOCK,) x[i + f]
            sq += v * v
            if f == d:
                xd = v
        s = k + alpha_n * sq  # (BLOCK,) s[i + d]
        dyd = tl.load(dy_ptr + offs + d * stride_c, mask=ok, other=0.0).to(ACC_DTYPE)  # (BLOCK,) dy[i + d]
        if GENERAL_POW:  # s^(beta-1) / (s^beta)^2 as torch's autograd has it: NaN for a NaN s even when beta = -1
            sb = _pow(s, -neg_beta, GENERAL_POW)  # (BLOCK,)
            w = _pow(s, -neg_beta - 1.0, GENERAL_POW) / (sb * sb)  # (BLOCK,)
        else:
            w = _pow(s, neg_beta - 1.0, GENERAL_POW)  # (BLOCK,) s^(-beta-1)
        # A window outside [0, C) contributes nothing (tl.where, not 0 * w: k = 0 makes its w inf).
        acc += tl.where(ok, dyd * xd * w, 0.0)
        if d == 0:
            xi = xd
            dyi = dyd
            si = s
    window_term = coef * xi * acc  # (BLOCK,)
    if GENERAL_POW:  # beta == 0: torch's pow backward is exactly 0, even where s is NaN; 2 x * 0 stays
        window_term = tl.where(neg_beta == 0, 0.0 * xi, window_term)
    dx = dyi * _pow(si, neg_beta, GENERAL_POW) - window_term  # (BLOCK,)
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


_lrn_fwd = triton.autotune(configs=elementwise_configs(), key=["TOTAL", "C", "stride_c", "SIZE"])(_lrn_fwd_kernel)
_lrn_bwd = triton.autotune(configs=elementwise_configs(), key=["TOTAL", "C", "stride_c", "SIZE"])(_lrn_bwd_kernel)


# ----------------------------------------------------------------------------------------------------------------
# Launchers (the torch ops): check, allocate, launch
# ----------------------------------------------------------------------------------------------------------------

_SHAPES = "(N, C, *) with at least 3 dims"  # how the checks spell x's shape


def _is_dense(t: torch.Tensor) -> bool:
    """True when t's elements fill [0, numel) of its storage offsets exactly once (some permutation of a contiguous
    layout: NCHW, channels_last, ...). Size-1 dims do not count: their stride is never used."""
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape and the same strides on every dim of size > 1: one memory offset means one element in both."""
    return a.shape == b.shape and all(sa == sb for sa, sb, sz in zip(a.stride(), b.stride(), a.shape) if sz != 1)


def _kernel_args(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> dict:
    """What both kernels take besides their pointers: x (N, C, *) dense."""
    C = x.shape[1]
    extent = x.numel()
    return {
        "TOTAL": extent,
        "C": C,
        "stride_c": x.stride(1) if C > 1 else 1,  # (C == 1: any stride; 1 keeps c = offs % 1 = 0)
        "alpha_n": alpha / size,
        "neg_beta": -beta,
        "k": k,
        "SIZE": size,
        # exp2(e * log2(s)) is torch.pow when s > 0: s >= k > 0 for every window when alpha >= 0
        "GENERAL_POW": not (k > 0 and alpha >= 0 and beta > 0),
        "INDEX_64": extent + size * max(x.stride(1), 1) >= 2**31,
        "ACC_DTYPE": tl.float64 if x.dtype == torch.float64 else tl.float32,
    }


def _check_op_args(op: str, x: torch.Tensor, size: int) -> None:
    """What the ops check themselves (local_response_norm has made sure of all of it before calling them): x
    (N, C, *) in a supported dtype on a usable device, dense, and 1 <= size <= MAX_SIZE."""
    check_tensor(x, "x", min_ndim=3, shapes=_SHAPES, allow_empty=True)
    check_device(x=x)
    if not _is_dense(x) or not 1 <= size <= MAX_SIZE:
        raise ValueError(f"{op} wants x (N, C, *) dense and 1 <= size <= {MAX_SIZE}; got x {tuple(x.shape)} "
                         f"strides {x.stride()} {x.dtype}, size {size}")


@triton_op("triton_kernels::local_response_norm", mutates_args=())
def _lrn_op(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """x (N, C, *) dense (checked by local_response_norm) -> out, x's shape and strides."""
    _check_op_args("triton_kernels::local_response_norm", x, size)
    out = torch.empty_like(x)  # (N, C, *) x's strides (empty_like keeps a dense layout)
    if x.numel() == 0:
        return out

    def grid(meta):
        return (triton.cdiv(x.numel(), meta["BLOCK"]),)

    launcher(_lrn_fwd)[grid](x, out, **_kernel_args(x, size, alpha, beta, k))
    return out


@triton_op("triton_kernels::local_response_norm_backward", mutates_args=())
def _lrn_backward_op(grad_out: torch.Tensor, x: torch.Tensor, size: int, alpha: float, beta: float,
                     k: float) -> torch.Tensor:
    """grad_out, x (N, C, *) -> grad_x in x's shape and strides; s is recomputed from x."""
    _check_op_args("triton_kernels::local_response_norm_backward", x, size)
    if grad_out.shape != x.shape or grad_out.dtype != x.dtype or grad_out.device != x.device:
        raise ValueError(f"grad_out must match x's shape {tuple(x.shape)}, dtype {x.dtype} and device {x.device}, "
                         f"got {tuple(grad_out.shape)}, {grad_out.dtype}, {grad_out.device}")
    if not _same_layout(grad_out, x):
        grad_out = torch.empty_like(x).copy_(grad_out)  # (N, C, *) in x's strides: one offset walks all three
    grad_x = torch.empty_like(x)  # (N, C, *)
    if x.numel() == 0:
        return grad_x

    def grid(meta):
        return (triton.cdiv(x.numel(), meta["BLOCK"]),)

    launcher(_lrn_bwd)[grid](x, grad_out, grad_x, **_kernel_args(x, size, alpha, beta, k),
                             coef=2.0 * alpha * beta / size)
    return grad_x


# ----------------------------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------------------------

def _setup_context(ctx, inputs, output):
    x, size, alpha, beta, k = inputs
    ctx.save_for_backward(x)  # the only thing kept: s is recomputed from it
    ctx.params = (size, alpha, beta, k)


def _backward(ctx, grad_out):
    (x,) = ctx.saved_tensors
    grad_x = torch.ops.triton_kernels.local_response_norm_backward(grad_out, x, *ctx.params)
    return grad_x, None, None, None, None


_lrn_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------------------------------------------
# Public function: checks before anything is launched or allocated
# ----------------------------------------------------------------------------------------------------------------

def _check_real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return float(value)


def local_response_norm(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> torch.Tensor:
    """torch.nn.functional.local_response_norm in Triton (forward and backward), the same arguments and semantics.

    x (N, C, *) with at least 3 dims -- like torch, a 3-D x is (N, C, L), not an unbatched image: dim 1 is always
    the channel dim -- in any layout (dense ones are read in place, others copied to contiguous), fp16/fp32/fp64
    (bf16 on a GPU: the Triton interpreter gets bf16 wrong). The output has x's shape, dtype and layout:

        out[:, c] = x[:, c] / (k + alpha/size * sum_{j = c - size//2}^{c + (size-1)//2} x[:, j]^2) ** beta

    channels outside [0, C) counting as zeros. Sums and powers run in fp32 (fp64 for fp64). The four scalars
    travel to the kernel as fp32 (Triton's type for a Python float), also for a fp64 x.
    Raises ValueError naming the argument before anything runs.
    """
    check_tensor(x, "x", min_ndim=3, shapes=_SHAPES, allow_empty=True)
    check_device(x=x)
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise ValueError(f"size must be an int, got {size!r}")
    if not 1 <= size <= MAX_SIZE:
        raise ValueError(f"size must be between 1 and {MAX_SIZE} (the window is unrolled in the kernel), got {size}")
    alpha = _check_real("alpha", alpha)
    beta = _check_real("beta", beta)
    k = _check_real("k", k)
    if x.numel() == 0:
        return x  # as torch: the input itself
    xd = x if _is_dense(x) else x.contiguous()  # (N, C, *) a layout one memory offset can walk
    return torch.ops.triton_kernels.local_response_norm(xd, int(size), alpha, beta, k)
