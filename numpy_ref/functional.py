"""Every AlexNet op as a NumPy forward/backward pair (the fast, vectorised versions).

    N batch, C channels in, F filters out, G groups, H/W height/width, K kernel (KH x KW), OH/OW output size

Each op comes as

    out, cache = <op>_forward(x, ...)        # torch.nn.functional's argument names and defaults
    dx, ...    = <op>_backward(dout, cache)  # gradients of the array inputs, in argument order (None: no bias);
                                             # a single array for the one-input ops (relu, max_pool2d, ...)

with the backward right under its forward. Dtype follows the input: float64 for checks, float32 for speed.
The plain-loop twins, which read like the formulas, live in numpy_ref.naive; the tests hold both equal to
each other and to torch. Argument checks and output sizes live in numpy_ref.geometry. The math of every
backward is in docs/numpy_reference.md.
"""
from __future__ import annotations

import threading

import numpy as np
from numpy.lib.stride_tricks import as_strided

from numpy_ref.geometry import (
    ConvGeometry, PoolGeometry, check_dout, check_float, check_lrn_args, check_same_dtype, conv2d_geometry,
    max_pool2d_geometry,
)

__all__ = [
    "conv2d_forward", "conv2d_backward",
    "max_pool2d_forward", "max_pool2d_backward",
    "local_response_norm_forward", "local_response_norm_backward",
    "relu_forward", "relu_backward",
    "linear_forward", "linear_backward",
    "dropout_forward", "dropout_backward",
    "flatten_forward", "flatten_backward",
    "cross_entropy_forward", "cross_entropy_backward",
]


# ----------------------------------------------------------------------------------------------------------
# conv2d: im2col through a strided view + one BLAS matmul per group

def conv2d_forward(input: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, stride=1,
                   padding=0, dilation=1, groups: int = 1) -> tuple[np.ndarray, tuple]:
    """out[n, f, oh, ow] = bias[f]
                          + sum_{c, kh, kw} x_pad[n, grp*Cg + c, oh*sh + kh*dh, ow*sw + kw*dw] * weight[f, c, kh, kw]
    where grp = f // (F/G) is the filter's group (`g` below is the geometry: every size at once).
    OH = (H + 2*pad - dil*(KH-1) - 1) // stride + 1.

    x (N, C, H, W) or (C, H, W); weight (F, C/G, KH, KW); bias (F,) or None -> out (N, F, OH, OW) or (F, OH, OW)."""
    x = input  # torch.nn.functional's name for the first argument
    g = conv2d_geometry(x, weight, bias, stride, padding, dilation, groups)
    xp = _pad(x[None] if g.unbatched else x, g)                  # (N, C, Hp, Wp)
    cols = _im2col(xp, g)                                        # (C*KH*KW, N*OH*OW)
    w2 = weight.reshape(g.F, g.Cg * g.KH * g.KW)                 # (F, Cg*KH*KW)
    Kg = g.Cg * g.KH * g.KW
    out2 = _workspace("out2", (g.F, cols.shape[1]), x.dtype)    # (F, N*OH*OW)
    for k in range(g.G):  # group k: its Fg filters see only its Cg channels
        fs, cs = slice(k * g.Fg, (k + 1) * g.Fg), slice(k * Kg, (k + 1) * Kg)
        np.matmul(w2[fs], cols[cs], out=out2[fs])                # (Fg, N*OH*OW): the whole conv, one GEMM
    if bias is not None:
        out2 += bias[:, None]                                    # (F, N*OH*OW)
    out = out2.reshape(g.F, g.N, g.OH, g.OW).transpose(1, 0, 2, 3)  # (N, F, OH, OW), a view of scratch space
    out = out.copy()  # (N, F, OH, OW), a fresh array: always a copy (for N = 1 the view is already
    # contiguous, so np.ascontiguousarray would hand out the scratch buffer that the next call overwrites)
    cache = (xp, weight, bias is not None, g)
    return (out[0] if g.unbatched else out), cache


def conv2d_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Three correlations with the same columns (docs/numpy_reference.md, "conv2d backward"):
        dweight = dout_2d @ cols.T                       (F, N*OH*OW) @ (N*OH*OW, Cg*KH*KW)
        dbias   = dout summed over n, oh, ow
        dx      = col2im(weight_2d.T @ dout_2d)          every column scattered back onto the input pixels it read
    dout (N, F, OH, OW) -> dx like x, dweight like weight, dbias (F,) or None."""
    xp, weight, has_bias, g = cache
    out_shape = (g.F, g.OH, g.OW) if g.unbatched else (g.N, g.F, g.OH, g.OW)
    check_dout(dout, out_shape, xp.dtype, "conv2d")
    d4 = dout[None] if g.unbatched else dout                     # (N, F, OH, OW)
    dout2 = d4.transpose(1, 0, 2, 3).reshape(g.F, g.N * g.OH * g.OW)  # (F, N*OH*OW)
    cols = _im2col(xp, g)                                        # (C*KH*KW, N*OH*OW), recomputed: saves memory
    w2 = weight.reshape(g.F, g.Cg * g.KH * g.KW)                 # (F, Cg*KH*KW)
    Kg = g.Cg * g.KH * g.KW
    dw2 = np.empty_like(w2)                                      # (F, Cg*KH*KW)
    dcols = _workspace("dcols", cols.shape, cols.dtype)          # (C*KH*KW, N*OH*OW)
    for k in range(g.G):
        fs, cs = slice(k * g.Fg, (k + 1) * g.Fg), slice(k * Kg, (k + 1) * Kg)
        dw2[fs] = (cols[cs] @ dout2[fs].T).T                     # (Fg, Cg*KH*KW); this operand order is
        # the same product as dout2 @ cols.T, but OpenBLAS splits it better over threads (conv1: 20x at 2 threads)
        np.matmul(w2[fs].T, dout2[fs], out=dcols[cs])            # (Cg*KH*KW, N*OH*OW)
    dbias = dout2.sum(axis=1) if has_bias else None              # (F,)
    # col2im: add each kernel tap's slab back where that tap read from (KH*KW strided adds, no Python pixel loop)
    dcols6 = dcols.reshape(g.C, g.KH, g.KW, g.N, g.OH, g.OW)      # (C, KH, KW, N, OH, OW)
    dxp = np.zeros(xp.shape, dtype=xp.dtype)                     # (N, C, Hp, Wp)
    (sh, sw), (dh, dw) = g.stride, g.dilation
    for kh in range(g.KH):
        for kw in range(g.KW):
            h0, w0 = kh * dh, kw * dw
            dxp[:, :, h0:h0 + sh * (g.OH - 1) + 1:sh, w0:w0 + sw * (g.OW - 1) + 1:sw] += \
                dcols6[:, kh, kw].transpose(1, 0, 2, 3)          # (N, C, OH, OW)
    dx = dxp[:, :, g.pad_h[0]:g.pad_h[0] + g.H, g.pad_w[0]:g.pad_w[0] + g.W]  # (N, C, H, W)
    dx = np.ascontiguousarray(dx[0] if g.unbatched else dx)     # like x
    return dx, dw2.reshape(weight.shape), dbias


# conv2d's helpers: the columns (im2col), the padding, the scratch space

_scratch = threading.local()


def _workspace(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A scratch array that never leaves the function using it, reused from call to call (one per name and
    thread, grown to the largest layer's size). Why: conv2's columns are 52 MB at batch 8; a fresh array that
    big is fresh pages, which the kernel must zero on first touch, and that costs more than the copy itself."""
    size = int(np.prod(shape))
    buf = getattr(_scratch, name, None)
    if buf is None or buf.dtype != dtype or buf.size < size:
        buf = np.empty(size, dtype=dtype)
        setattr(_scratch, name, buf)
    return buf[:size].reshape(shape)


def _im2col(xp: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """The columns of the padded input: row (c, kh, kw), column (n, oh, ow) holds
    xp[n, c, oh*stride + kh*dilation, ow*stride + kw*dilation]. One copy (into scratch space), no Python loop."""
    sN, sC, sH, sW = xp.strides
    windows = as_strided(  # a view, nothing copied yet
        xp,
        shape=(g.N, g.C, g.OH, g.OW, g.KH, g.KW),
        strides=(sN, sC, sH * g.stride[0], sW * g.stride[1], sH * g.dilation[0], sW * g.dilation[1]),
        writeable=False,
    )  # (N, C, OH, OW, KH, KW)
    cols = _workspace("cols", (g.C, g.KH, g.KW, g.N, g.OH, g.OW), xp.dtype)  # (C, KH, KW, N, OH, OW)
    np.copyto(cols, windows.transpose(1, 4, 5, 0, 2, 3))
    return cols.reshape(g.C * g.KH * g.KW, g.N * g.OH * g.OW)  # (C*KH*KW, N*OH*OW)


def _pad(x4: np.ndarray, g: ConvGeometry, value: float = 0.0) -> np.ndarray:
    if g.pad_h == (0, 0) and g.pad_w == (0, 0):
        return np.ascontiguousarray(x4)  # (N, C, H, W)
    return np.pad(x4, ((0, 0), (0, 0), g.pad_h, g.pad_w), constant_values=value)  # (N, C, Hp, Wp)


# ----------------------------------------------------------------------------------------------------------
# max_pool2d: the windows as a strided view, argmax routes the gradient

def max_pool2d_forward(input: np.ndarray, kernel_size, stride=None, padding=0, dilation=1,
                       ceil_mode: bool = False, return_indices: bool = False):
    """out[n, c, oh, ow] = max_{kh, kw} x_pad[n, c, oh*sh + kh*dh, ow*sw + kw*dw], padding is -inf.

    Returns (out, cache), or ((out, indices), cache) with return_indices, where indices are torch's: the flat
    h*W + w position of the first maximum in the unpadded (H, W) plane, int64."""
    x = input  # torch.nn.functional's name for the first argument
    g = max_pool2d_geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
    x4 = x[None] if g.unbatched else x                           # (N, C, H, W)
    windows = _pool_windows(x4, g).reshape(g.N, g.C, g.OH, g.OW, g.KH * g.KW)  # (N, C, OH, OW, KH*KW), a copy
    arg = windows.argmax(axis=-1)                                # (N, C, OH, OW), the first maximum, as torch
    out = np.take_along_axis(windows, arg[..., None], axis=-1)[..., 0]  # (N, C, OH, OW)
    if np.isnan(out).any():  # torch keeps the LAST NaN of a window (argmax found the first)
        isnan = np.isnan(windows)                                # (N, C, OH, OW, KH*KW)
        last_nan = g.KH * g.KW - 1 - isnan[..., ::-1].argmax(axis=-1)  # (N, C, OH, OW)
        arg = np.where(isnan.any(axis=-1), last_nan, arg)        # (N, C, OH, OW)
    (sh, sw), (ph, pw), (dh, dw) = g.stride, g.padding, g.dilation
    oh = np.arange(g.OH)[:, None]                                # (OH, 1)
    ow = np.arange(g.OW)[None, :]                                # (1, OW)
    h = oh * sh - ph + (arg // g.KW) * dh                        # (N, C, OH, OW), row in the unpadded input
    w = ow * sw - pw + (arg % g.KW) * dw                         # (N, C, OH, OW)
    indices = (h * g.W + w).astype(np.int64)                     # (N, C, OH, OW)
    if (out == -np.inf).any():  # nothing beat -inf: torch reports the window's first tap inside the input
        h0, w0 = _first_tap(oh * sh - ph, dh), _first_tap(ow * sw - pw, dw)  # (OH, 1), (1, OW)
        indices = np.where(out == -np.inf, h0 * g.W + w0, indices)  # (N, C, OH, OW)
    cache = (indices, g, x.dtype)
    if g.unbatched:
        out, indices = out[0], indices[0]
    return ((out, indices) if return_indices else out), cache


def max_pool2d_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """Each output's gradient goes to the one input pixel that won its window (indices), and adds up
    where windows overlap: np.add.at(dx_plane, indices, dout) per (n, c) plane, done here as one np.bincount
    over all planes. (Not `dx.flat[indices] += dout`: fancy-index += writes a repeated index once, so a pixel
    that wins two windows would get only one of their gradients.) dout like out -> dx like x."""
    indices, g, dtype = cache
    out_shape = (g.C, g.OH, g.OW) if g.unbatched else (g.N, g.C, g.OH, g.OW)
    check_dout(dout, out_shape, dtype, "max_pool2d")
    plane = g.H * g.W
    offsets = np.arange(g.N * g.C, dtype=np.int64).reshape(g.N, g.C, 1, 1) * plane  # (N, C, 1, 1)
    i4 = indices.reshape(g.N, g.C, g.OH, g.OW)                   # (N, C, OH, OW)
    weights = dout.reshape(i4.shape)                             # (N, C, OH, OW)
    outside = (i4 < 0) | (i4 >= plane)  # only for a window with no tap inside the input (its output is -inf)
    if outside.any():
        i4, weights = np.where(outside, 0, i4), np.where(outside, 0, weights)  # (N, C, OH, OW) each
    flat = (i4 + offsets).ravel()                                # (N*C*OH*OW,)
    dx = np.bincount(flat, weights=weights.ravel(), minlength=g.N * g.C * plane)  # (N*C*H*W,) float64
    dx = dx.astype(dtype, copy=False).reshape((g.C, g.H, g.W) if g.unbatched else (g.N, g.C, g.H, g.W))  # like x
    return dx


# max_pool2d's helpers

def _pool_windows(x4: np.ndarray, g: PoolGeometry) -> np.ndarray:
    """Pad with -inf (enough for ceil_mode's last window) and return the windows as a view."""
    (sh, sw), (ph, pw), (dh, dw) = g.stride, g.padding, g.dilation
    Hp = max(g.H + ph, (g.OH - 1) * sh + dh * (g.KH - 1) + 1)
    Wp = max(g.W + pw, (g.OW - 1) * sw + dw * (g.KW - 1) + 1)
    xp = np.full((g.N, g.C, Hp, Wp), -np.inf, dtype=x4.dtype)   # (N, C, Hp, Wp)
    xp[:, :, ph:ph + g.H, pw:pw + g.W] = x4
    sN, sC, sH, sW = xp.strides
    return as_strided(xp, shape=(g.N, g.C, g.OH, g.OW, g.KH, g.KW),
                      strides=(sN, sC, sH * sh, sW * sw, sH * dh, sW * dw), writeable=False)  # (N, C, OH, OW, KH, KW)


def _first_tap(start: np.ndarray, dilation: int) -> np.ndarray:
    """The first tap start + k*dilation (k >= 0) that is not in the top/left padding, as torch finds it."""
    return np.where(start < 0, start + (-start + dilation - 1) // dilation * dilation, start)


# ----------------------------------------------------------------------------------------------------------
# local_response_norm: each value divided by the energy of its neighbouring channels

def local_response_norm_forward(input: np.ndarray, size: int, alpha: float = 1e-4, beta: float = 0.75,
                                k: float = 1.0) -> tuple[np.ndarray, tuple]:
    """torch.nn.functional.local_response_norm, the same arguments and numbers:

        out[n, c, ...] = x[n, c, ...] / d[n, c, ...]**beta,
        d[n, c, ...]   = k + alpha/size * sum_{j = c - size//2}^{c + (size-1)//2} x[n, j, ...]**2

    channels outside 0..C-1 count as zeros (alpha is divided by `size` even at the edges: the squares are
    averaged over the window, padding included). For an even size the window reaches one channel further
    back than forward. Channels are axis 1 of an input of 3 or more dimensions, (N, C, *), as in torch: a
    3-D input is (N, C, L), so an unbatched (C, H, W) image goes in as input[None].
    The paper's b = a / (k + alpha' * sum over 5 channels of a^2)^beta is size=5, alpha = 5 * alpha'."""
    x = input  # torch.nn.functional's name for the first argument
    op = "local_response_norm"
    check_lrn_args(x, size, alpha, beta, k, op)
    alpha, beta, k = float(alpha), float(beta), float(k)  # Python floats: the result keeps x's dtype
    d = k + (alpha / size) * _channel_window_sum(x * x, size // 2, (size - 1) // 2)  # like x, the normalizer
    out = x * d ** -beta                                         # like x
    return out, (x, d, size, alpha, beta)


def local_response_norm_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """out_c = x_c * d_c^-beta with d_c = k + alpha/size * sum_{j in W(c)} x_j^2, so (docs/numpy_reference.md)

        dx_i = dout_i * d_i^-beta  -  (2*alpha*beta/size) * x_i * sum_{c : i in W(c)} dout_c * out_c / d_c

    the second sum runs over the channels whose window holds i: c from i - (size-1)//2 to i + size//2, the
    forward's window mirrored (the same for an odd size). dout like out -> dx like x."""
    x, d, size, alpha, beta = cache
    check_dout(dout, x.shape, x.dtype, "local_response_norm")
    scale = d ** -beta                                           # like x
    t = dout * (x * scale) / d                                   # like x: dout_c * out_c / d_c
    back = _channel_window_sum(t, (size - 1) // 2, size // 2)    # like x, sum over the c whose window holds i
    return dout * scale - x.dtype.type(2 * alpha * beta / size) * x * back  # like x


def _channel_window_sum(a: np.ndarray, before: int, after: int) -> np.ndarray:
    """s[:, c] = sum of a[:, j] for j from c - before to c + after (channels outside 0..C-1 are zeros):
    pad axis 1 and add before + after + 1 shifted slices (a window of 5 is 5 adds, no Python channel loop)."""
    C = a.shape[1]
    pad = [(0, 0)] * a.ndim
    pad[1] = (before, after)
    ap = np.pad(a, pad)                                          # (N, before + C + after, *)
    s = ap[:, 0:C].copy()                                        # like a
    for j in range(1, before + after + 1):
        s += ap[:, j:j + C]
    return s


# ----------------------------------------------------------------------------------------------------------
# relu, linear, dropout, flatten

def relu_forward(input: np.ndarray) -> tuple[np.ndarray, tuple]:
    """out = max(x, 0)."""
    x = input  # torch.nn.functional's name for the first argument
    check_float(x, "input", "relu")
    out = np.maximum(x, 0)                                       # like x
    return out, (out,)


def relu_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """dx = 0 where the output is <= 0, else dout: torch's threshold_backward(dout, out, 0), whose test is
    `out <= 0`. So the gradient at exactly 0 is 0, and at a NaN input (out is NaN, NaN <= 0 is false) it passes."""
    (out,) = cache
    check_dout(dout, out.shape, out.dtype, "relu")
    return np.where(out <= 0, 0, dout).astype(out.dtype, copy=False)  # like x


def linear_forward(input: np.ndarray, weight: np.ndarray,
                   bias: np.ndarray | None = None) -> tuple[np.ndarray, tuple]:
    """out = x @ weight.T + bias.  x (..., in), weight (out, in), bias (out,) -> (..., out)."""
    x = input  # torch.nn.functional's name for the first argument
    check_same_dtype("linear", input=x, weight=weight, bias=bias)
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out, in), got shape {weight.shape}")
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input's last dimension must be in_features={weight.shape[1]} "
                         f"(weight {weight.shape}), got input shape {x.shape}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: bias must have shape ({weight.shape[0]},) for weight {weight.shape}, "
                         f"got {bias.shape}")
    out = x @ weight.T                                           # (..., out)
    if bias is not None:
        out += bias
    return out, (x, weight, bias is not None)


def linear_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """dx = dout @ weight;  dweight = dout_2d.T @ x_2d;  dbias = dout summed over every leading axis."""
    x, weight, has_bias = cache
    check_dout(dout, (*x.shape[:-1], weight.shape[0]), x.dtype, "linear")
    dx = dout @ weight                                           # (..., in)
    d2 = dout.reshape(-1, weight.shape[0])                       # (M, out), M = prod of leading dims
    dweight = d2.T @ x.reshape(-1, weight.shape[1])              # (out, in)
    dbias = d2.sum(axis=0) if has_bias else None                 # (out,)
    return dx, dweight, dbias


def dropout_forward(input: np.ndarray, p: float = 0.5, training: bool = True,
                    rng: np.random.Generator | None = None) -> tuple[np.ndarray, tuple]:
    """Inverted dropout: each element is zeroed with probability p (torch's meaning: p is the DROP
    probability) and the survivors are scaled by 1/(1-p), so eval mode is the identity.
    Training needs an explicit np.random.Generator: the mask is rng.random(x.shape) >= p."""
    x = input  # torch.nn.functional's name for the first argument
    check_float(x, "input", "dropout")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p!r}")
    if not training or p == 0.0:
        return x.copy(), (None, x.shape, x.dtype)
    if p == 1.0:
        mask = np.zeros(x.shape, dtype=x.dtype)                  # like x: everything dropped
    else:
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"dropout: training with p={p} needs rng=np.random.Generator, got {rng!r}")
        keep = rng.random(x.shape, dtype=x.dtype) >= p           # like x, bool, P(keep) = 1 - p
        mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))  # like x: 0 or 1/(1-p)
    return x * mask, (mask, x.shape, x.dtype)


def dropout_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """dx = dout * mask (the same zeros and the same 1/(1-p) scale as the forward)."""
    mask, shape, dtype = cache
    check_dout(dout, shape, dtype, "dropout")
    return dout.copy() if mask is None else dout * mask         # like x


def flatten_forward(input: np.ndarray, start_dim: int = 1, end_dim: int = -1) -> tuple[np.ndarray, tuple]:
    """torch.flatten(x, start_dim, end_dim); the defaults are nn.Flatten's: (N, C, H, W) -> (N, C*H*W)."""
    x = input  # torch.nn.functional's name for the first argument
    check_float(x, "input", "flatten")
    nd = max(x.ndim, 1)
    s, e = start_dim % nd if -nd <= start_dim < nd else None, end_dim % nd if -nd <= end_dim < nd else None
    if s is None or e is None or s > e:
        raise ValueError(f"flatten: start_dim={start_dim}, end_dim={end_dim} do not fit input shape {x.shape}")
    shape = x.shape[:s] + (int(np.prod(x.shape[s:e + 1])),) + x.shape[e + 1:]
    return x.reshape(shape), (x.shape, x.dtype)                  # (N, C*H*W) by default


def flatten_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """Flatten moves no numbers: dx is dout reshaped back."""
    shape, dtype = cache
    if not isinstance(dout, np.ndarray) or dout.size != int(np.prod(shape)) or dout.dtype != dtype:
        raise ValueError(f"flatten_backward: dout must be {dtype} with {int(np.prod(shape))} elements, "
                         f"got {getattr(dout, 'dtype', None)} {getattr(dout, 'shape', None)}")
    return dout.reshape(shape)


# ----------------------------------------------------------------------------------------------------------
# cross-entropy (log-softmax + negative log-likelihood, then torch's reduction over the batch)

REDUCTIONS = ("mean", "sum", "none")


def cross_entropy_forward(input: np.ndarray, target: np.ndarray, reduction: str = "mean") -> tuple[np.ndarray, tuple]:
    """loss[n] = logsumexp(logits[n]) - logits[n, target[n]], then reduced as torch's `reduction` says:
    'mean' (the default) averages over the batch, 'sum' adds, 'none' keeps one loss per example.
    logits (N, classes), target (N,) ints in [0, classes) -> a 0-d array ('mean', 'sum') or (N,) ('none'),
    in the logits' dtype."""
    logits = input  # torch.nn.functional's name for the first argument
    op = "cross_entropy"
    check_float(logits, "input", op)
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if logits.ndim != 2:
        raise ValueError(f"{op}: input (logits) must be 2-D (N, classes), got shape {logits.shape}")
    target = np.asarray(target)
    if target.dtype.kind not in "iu":
        raise ValueError(f"{op}: target must hold integer class indices, got dtype {target.dtype}")
    if target.shape != logits.shape[:1]:
        raise ValueError(f"{op}: target must have shape ({logits.shape[0]},) for input {logits.shape}, "
                         f"got {target.shape}")
    N, classes = logits.shape
    if N == 0:
        raise ValueError(f"{op}: the batch is empty (input shape {logits.shape})")
    if target.min() < 0 or target.max() >= classes:
        raise ValueError(f"{op}: target values must lie in [0, {classes}), got min {target.min()}, "
                         f"max {target.max()}")
    shifted = logits - logits.max(axis=1, keepdims=True)         # (N, classes), max 0: exp cannot overflow
    logsumexp = np.log(np.exp(shifted).sum(axis=1))              # (N,)
    logprobs = shifted - logsumexp[:, None]                      # (N, classes)
    losses = -logprobs[np.arange(N), target]                     # (N,)
    loss = losses.mean() if reduction == "mean" else losses.sum() if reduction == "sum" else losses  # () or (N,)
    return np.asarray(loss, dtype=logits.dtype), (logprobs, target, reduction)


def cross_entropy_backward(dloss, cache: tuple) -> np.ndarray:
    """dlogits[n] = (softmax(logits[n]) - onehot(target[n])) * w[n], where w[n] = dloss / N ('mean'),
    dloss ('sum') or dloss[n] ('none': dloss has the loss's shape (N,))."""
    logprobs, target, reduction = cache
    N = logprobs.shape[0]
    dloss = np.asarray(dloss, dtype=logprobs.dtype)              # () or (N,)
    want = (N,) if reduction == "none" else ()
    if dloss.shape != want:
        raise ValueError(f"cross_entropy_backward: dloss must have the loss's shape {want} (reduction="
                         f"{reduction!r}), got {dloss.shape}")
    dlogits = np.exp(logprobs)                                   # (N, classes), softmax
    dlogits[np.arange(N), target] -= 1
    if reduction == "none":
        return dlogits * dloss[:, None]                          # (N, classes)
    return dlogits * (dloss / N if reduction == "mean" else dloss)  # (N, classes)
