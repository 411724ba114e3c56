"""Max pooling in Triton: forward with argmax indices, gather-style backward, registered as a torch op.

Legend: N batch, C channels, H/W input height/width, OH/OW output height/width, KH/KW window,
SH/SW stride, PH/PW padding, DH/DW dilation.

    max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False)

Same semantics as torch.nn.functional.max_pool2d: padding counts as -inf, NaN wins (the window's last NaN), the
first maximum of a window wins ties, indices are flat positions ih*W + iw inside each (H, W) plane (int64), input
(N, C, H, W) or (C, H, W), NCHW or channels_last, float16/bfloat16/float32 (float64 too, for gradient checks;
bfloat16 only on the GPU: the interpreter computes it wrongly and it is refused there).

    OH = (H + 2*PH - DH*(KH-1) - 1 + (SH-1 if ceil_mode else 0)) // SH + 1
    (with ceil_mode, a last window that would start past H + PH is dropped: OH -= 1 if (OH-1)*SH >= H + PH)

Both kernels walk the tensor they write in its own memory order, one element per lane: the forward over the
output (NCHW: ow fastest; channels_last: c fastest, so the window loads are contiguous along c too), the backward
over the input. Pooling moves bytes and does no arithmetic to speak of, so the aim is memory bandwidth: every
byte read once from HBM (the window overlap is served by L1/L2), every byte written once, no atomics.
What the forward records for the backward is chosen by the wrapper: torch's int64 indices only when
return_indices=True; otherwise, when a gradient can follow, the tap kh*KW + kw of each maximum in one byte
(a 3x3 window has 9 taps), which cuts the forward's writes of a bf16 pool from 10 bytes an output to 3;
under no_grad, nothing.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from numpy_ref.geometry import pool_output_size
from triton_kernels._common import (
    elementwise_configs,
    check_device,
    check_tensor,
    launcher,
    pair,
    strides_like_channels_last,
)

# ----------------------------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------------------------

@triton.jit
def _unflatten(offs, C, H, W, CHANNELS_LAST: tl.constexpr):
    """Flat positions in a (N, C, H, W) tensor's memory order -> (n, c, h, w); channels_last orders n, h, w, c."""
    if CHANNELS_LAST:
        c = offs % C
        t = offs // C
        w = t % W
        t = t // W
        h = t % H
        n = t // H
    else:
        w = offs % W
        t = offs // W
        h = t % H
        t = t // H
        c = t % C
        n = t // C
    return n, c, h, w


# Forward. Computes numpy_ref.functional.max_pool2d_forward (a strided view of the windows, argmax over each) and
# its loop twin numpy_ref.naive.max_pool2d_forward (for n, c, oh, ow: over the window's taps, keep v if v > best or
# v is NaN), one lane per output:
#          out[n, c, oh, ow] = max over (kh, kw) of x[n, c, oh*SH - PH + kh*DH, ow*SW - PW + kw*DW]
#          (taps outside the image are -inf), and for the first maximum (NaN wins) one of
#          INDICES == FLAT:  idx[n, c, oh, ow] = ih*W + iw   (int64, torch's return_indices)
#          INDICES == TAPS:  idx[n, c, oh, ow] = kh*KW + kw  (int8 for a window of <= 127 taps: what the backward
#                            needs, 1 byte per output instead of 8)
#          INDICES == NONE:  nothing (no gradient wanted)
# Sizes are not specialized (one compiled kernel serves every image size); strides are (a stride of 1 matters).
@triton.jit(do_not_specialize=["C", "H", "W", "OH", "OW"])
def _max_pool2d_fwd_kernel(
    # Pointers
    x_ptr, out_ptr, idx_ptr,
    # Sizes (TOTAL: elements this kernel writes)
    C, H, W, OH, OW, TOTAL,
    # Strides (in elements), n/c/h/w order
    stride_xn, stride_xc, stride_xh, stride_xw,
    # Meta-parameters: the window (kernel, stride, padding, dilation), then the variant and the block
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, INDEX_64: tl.constexpr, INDICES: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    if INDEX_64:
        pid = pid.to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,) flat output positions, in out's memory order
    mask = offs < TOTAL
    n, c, oh, ow = _unflatten(offs, C, OH, OW, CHANNELS_LAST)  # (BLOCK,) each
    x_plane = x_ptr + n * stride_xn + c * stride_xc  # (BLOCK,) pointers to each lane's (H, W) plane
    best = tl.full([BLOCK], float("-inf"), x_ptr.dtype.element_ty)  # (BLOCK,)
    best_idx = tl.full([BLOCK], -1, tl.int32)  # (BLOCK,) -1: nothing taken yet
    for kh in tl.static_range(KH):
        ih = oh * SH - PH + kh * DH  # (BLOCK,)
        row_ok = (ih >= 0) & (ih < H)
        for kw in tl.static_range(KW):
            iw = ow * SW - PW + kw * DW  # (BLOCK,)
            ok = mask & row_ok & (iw >= 0) & (iw < W)
            v = tl.load(x_plane + ih * stride_xh + iw * stride_xw, mask=ok, other=float("-inf"))  # (BLOCK,)
            # torch's rule: take v if it is larger or NaN; the first tap inside the image is taken regardless,
            # so an all -inf window points at its first real element, as torch's does.
            take = ok & ((v > best) | (v != v) | (best_idx < 0))
            best = tl.where(take, v, best)
            if INDICES == 2:  # FLAT
                best_idx = tl.where(take, (ih * W + iw).to(tl.int32), best_idx)
            else:  # TAPS (and NONE, where it only marks "taken")
                best_idx = tl.where(take, kh * KW + kw, best_idx)
    tl.store(out_ptr + offs, best, mask=mask)
    if INDICES != 0:
        tl.store(idx_ptr + offs, best_idx.to(idx_ptr.dtype.element_ty), mask=mask)


# Backward. Computes numpy_ref.functional.max_pool2d_backward (one np.bincount of dout at the flat argmax indices)
# and numpy_ref.naive.max_pool2d_backward (`dx[n, c, idx] += dout[n, c, oh, ow]`, one output at a time), turned
# from a scatter into a gather, one lane per input element:
# grad_x[n, c, ih, iw] = sum over the windows (oh, ow) that contain (ih, iw) and chose it,
#                    idx[n, c, oh, ow] == ih*W + iw (FLAT) or == kh*KW + kw (TAPS), of grad_out[n, c, oh, ow].
# Window (oh, ow) reaches ih through tap kh iff ih + PH - kh*DH = oh*SH, so each input element checks at most
# KH*KW candidate windows and writes its own sum: no atomics, deterministic. The taps run from the last to the
# first so the windows are summed in increasing (oh, ow), the order torch's CPU backward adds them in.
@triton.jit(do_not_specialize=["C", "H", "W", "OH", "OW"])
def _max_pool2d_bwd_kernel(
    # Pointers
    grad_out_ptr, idx_ptr, grad_x_ptr,
    # Sizes (TOTAL: elements this kernel writes)
    C, H, W, OH, OW, TOTAL,
    # Strides (in elements), n/c/h/w order
    stride_gn, stride_gc, stride_gh, stride_gw,
    stride_in, stride_ic, stride_ih, stride_iw,
    # Meta-parameters: the window (kernel, stride, padding, dilation), then the variant and the block
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, INDEX_64: tl.constexpr, FLAT_INDICES: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    if INDEX_64:
        pid = pid.to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,) flat input positions, in grad_x's memory order
    mask = offs < TOTAL
    n, c, ih, iw = _unflatten(offs, C, H, W, CHANNELS_LAST)  # (BLOCK,) each
    me = (ih * W + iw).to(tl.int64)  # (BLOCK,) the index a window stores when it chose this element
    g_plane = grad_out_ptr + n * stride_gn + c * stride_gc  # (BLOCK,)
    i_plane = idx_ptr + n * stride_in + c * stride_ic  # (BLOCK,)
    acc = tl.zeros([BLOCK], dtype=ACC_DTYPE)  # (BLOCK,)
    for rkh in tl.static_range(KH):
        kh = KH - 1 - rkh
        oh_s = ih + PH - kh * DH  # (BLOCK,) = oh*SH when tap kh of window oh lands on ih
        oh = oh_s // SH
        oh_ok = (oh_s >= 0) & (oh_s % SH == 0) & (oh < OH)
        for rkw in tl.static_range(KW):
            kw = KW - 1 - rkw
            ow_s = iw + PW - kw * DW  # (BLOCK,)
            ow = ow_s // SW
            ok = mask & oh_ok & (ow_s >= 0) & (ow_s % SW == 0) & (ow < OW)
            chosen = tl.load(i_plane + oh * stride_ih + ow * stride_iw, mask=ok, other=-1)  # (BLOCK,)
            if FLAT_INDICES:
                hit = ok & (chosen == me)
            else:
                hit = ok & (chosen == kh * KW + kw)
            g = tl.load(g_plane + oh * stride_gh + ow * stride_gw, mask=hit, other=0.0)  # (BLOCK,)
            acc += g.to(ACC_DTYPE)
    tl.store(grad_x_ptr + offs, acc.to(grad_x_ptr.dtype.element_ty), mask=mask)


_max_pool2d_fwd = triton.autotune(configs=elementwise_configs(), key=["TOTAL", "C", "OW", "CHANNELS_LAST"])(
    _max_pool2d_fwd_kernel
)
_max_pool2d_bwd = triton.autotune(configs=elementwise_configs(), key=["TOTAL", "C", "W", "CHANNELS_LAST"])(
    _max_pool2d_bwd_kernel
)


# ----------------------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------------------

# What the forward records for the backward (the kernels' INDICES constexpr): nothing, the tap kh*KW + kw of the
# maximum (training: 1 byte), or torch's flat ih*W + iw (int64, for return_indices=True).
_INDEX_KINDS = {"none": 0, "taps": 1, "flat": 2}
def _needs_int64(*tensors: torch.Tensor) -> bool:
    """True when some element offset of these tensors does not fit in int32."""
    for t in tensors:
        extent = 1 + sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride()) if s > 0)
        if t.numel() >= 2**31 or extent >= 2**31:
            return True
    return False


def _tap_dtype(kernel_size) -> torch.dtype:
    """The smallest int dtype that holds a tap number kh*KW + kw < KH*KW."""
    taps = kernel_size[0] * kernel_size[1]
    return torch.int8 if taps <= 127 else torch.int16 if taps <= 32767 else torch.int32


def _window_args(kernel_size, stride, padding, dilation) -> dict:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    return {"KH": kh, "KW": kw, "SH": sh, "SW": sw, "PH": ph, "PW": pw, "DH": dh, "DW": dw}


@triton_op("triton_kernels::max_pool2d", mutates_args=())
def _max_pool2d_op(
    x: torch.Tensor,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    ceil_mode: bool,
    indices_kind: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, C, H, W), already checked by max_pool2d -> (out, indices): out (N, C, OH, OW) in x's layout;
    indices_kind "flat": int64 ih*W + iw like out, "taps": kh*KW + kw (int8 up to 127 taps) like out,
    "none": an empty int8 tensor."""
    if x.dim() != 4 or indices_kind not in _INDEX_KINDS or not all(
            len(v) == 2 for v in (kernel_size, stride, padding, dilation)):
        raise ValueError(f"triton_kernels::max_pool2d wants x (N, C, H, W), pairs and indices_kind in "
                         f"{tuple(_INDEX_KINDS)}; got x {tuple(x.shape)}, kernel_size {kernel_size}, stride {stride}, "
                         f"padding {padding}, dilation {dilation}, indices_kind {indices_kind!r}")
    check_tensor(x, "x", (4,), allow_empty=True)
    check_device(x=x)
    N, C, H, W = x.shape
    OH = pool_output_size(H, kernel_size[0], stride[0], padding[0], dilation[0], ceil_mode)
    OW = pool_output_size(W, kernel_size[1], stride[1], padding[1], dilation[1], ceil_mode)
    channels_last = strides_like_channels_last(x)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty((N, C, OH, OW), dtype=x.dtype, device=x.device, memory_format=fmt)  # (N, C, OH, OW)
    if indices_kind == "none":
        indices = torch.empty((0,), dtype=torch.int8, device=x.device)  # (0,)
    else:
        idx_dtype = torch.int64 if indices_kind == "flat" else _tap_dtype(kernel_size)
        indices = torch.empty((N, C, OH, OW), dtype=idx_dtype, device=x.device, memory_format=fmt)  # (N,C,OH,OW)
    total = out.numel()
    if total == 0:
        return out, indices

    def grid(meta):
        return (triton.cdiv(total, meta["BLOCK"]),)

    launcher(_max_pool2d_fwd)[grid](
        x, out, indices if indices_kind != "none" else out,
        C, H, W, OH, OW, total,
        x.stride(0), x.stride(1), x.stride(2), x.stride(3),
        **_window_args(kernel_size, stride, padding, dilation),
        CHANNELS_LAST=channels_last,
        INDEX_64=_needs_int64(x, out),
        INDICES=_INDEX_KINDS[indices_kind],
    )
    return out, indices


@triton_op("triton_kernels::max_pool2d_backward", mutates_args=())
def _max_pool2d_backward_op(
    grad_out: torch.Tensor,
    indices: torch.Tensor,
    input_size: list[int],
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    channels_last: bool,
    flat_indices: bool,
) -> torch.Tensor:
    """grad_out, indices (N, C, OH, OW) -> grad_x (N, C, H, W) = input_size, channels_last like the input was.
    indices are flat ih*W + iw when flat_indices, else taps kh*KW + kw."""
    check_tensor(grad_out, "grad_out", (4,), allow_empty=True)
    check_device(grad_out=grad_out, indices=indices)
    N, C, H, W = input_size
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    grad_x = torch.empty((N, C, H, W), dtype=grad_out.dtype, device=grad_out.device, memory_format=fmt)  # (N,C,H,W)
    total = grad_x.numel()
    if total == 0:
        return grad_x

    def grid(meta):
        return (triton.cdiv(total, meta["BLOCK"]),)

    launcher(_max_pool2d_bwd)[grid](
        grad_out, indices, grad_x,
        C, H, W, OH, OW, total,
        grad_out.stride(0), grad_out.stride(1), grad_out.stride(2), grad_out.stride(3),
        indices.stride(0), indices.stride(1), indices.stride(2), indices.stride(3),
        **_window_args(kernel_size, stride, padding, dilation),
        CHANNELS_LAST=channels_last,
        INDEX_64=_needs_int64(grad_out, indices, grad_x),
        FLAT_INDICES=flat_indices,
        ACC_DTYPE=tl.float64 if grad_out.dtype == torch.float64 else tl.float32,
    )
    return grad_x


# ----------------------------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------------------------

def _setup_context(ctx, inputs, output):
    x, kernel_size, stride, padding, dilation, _ceil_mode, indices_kind = inputs
    _out, indices = output
    ctx.mark_non_differentiable(indices)
    ctx.save_for_backward(indices)
    ctx.input_size = list(x.shape)
    ctx.window = (kernel_size, stride, padding, dilation)
    ctx.channels_last = strides_like_channels_last(x)
    ctx.indices_kind = indices_kind


def _backward(ctx, grad_out, _grad_indices):
    if ctx.indices_kind == "none":  # max_pool2d asks for "none" only when no gradient can be wanted
        raise RuntimeError("triton_kernels::max_pool2d was called with indices_kind='none' but a gradient is needed")
    (indices,) = ctx.saved_tensors
    grad_x = torch.ops.triton_kernels.max_pool2d_backward(
        grad_out, indices, ctx.input_size, *ctx.window, ctx.channels_last, ctx.indices_kind == "flat"
    )
    return grad_x, None, None, None, None, None, None


_max_pool2d_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------------------------------------------
# Public function: checks before anything is launched or allocated
# ----------------------------------------------------------------------------------------------------------------

def max_pool2d(
    x: torch.Tensor,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode: bool = False,
    return_indices: bool = False,
):
    """torch.nn.functional.max_pool2d in Triton (forward and backward).

    x (N, C, H, W) or (C, H, W) -> out (N, C, OH, OW) or (C, OH, OW), plus int64 indices (flat ih*W + iw in each
    plane) when return_indices. stride defaults to kernel_size.

        OH = (H + 2*padding - dilation*(kernel_size-1) - 1 [+ stride-1 if ceil_mode]) // stride + 1
        (ceil_mode drops a last window that would start in the right padding; the same for OW)

    Raises ValueError naming the argument and the shapes it got, before anything runs.
    """
    check_tensor(x, "x", (3, 4), shapes="(N, C, H, W) or (C, H, W)", allow_empty=True)
    check_device(x=x)
    k = pair(kernel_size, "kernel_size")
    s = k if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) else pair(stride, "stride")
    p = pair(padding, "padding")
    d = pair(dilation, "dilation")
    if min(k) < 1:
        raise ValueError(f"kernel_size must be positive, got {k}")
    if min(s) < 1:
        raise ValueError(f"stride must be positive, got {s}")
    if min(d) < 1:
        raise ValueError(f"dilation must be positive, got {d}")
    if min(p) < 0 or p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"padding must be between 0 and half the kernel_size {k}, got {p}")
    plane = tuple(x.shape[-3:])
    if min(plane) < 1:
        raise ValueError(f"x must have non-empty C, H, W, got shape {tuple(x.shape)}")
    H, W = plane[1], plane[2]
    OH = pool_output_size(H, k[0], s[0], p[0], d[0], bool(ceil_mode))
    OW = pool_output_size(W, k[1], s[1], p[1], d[1], bool(ceil_mode))
    if OH < 1 or OW < 1:
        raise ValueError(
            f"output size ({OH}, {OW}) is too small: x shape {tuple(x.shape)}, kernel_size {k}, stride {s},"
            f" padding {p}, dilation {d}, ceil_mode {bool(ceil_mode)}"
        )

    # What the forward must record: torch's indices if asked for, else the 1-byte taps if a backward can follow.
    if return_indices:
        kind = "flat"
    elif torch.is_grad_enabled() and x.requires_grad:
        kind = "taps"
    else:
        kind = "none"
    unbatched = x.dim() == 3
    x4 = x.unsqueeze(0) if unbatched else x  # (N, C, H, W)
    out, indices = torch.ops.triton_kernels.max_pool2d(x4, list(k), list(s), list(p), list(d), bool(ceil_mode), kind)
    if unbatched:
        out, indices = out.squeeze(0), indices.squeeze(0)  # (C, OH, OW)
    return (out, indices) if return_indices else out
