"""Finite-difference gradient checks (CS231n's gradient_check.py, grown up) and `alexnet gradcheck`.

For an op out = f(x) and a random upstream gradient dout, the gradient of the scalar L = sum(f(x) * dout) is
exactly what <op>_backward(dout, cache) returns, and it can be estimated without any calculus:

    dL/dx[i] ~ (L(x + h e_i) - L(x - h e_i)) / (2h)        centred differences, float64, error O(h^2)

compared element by element with the relative error |a - b| / max(1e-8, |a| + |b|) (the max over elements is
reported). In float64 with h = 1e-5 a correct backward agrees to ~1e-9 on most elements and ~1e-7 on the worst
(those whose gradient nearly cancels); a wrong one (a missing transpose, a factor of 2, a gradient routed to the
wrong pixel) is off by ~1e-1. Every op here is piecewise linear in its input except cross-entropy and local
response normalization (LRN), whose curvature is mild at these scales, so a larger h costs little truncation error
and buys less round-off.

Kinks: ReLU bends at 0 (max pooling where two window values are within h), and a difference that straddles the
bend measures neither side's slope: an input within h of 0 gives (x + h) / (2h) against the backward's 0 or 1,
a relative error up to 1 with a correct backward. Random normal inputs land that close with probability ~1e-5
per element; a failure on a single element deserves a look at how close it is to a kink.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

import numpy as np

from numpy_ref import functional as Fn
from numpy_ref.layers import Conv2d, Dropout, Flatten, Linear, LocalResponseNorm, MaxPool2d, ReLU, Sequential

__all__ = ["rel_error", "worst_element", "numerical_gradient", "CheckResult", "compare", "check_backward", "check_ops",
           "check_network", "OPS", "configure", "run"]


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """max over elements of |a - b| / max(1e-8, |a| + |b|)."""
    return worst_element(a, b)[3]


def worst_element(a: np.ndarray, b: np.ndarray) -> tuple[tuple[int, ...], float, float, float]:
    """(index, a[index], b[index], relative error) of the element where |a - b| / max(1e-8, |a| + |b|) is largest
    (a NaN on one side only counts as the worst; NaN on both agrees); ((), 0, 0, 0.0) for empty arrays."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)  # same shape, checked below
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {b.shape}")
    if a.size == 0:
        return (), 0.0, 0.0, 0.0
    with np.errstate(invalid="ignore"):
        err = np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))  # like a
    err = np.where(np.isnan(err), np.inf, err)                   # a NaN on one side is the worst there is
    err = np.where(np.isnan(a) & np.isnan(b), 0.0, err)          # ... and NaN on both sides agrees
    flat = int(np.argmax(err))
    index = tuple(int(i) for i in np.unravel_index(flat, a.shape))
    return index, float(a[index]), float(b[index]), float(err[index])


def _output_of(result, where: str) -> np.ndarray:
    """An op's output from what f returned: an array (or a number), or the `out` of an (out, cache) pair as every
    <op>_forward returns it. Anything else is a ValueError saying what f returned."""
    if isinstance(result, tuple):
        if len(result) == 2 and isinstance(result[0], (np.ndarray, float, int, np.floating)):
            return np.asarray(result[0])                          # (out, cache): the forward's own return
        kinds = ", ".join(type(r).__name__ for r in result)
        raise ValueError(f"{where}: f returned a tuple ({kinds}); it must return the op's output array or an "
                         f"(out, cache) pair as <op>_forward does (for max_pool2d with return_indices, wrap it: "
                         f"lambda x: max_pool2d_forward(x, ...)[0][0])")
    out = np.asarray(result)
    if out.dtype.kind not in "fiu":
        raise ValueError(f"{where}: f returned {type(result).__name__} (dtype {out.dtype}); it must return the "
                         f"op's output array or an (out, cache) pair")
    return out


def numerical_gradient(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, dout: np.ndarray | float = 1.0,
                       h: float = 1e-5) -> np.ndarray:
    """Centred differences of sum(f(x) * dout) with respect to x, one element at a time.

    f(x) returns the op's output, or an (out, cache) pair as every <op>_forward does (its out is used); dout is
    a number or an array of out's shape. x is perturbed IN PLACE (and restored), so f may also read x through a
    closure; f must be deterministic (for dropout: a fresh generator with the same seed on every call).
    x float64. Costs 2 * x.size calls."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        raise ValueError(f"numerical_gradient: x must be a float64 array, got {getattr(x, 'dtype', type(x))}")
    if not x.flags.c_contiguous:
        raise ValueError("numerical_gradient: x must be C-contiguous (it is perturbed in place through a view)")
    out = _output_of(f(x), "numerical_gradient")
    if np.ndim(dout) and np.shape(dout) != out.shape:
        raise ValueError(f"numerical_gradient: dout has shape {np.shape(dout)}, f's output {out.shape}")
    grad = np.zeros_like(x)                                      # like x
    flat, gflat = x.reshape(-1), grad.reshape(-1)                # views
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        plus = np.sum(_output_of(f(x), "numerical_gradient") * dout)
        flat[i] = old - h
        minus = np.sum(_output_of(f(x), "numerical_gradient") * dout)
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * h)
    return grad


@dataclass
class CheckResult:
    op: str
    argument: str
    error: float
    index: tuple[int, ...] = ()    # the worst element: where, the backward's value, the finite difference's
    analytic: float = 0.0
    numeric: float = 0.0

    def passed(self, tol: float) -> bool:
        return bool(np.isfinite(self.error) and self.error <= tol)

    def worst(self) -> str:
        return (f"worst at {self.index}: analytic {self.analytic:.6g}, numeric {self.numeric:.6g}, "
                f"relative error {self.error:.2e}")


def compare(op: str, argument: str, analytic: np.ndarray, numeric: np.ndarray) -> CheckResult:
    """A CheckResult holding the worst element of analytic against numeric (shapes must match)."""
    if np.shape(analytic) != np.shape(numeric):
        raise ValueError(f"{op}: the backward's d{argument} has shape {np.shape(analytic)}, "
                         f"{argument} has {np.shape(numeric)}")
    index, a, b, err = worst_element(analytic, numeric)
    return CheckResult(op, argument, err, index, a, b)


def check_backward(op: str, forward: Callable, backward: Callable, inputs: dict[str, np.ndarray],
                   rng: np.random.Generator, h: float = 1e-5) -> list[CheckResult]:
    """forward(**inputs) -> (out, cache); backward(dout, cache) -> gradients in the order of `inputs` (a single
    array for one input). One CheckResult per input, against centred differences with a random dout."""
    out, cache = forward(**inputs)
    dout = rng.standard_normal(np.shape(out))                    # like out, random: never zeros
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    if len(grads) < len(inputs):
        raise ValueError(f"{op}: the backward returned {len(grads)} gradient(s) for {len(inputs)} inputs")
    results = []
    for (name, value), analytic in zip(inputs.items(), grads):
        if analytic is None:
            raise ValueError(f"{op}: the backward returned None for d{name}")
        numeric = numerical_gradient(lambda _: forward(**inputs)[0], value, dout, h)
        results.append(compare(op, name, analytic, numeric))
    return results


_check = check_backward


def _conv2d(r, rng, h):
    # stride 2, padding 1, two groups, odd sizes; then dilation 2 with padding='same'
    return (_check("conv2d(s=2, p=1, groups=2)",
                   lambda input, weight, bias: Fn.conv2d_forward(input, weight, bias, 2, 1, 1, 2),
                   Fn.conv2d_backward, {"input": r(2, 4, 7, 6), "weight": r(6, 2, 3, 3), "bias": r(6)}, rng, h)
            + _check("conv2d(dil=2, p='same')",
                     lambda input, weight, bias: Fn.conv2d_forward(input, weight, bias, 1, "same", 2),
                     Fn.conv2d_backward, {"input": r(1, 3, 7, 5), "weight": r(5, 3, 2, 3), "bias": r(5)}, rng, h))


def _max_pool2d(r, rng, h):
    return _check("max_pool2d(k=3, s=2, p=1, ceil)", lambda input: Fn.max_pool2d_forward(input, 3, 2, 1, 1, True),
                  Fn.max_pool2d_backward, {"input": r(2, 3, 8, 7)}, rng, h)


def _local_response_norm(r, rng, h):
    # an odd window on 4-D input, an even (asymmetric) one wider than the channels on 3-D; alpha large enough
    # that the normalizer's gradient matters
    return (_check("local_response_norm(size=3)",
                   lambda input: Fn.local_response_norm_forward(input, 3, 0.5, 0.75, 1.0),
                   Fn.local_response_norm_backward, {"input": r(2, 5, 3, 4)}, rng, h)
            + _check("local_response_norm(size=4, 3-D)",
                     lambda input: Fn.local_response_norm_forward(input, 4, 0.8, 0.6, 2.0),
                     Fn.local_response_norm_backward, {"input": r(2, 3, 5)}, rng, h))


def _relu(r, rng, h):
    return _check("relu", Fn.relu_forward, Fn.relu_backward, {"input": r(3, 5, 4)}, rng, h)


def _linear(r, rng, h):
    return _check("linear", lambda input, weight, bias: Fn.linear_forward(input, weight, bias),
                  Fn.linear_backward, {"input": r(2, 3, 7), "weight": r(5, 7), "bias": r(5)}, rng, h)


def _dropout(r, rng, h):
    drop_seed = int(rng.integers(2**31))
    return _check("dropout(p=0.3)",
                  lambda input: Fn.dropout_forward(input, 0.3, True, np.random.default_rng(drop_seed)),
                  Fn.dropout_backward, {"input": r(4, 9)}, rng, h)


def _flatten(r, rng, h):
    return _check("flatten", Fn.flatten_forward, Fn.flatten_backward, {"input": r(2, 3, 2, 5)}, rng, h)


def _cross_entropy(r, rng, h):
    target = rng.integers(0, 7, size=5)
    results = []
    for reduction in ("mean", "sum", "none"):
        results += _check(f"cross_entropy(reduction={reduction!r})",
                          lambda input, red=reduction: Fn.cross_entropy_forward(input, target, red),
                          Fn.cross_entropy_backward, {"input": r(5, 7)}, rng, h)
    return results


# op name (`alexnet gradcheck --op NAME`) -> its cases; "network" is check_network
OP_CHECKS = {"conv2d": _conv2d, "max_pool2d": _max_pool2d, "local_response_norm": _local_response_norm,
             "relu": _relu, "linear": _linear, "dropout": _dropout, "flatten": _flatten,
             "cross_entropy": _cross_entropy}
OPS = (*OP_CHECKS, "network")


def check_ops(seed: int = 0, h: float = 1e-5, ops=None) -> list[CheckResult]:
    """Each op's backward (all of OP_CHECKS, or those named in `ops`) against finite differences on small random
    float64 inputs with odd sizes. Every op draws from its own generator (seed, op): its inputs are the same
    whether it runs alone or with the others."""
    results: list[CheckResult] = []
    for i, (name, cases) in enumerate(OP_CHECKS.items()):
        if ops is not None and name not in ops:
            continue
        rng = np.random.default_rng([seed, i])
        results += cases(lambda *shape, rng=rng: rng.standard_normal(shape), rng, h)  # float64 inputs
    return results


def small_net(rng: np.random.Generator) -> Sequential:
    """AlexNet's layer kinds in miniature (float64): every parameter of it is checked."""
    kw = dict(dtype=np.float64, rng=rng)
    return Sequential(
        Conv2d(2, 4, kernel_size=3, stride=2, padding=1, **kw), ReLU(),   # (N, 4, 5, 5)
        LocalResponseNorm(3, alpha=0.5, beta=0.75, k=1.0),                # (N, 4, 5, 5)
        MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),               # (N, 4, 2, 2)
        Conv2d(4, 6, kernel_size=3, padding=1, groups=2, **kw), ReLU(),   # (N, 6, 2, 2)
        Flatten(),                                                        # (N, 24)
        Linear(24, 8, **kw), ReLU(), Dropout(p=0.5, rng=rng),             # (N, 8)
        Linear(8, 3, **kw),                                               # (N, 3)
    )


def check_network(seed: int = 0, h: float = 1e-5) -> list[CheckResult]:
    """Every parameter of small_net: the loss is cross-entropy of its logits on a random 9x9 batch; dropout
    is in training mode with the same mask on every call (the generator is re-seeded)."""
    rng = np.random.default_rng(seed)
    net = small_net(rng)
    x = rng.standard_normal((3, 2, 9, 9))                        # (N, C, H, W)
    target = rng.integers(0, 3, size=3)                          # (N,)
    drop_seed = int(rng.integers(2**31))

    dropouts = [layer for layer in net if isinstance(layer, Dropout)]

    def loss() -> tuple[float, tuple]:
        for layer in dropouts:
            layer.rng = np.random.default_rng(drop_seed)         # the same mask on every call
        value, cache = Fn.cross_entropy_forward(net.forward(x), target)
        return float(value), cache

    net.zero_grad()
    _, cache = loss()
    net.backward(Fn.cross_entropy_backward(1.0, cache))
    results = []
    for name, p in net.named_parameters():
        numeric = numerical_gradient(lambda _: loss()[0], p.data, 1.0, h)
        results.append(compare("small net", name, p.grad, numeric))
    return results


def format_table(results: list[CheckResult], tol: float) -> str:
    """One row per check; under every failed one, its worst element (index, analytic, numeric, relative error)."""
    rows = [("op", "argument", "max rel error", "result")]
    rows += [(r.op, r.argument, f"{r.error:.2e}", "pass" if r.passed(tol) else "FAIL") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows[:1]]
    lines.append("  ".join("-" * w for w in widths))
    for row, r in zip(rows[1:], results):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if not r.passed(tol):
            lines.append(f"    {r.worst()}")
    return "\n".join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--op", action="append", choices=OPS, metavar="NAME",
                        help=f"check only this op (repeatable): {', '.join(OPS)} (network: every parameter of a "
                             f"small AlexNet-like net); default: all")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    parser.add_argument("--tol", type=float, default=1e-5,
                        help="largest max relative error that passes (default 1e-5)")
    parser.add_argument("--h", type=float, default=1e-5, help="finite-difference step (default 1e-5)")


def run(args: argparse.Namespace) -> int:
    if not args.tol > 0 or not args.h > 0:
        raise ValueError(f"--tol and --h must be positive, got --tol {args.tol} --h {args.h}")
    ops = getattr(args, "op", None)
    results = check_ops(args.seed, args.h, ops)
    if ops is None or "network" in ops:
        results += check_network(args.seed, args.h)
    print(format_table(results, args.tol))
    failed = [r for r in results if not r.passed(args.tol)]
    print(f"\n{len(results) - len(failed)}/{len(results)} checks pass (float64, centred differences, "
          f"h={args.h:g}, tol={args.tol:g}, seed={args.seed})")
    return 1 if failed else 0


if __name__ == "__main__":
    import sys

    p = argparse.ArgumentParser(prog="python -m numpy_ref.gradcheck")
    configure(p)
    sys.exit(run(p.parse_args()))
