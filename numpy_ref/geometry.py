"""Argument checks and output sizes for numpy_ref's ops: what every forward does before its first multiply.

    N batch, C channels in, F filters out, G groups, H/W height/width, K kernel (KH x KW), OH/OW output size

The two output-size formulas, one each (torch's; tests/test_numpy_ops.py holds them equal to torch's shapes):

    conv_output_size:  OH = (H + pad_top + pad_bottom - dilation*(KH-1) - 1) // stride + 1
    pool_output_size:  OH = floor_or_ceil((H + 2*pad - dilation*(KH-1) - 1) / stride) + 1, and with ceil_mode
                       a last window that would start in the right padding is dropped

conv2d_geometry / max_pool2d_geometry check an op's arguments as torch does (a ValueError naming the argument
and the shapes it got) and return every size the forward and backward need, in a frozen dataclass. The fast
ops (numpy_ref.functional) and the plain loops (numpy_ref.naive) both start with them, so the two can only
differ in how they compute, never in what they accept.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "conv_output_size", "pool_output_size",
    "ConvGeometry", "conv2d_geometry", "PoolGeometry", "max_pool2d_geometry",
    "int_pair", "check_float", "check_same_dtype", "check_dout", "check_lrn_args",
]


# ----------------------------------------------------------------------------------------------------------
# output sizes

def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int | tuple[int, int] = 0,
                     dilation: int = 1) -> int:
    """OH = (H + pad_before + pad_after - dilation*(KH-1) - 1) // stride + 1, for one axis.

    padding: the padding on each side (torch's int), or (before, after) for an uneven split such as
    padding='same' with an even kernel."""
    pad_total = 2 * padding if isinstance(padding, (int, np.integer)) else sum(padding)
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def pool_output_size(size: int, kernel: int, stride: int, padding: int = 0, dilation: int = 1,
                     ceil_mode: bool = False) -> int:
    """OH = floor_or_ceil((H + 2*pad - dil*(KH-1) - 1) / stride) + 1, for one axis; with ceil_mode the last
    window must start inside the input or the left padding: if (OH-1)*stride >= H + pad, OH -= 1 (torch's
    pooling_output_shape)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


# ----------------------------------------------------------------------------------------------------------
# conv2d

@dataclass(frozen=True)
class ConvGeometry:
    """Everything conv2d's forward and backward need to know about the shapes, checked once."""

    N: int
    C: int
    H: int
    W: int
    F: int
    KH: int
    KW: int
    G: int
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad_h: tuple[int, int]  # (top, bottom)
    pad_w: tuple[int, int]  # (left, right)
    OH: int
    OW: int
    unbatched: bool

    @property
    def Cg(self) -> int:  # input channels per group
        return self.C // self.G

    @property
    def Fg(self) -> int:  # filters per group
        return self.F // self.G


def conv2d_geometry(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride, padding, dilation,
                    groups) -> ConvGeometry:
    """Check conv2d's arguments as torch does (ValueError naming the argument and the shapes) and work out
    the output size. padding: int, pair, 'valid' (no padding) or 'same' (stride 1 only; an odd total
    padding puts the extra row/column at the bottom/right, as torch does)."""
    op = "conv2d"
    check_same_dtype(op, input=x, weight=weight, bias=bias)
    if x.ndim not in (3, 4):
        raise ValueError(f"{op}: input must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape {x.shape}")
    if weight.ndim != 4:
        raise ValueError(f"{op}: weight must be 4-D (F, C/groups, KH, KW), got shape {weight.shape}")
    if not _is_int(groups) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    unbatched = x.ndim == 3
    N, C, H, W = (1, *x.shape) if unbatched else x.shape
    F, Cg, KH, KW = weight.shape
    if F % groups:
        raise ValueError(f"{op}: groups={groups} must divide the filters: weight has shape {weight.shape}")
    if Cg * groups != C:
        raise ValueError(f"{op}: input has {C} channels (shape {x.shape}) but weight {weight.shape} with "
                         f"groups={groups} expects {Cg * groups}")
    if bias is not None and bias.shape != (F,):
        raise ValueError(f"{op}: bias must have shape ({F},) for weight {weight.shape}, got {bias.shape}")
    sh, sw = int_pair(stride, "stride", op)
    dh, dw = int_pair(dilation, "dilation", op)
    if sh < 1 or sw < 1:
        raise ValueError(f"{op}: stride must be positive, got {stride!r}")
    if dh < 1 or dw < 1:
        raise ValueError(f"{op}: dilation must be positive, got {dilation!r}")
    if isinstance(padding, str):
        if padding == "valid":
            pad_h, pad_w = (0, 0), (0, 0)
        elif padding == "same":
            if (sh, sw) != (1, 1):
                raise ValueError(f"{op}: padding='same' needs stride 1, got stride={stride!r}")
            th, tw = dh * (KH - 1), dw * (KW - 1)
            pad_h, pad_w = (th // 2, th - th // 2), (tw // 2, tw - tw // 2)
        else:
            raise ValueError(f"{op}: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    else:
        ph, pw = int_pair(padding, "padding", op)
        if ph < 0 or pw < 0:
            raise ValueError(f"{op}: padding must be non-negative, got {padding!r}")
        pad_h, pad_w = (ph, ph), (pw, pw)
    Hp, Wp = H + sum(pad_h), W + sum(pad_w)
    if dh * (KH - 1) + 1 > Hp or dw * (KW - 1) + 1 > Wp:
        raise ValueError(f"{op}: kernel {KH}x{KW} (dilation {dh}x{dw}) is larger than the padded input "
                         f"{Hp}x{Wp} (input shape {x.shape}, padding {padding!r})")
    OH = conv_output_size(H, KH, sh, pad_h, dh)
    OW = conv_output_size(W, KW, sw, pad_w, dw)
    return ConvGeometry(N, C, H, W, F, KH, KW, int(groups), (sh, sw), (dh, dw), pad_h, pad_w, OH, OW, unbatched)


# ----------------------------------------------------------------------------------------------------------
# max_pool2d

@dataclass(frozen=True)
class PoolGeometry:
    """Everything max_pool2d's forward and backward need to know about the shapes, checked once."""

    N: int
    C: int
    H: int
    W: int
    KH: int
    KW: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    OH: int
    OW: int
    unbatched: bool


def max_pool2d_geometry(x: np.ndarray, kernel_size, stride, padding, dilation, ceil_mode) -> PoolGeometry:
    """Check max_pool2d's arguments as torch does and work out the output size (stride None or (): the
    kernel size, torch's default)."""
    op = "max_pool2d"
    check_float(x, "input", op)
    if x.ndim not in (3, 4):
        raise ValueError(f"{op}: input must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape {x.shape}")
    KH, KW = int_pair(kernel_size, "kernel_size", op)
    sh, sw = int_pair(kernel_size if stride is None or stride == () else stride, "stride", op)
    ph, pw = int_pair(padding, "padding", op)
    dh, dw = int_pair(dilation, "dilation", op)
    if KH < 1 or KW < 1:
        raise ValueError(f"{op}: kernel_size must be positive, got {kernel_size!r}")
    if sh < 1 or sw < 1:
        raise ValueError(f"{op}: stride must be positive, got {stride!r}")
    if dh < 1 or dw < 1:
        raise ValueError(f"{op}: dilation must be positive, got {dilation!r}")
    if ph < 0 or pw < 0:
        raise ValueError(f"{op}: padding must be non-negative, got {padding!r}")
    if ph > KH // 2 or pw > KW // 2:
        raise ValueError(f"{op}: padding {padding!r} must be at most half the kernel_size {kernel_size!r}")
    unbatched = x.ndim == 3
    N, C, H, W = (1, *x.shape) if unbatched else x.shape
    OH = pool_output_size(H, KH, sh, ph, dh, bool(ceil_mode))
    OW = pool_output_size(W, KW, sw, pw, dw, bool(ceil_mode))
    if OH < 1 or OW < 1:
        raise ValueError(f"{op}: input shape {x.shape} is too small for kernel_size {kernel_size!r}, "
                         f"padding {padding!r}, dilation {dilation!r}: output would be {OH}x{OW}")
    return PoolGeometry(N, C, H, W, KH, KW, (sh, sw), (ph, pw), (dh, dw), OH, OW, unbatched)


# ----------------------------------------------------------------------------------------------------------
# small checks every op uses

def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def int_pair(value, name: str, op: str) -> tuple[int, int]:
    """An int or a pair of ints (torch's `_pair`), as a tuple of two Python ints; anything else (a float,
    None, a string, three ints) is a ValueError naming `name`."""
    if isinstance(value, (int, np.integer)):
        pair = (value, value)
    elif isinstance(value, (tuple, list)):
        pair = tuple(value)
    else:
        pair = ()
    if len(pair) != 2 or not all(_is_int(v) for v in pair):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def check_float(a: np.ndarray, name: str, op: str) -> None:
    """a is a float32 or float64 numpy array (ValueError naming `name` otherwise)."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{op}: {name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in (np.float32, np.float64):
        raise ValueError(f"{op}: {name} must be float32 or float64, got {a.dtype} with shape {a.shape}")


def check_same_dtype(op: str, **arrays: np.ndarray | None) -> None:
    """Every array given (None: absent, e.g. no bias) is float32 or float64, all of one dtype."""
    given = {name: a for name, a in arrays.items() if a is not None}
    for name, a in given.items():
        check_float(a, name, op)
    dtypes = {a.dtype for a in given.values()}
    if len(dtypes) > 1:
        listing = ", ".join(f"{name} {a.dtype}{a.shape}" for name, a in given.items())
        raise ValueError(f"{op}: arrays must share one dtype, got {listing}")


def check_dout(dout: np.ndarray, shape: tuple, dtype, op: str) -> None:
    """A backward's upstream gradient has the forward output's shape and the forward input's dtype."""
    if not isinstance(dout, np.ndarray) or dout.shape != tuple(shape):
        got = getattr(dout, "shape", type(dout).__name__)
        raise ValueError(f"{op}_backward: dout must have the forward output's shape {tuple(shape)}, got {got}")
    if dout.dtype != dtype:
        raise ValueError(f"{op}_backward: dout must be {dtype} like the forward input, got {dout.dtype}")


def check_lrn_args(x: np.ndarray, size, alpha, beta, k, op: str = "local_response_norm") -> None:
    """local_response_norm's input has 3 or more dimensions (N, C, *), size is a positive int, alpha, beta and
    k are real numbers (ValueError naming the one that is not)."""
    check_float(x, "input", op)
    if x.ndim < 3:
        raise ValueError(f"{op}: input must have 3 or more dimensions (N, C, *), got shape {x.shape}")
    if not _is_int(size) or size < 1:
        raise ValueError(f"{op}: size must be a positive int, got {size!r}")
    for name, value in (("alpha", alpha), ("beta", beta), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{op}: {name} must be a real number, got {value!r}")
