"""conv2d, max_pool2d and local_response_norm as plain loops that read like their formulas: the algorithmic
reference.

    N batch, C channels in, F filters out, G groups, H/W height/width, K kernel (KH x KW), OH/OW output size

Same signatures, checks, caches' meaning and results as the vectorised ops in numpy_ref.functional (the tests
hold them equal); only the speed differs (seconds for a few pixels, so: small shapes only).
"""
from __future__ import annotations

import numpy as np

from numpy_ref.geometry import check_dout, check_lrn_args, conv2d_geometry, max_pool2d_geometry

__all__ = ["conv2d_forward", "conv2d_backward", "max_pool2d_forward", "max_pool2d_backward",
           "local_response_norm_forward", "local_response_norm_backward"]


def conv2d_forward(input: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, stride=1,
                   padding=0, dilation=1, groups: int = 1) -> tuple[np.ndarray, tuple]:
    """out[n, f, oh, ow] = bias[f]
                          + sum_{c, kh, kw} x_pad[n, grp*Cg + c, oh*sh + kh*dh, ow*sw + kw*dw] * weight[f, c, kh, kw]
    where grp = f // Fg is the filter's group (`g` below is the geometry: every size at once)."""
    x = input  # torch.nn.functional's name for the first argument
    g = conv2d_geometry(x, weight, bias, stride, padding, dilation, groups)
    x4 = x[None] if g.unbatched else x                                   # (N, C, H, W)
    xp = np.pad(x4, ((0, 0), (0, 0), g.pad_h, g.pad_w))                  # (N, C, Hp, Wp), zeros around
    (sh, sw), (dh, dw) = g.stride, g.dilation
    out = np.zeros((g.N, g.F, g.OH, g.OW), dtype=x.dtype)                # (N, F, OH, OW)
    for n in range(g.N):
        for f in range(g.F):
            c0 = (f // g.Fg) * g.Cg                                      # first channel of the filter's group
            for oh in range(g.OH):
                for ow in range(g.OW):
                    acc = bias[f] if bias is not None else x.dtype.type(0)
                    for c in range(g.Cg):
                        for kh in range(g.KH):
                            for kw in range(g.KW):
                                acc += xp[n, c0 + c, oh * sh + kh * dh, ow * sw + kw * dw] * weight[f, c, kh, kw]
                    out[n, f, oh, ow] = acc
    cache = (xp, weight, bias is not None, g)
    return (out[0] if g.unbatched else out), cache


def conv2d_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The forward's loop run again, each multiply-add sending dout back to both of its factors:
        dx_pad[n, grp*Cg + c, oh*sh + kh*dh, ow*sw + kw*dw] += dout[n, f, oh, ow] * weight[f, c, kh, kw]
        dweight[f, c, kh, kw] += dout[n, f, oh, ow] * x_pad[n, grp*Cg + c, oh*sh + kh*dh, ow*sw + kw*dw]
        dbias[f] += dout[n, f, oh, ow]"""
    xp, weight, has_bias, g = cache
    check_dout(dout, (g.F, g.OH, g.OW) if g.unbatched else (g.N, g.F, g.OH, g.OW), xp.dtype, "conv2d")
    d4 = dout[None] if g.unbatched else dout                             # (N, F, OH, OW)
    (sh, sw), (dh, dw) = g.stride, g.dilation
    dxp = np.zeros_like(xp)                                              # (N, C, Hp, Wp)
    dweight = np.zeros_like(weight)                                      # (F, Cg, KH, KW)
    dbias = np.zeros(g.F, dtype=xp.dtype)                                # (F,)
    for n in range(g.N):
        for f in range(g.F):
            c0 = (f // g.Fg) * g.Cg
            for oh in range(g.OH):
                for ow in range(g.OW):
                    d = d4[n, f, oh, ow]
                    dbias[f] += d
                    for c in range(g.Cg):
                        for kh in range(g.KH):
                            for kw in range(g.KW):
                                h, w = oh * sh + kh * dh, ow * sw + kw * dw
                                dxp[n, c0 + c, h, w] += d * weight[f, c, kh, kw]
                                dweight[f, c, kh, kw] += d * xp[n, c0 + c, h, w]
    dx = dxp[:, :, g.pad_h[0]:g.pad_h[0] + g.H, g.pad_w[0]:g.pad_w[0] + g.W]  # (N, C, H, W), padding dropped
    dx = np.ascontiguousarray(dx[0] if g.unbatched else dx)             # like x
    return dx, dweight, (dbias if has_bias else None)


def max_pool2d_forward(input: np.ndarray, kernel_size, stride=None, padding=0, dilation=1,
                       ceil_mode: bool = False, return_indices: bool = False):
    """out[n, c, oh, ow] = max over the window's pixels that lie inside the input (padding counts as -inf).
    The index kept, h*W + w, is torch's: the first maximum in scan order (kh, then kw), the last NaN if any,
    and the window's first tap inside the input when nothing beats -inf."""
    x = input  # torch.nn.functional's name for the first argument
    g = max_pool2d_geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
    x4 = x[None] if g.unbatched else x                                   # (N, C, H, W)
    (sh, sw), (ph, pw), (dh, dw) = g.stride, g.padding, g.dilation
    out = np.empty((g.N, g.C, g.OH, g.OW), dtype=x.dtype)                # (N, C, OH, OW)
    indices = np.empty((g.N, g.C, g.OH, g.OW), dtype=np.int64)           # (N, C, OH, OW)
    for n in range(g.N):
        for c in range(g.C):
            for oh in range(g.OH):
                for ow in range(g.OW):
                    h0, w0 = oh * sh - ph, ow * sw - pw                  # the window's top-left tap
                    while h0 < 0:                                        # step out of the top/left padding
                        h0 += dh
                    while w0 < 0:
                        w0 += dw
                    best, best_index = -np.inf, h0 * g.W + w0
                    for h in range(h0, min(oh * sh - ph + (g.KH - 1) * dh + 1, g.H), dh):
                        for w in range(w0, min(ow * sw - pw + (g.KW - 1) * dw + 1, g.W), dw):
                            v = x4[n, c, h, w]
                            if v > best or np.isnan(v):
                                best, best_index = v, h * g.W + w
                    out[n, c, oh, ow], indices[n, c, oh, ow] = best, best_index
    cache = (indices, g, x.dtype)
    if g.unbatched:
        out, indices = out[0], indices[0]
    return ((out, indices) if return_indices else out), cache


def max_pool2d_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """dx[n, c].flat[indices[n, c, oh, ow]] += dout[n, c, oh, ow], one output at a time."""
    indices, g, dtype = cache
    check_dout(dout, (g.C, g.OH, g.OW) if g.unbatched else (g.N, g.C, g.OH, g.OW), dtype, "max_pool2d")
    d4 = dout[None] if g.unbatched else dout                             # (N, C, OH, OW)
    i4 = indices.reshape(g.N, g.C, g.OH, g.OW)                           # (N, C, OH, OW)
    dx = np.zeros((g.N, g.C, g.H * g.W), dtype=dtype)                    # (N, C, H*W)
    for n in range(g.N):
        for c in range(g.C):
            for oh in range(g.OH):
                for ow in range(g.OW):
                    if 0 <= i4[n, c, oh, ow] < g.H * g.W:  # else the window had no tap inside the input
                        dx[n, c, i4[n, c, oh, ow]] += d4[n, c, oh, ow]
    dx = dx.reshape(g.N, g.C, g.H, g.W)                                  # (N, C, H, W)
    return dx[0] if g.unbatched else dx


def local_response_norm_forward(input: np.ndarray, size: int, alpha: float = 1e-4, beta: float = 0.75,
                                k: float = 1.0) -> tuple[np.ndarray, tuple]:
    """out[n, c, p] = x[n, c, p] / (k + alpha/size * sum_{j = c - size//2}^{c + (size-1)//2} x[n, j, p]**2)**beta
    for every position p of the trailing axes; channels outside 0..C-1 are skipped (they count as zeros)."""
    x = input  # torch.nn.functional's name for the first argument
    check_lrn_args(x, size, alpha, beta, k)
    alpha, beta, k = float(alpha), float(beta), float(k)  # Python floats: the result keeps x's dtype
    x3 = x.reshape(x.shape[0], x.shape[1], -1)                           # (N, C, P), P = prod of the rest
    N, C, P = x3.shape
    out = np.empty_like(x3)                                              # (N, C, P)
    d = np.empty_like(x3)                                                # (N, C, P), the normalizer
    for n in range(N):
        for c in range(C):
            for p in range(P):
                acc = x.dtype.type(0)
                for j in range(c - size // 2, c + (size - 1) // 2 + 1):
                    if 0 <= j < C:
                        acc += x3[n, j, p] * x3[n, j, p]
                d[n, c, p] = k + alpha / size * acc
                out[n, c, p] = x3[n, c, p] / d[n, c, p] ** beta
    return out.reshape(x.shape), (x3, d, size, alpha, beta, x.shape)


def local_response_norm_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """The forward's loop run again, each output sending dout back to everything it read:
        dx[n, c, p] += dout[n, c, p] / d[n, c, p]**beta                                 (the numerator)
        dx[n, j, p] += dout[n, c, p] * x[n, c, p] * (-beta) * d[n, c, p]**(-beta-1) * alpha/size * 2*x[n, j, p]
                                                                  for every j in c's window (the denominator)"""
    x3, d, size, alpha, beta, shape = cache
    check_dout(dout, shape, x3.dtype, "local_response_norm")
    d3 = dout.reshape(x3.shape)                                          # (N, C, P)
    N, C, P = x3.shape
    dx = np.zeros_like(x3)                                               # (N, C, P)
    for n in range(N):
        for c in range(C):
            for p in range(P):
                g = d3[n, c, p]
                dx[n, c, p] += g / d[n, c, p] ** beta
                dd = g * x3[n, c, p] * -beta * d[n, c, p] ** (-beta - 1)   # dL/dd[n, c, p]
                for j in range(c - size // 2, c + (size - 1) // 2 + 1):
                    if 0 <= j < C:
                        dx[n, j, p] += dd * alpha / size * 2 * x3[n, j, p]
    return dx.reshape(shape)
