"""Exercises, CS231n-style: write one of the project's ops yourself, then check it.

    python -m numpy_ref.exercises list                          # the exercises, what each asks, where its answer is
    python -m numpy_ref.exercises start conv2d_backward         # writes ./exercises/conv2d_backward.py
    python -m numpy_ref.exercises check conv2d_backward         # gradient check + numpy_ref + torch on your code
    python -m numpy_ref.exercises start im2col --dir ~/my_work  # any folder (the default: ./exercises)

`start` copies an op's signature and docstring out of the project's source (found with inspect and ast, so an
exercise is always the current code), keeps the lines that unpack its arguments, lists the arrays the answer makes
with their shape comments, and puts a placeholder where the body was: it returns arrays of the right shapes with the
wrong values, so `check` runs from the start and shows what is missing. Write the body, then `check` runs:

    a gradient check   your backward against centred finite differences of the forward (numpy_ref.gradcheck)
    numpy_ref          your result against the project's own function on the same inputs (the answer)
    torch              your result against torch's op in float64 (imported by `check` only)

and prints one line per comparison; a failed one names its worst element: index, expected, got, relative error.
Exit status 0 when every comparison passes, 1 otherwise, 2 for a usage error (an unknown name, no workspace yet).
The answer is the project's own code (`list` says where); `start` never overwrites your file without --force.
Triton exercises (the primer's masked load, step 3's tap walk): `python -m triton_kernels.lessons.exercises`.
"""
from __future__ import annotations

import argparse
import ast
import builtins
import importlib
import importlib.util
import inspect
import io
import sys
import textwrap
import tokenize
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

PROG = "python -m numpy_ref.exercises"
DEFAULT_DIR = "exercises"  # under the current directory; never inside the installed package
PLACEHOLDER = "# placeholder (right shapes, wrong values): replace it with your code"
TOL_GRAD = 1e-5   # your backward vs finite differences: what `alexnet gradcheck` accepts
TOL_EXACT = 1e-7  # vs numpy_ref and torch in float64: only the order of the sums may differ


@dataclass(frozen=True)
class Exercise:
    """One op to write. target: "module:function" or "module:Class.method" (the project's answer); stub: the
    placeholder body's lines (they return the right shapes, never the answer); check(fn, report): runs fn, the
    learner's function, against the references, one report line per comparison."""
    name: str
    target: str
    what: str
    stub: str
    check: Callable[[Callable, "Report"], None]


# ----------------------------------------------------------------------------------------------------------
# the report: one line per comparison, the worst element on failure

class Report:
    def __init__(self, out=None):
        self.out = out or sys.stdout
        self.failures: list[str] = []
        self.count = 0

    def line(self, ok: bool, what: str, detail: str) -> None:
        self.count += 1
        if not ok:
            self.failures.append(what)
        print(f"  {'ok    ' if ok else 'FAILED'}  {what}: {detail}", file=self.out)

    def compare(self, what: str, got, expected, tol: float = TOL_EXACT, atol: float | None = None) -> bool:
        """Element by element, |got - expected| / max(1e-8, |got| + |expected|) <= tol (CS231n's relative error),
        or with atol given |got - expected| <= atol + tol * |expected| (for float32 results, whose relative error
        near 0 means nothing); on failure the worst element: its index, the expected value and yours."""
        from numpy_ref.gradcheck import worst_element

        if got is None:
            self.line(False, what, f"got None, expected an array of shape {np.shape(expected)}")
            return False
        got, expected = np.asarray(got), np.asarray(expected)
        if got.shape != expected.shape:
            self.line(False, what, f"shape {got.shape}, expected {expected.shape}")
            return False
        index, g, e, err = worst_element(got, expected)
        ok = bool(np.isfinite(err) and err <= tol)
        if atol is not None and got.size:
            with np.errstate(invalid="ignore"):
                excess = np.abs(got - expected) - (atol + tol * np.abs(expected))  # like got, <= 0 where close
            excess = np.where(np.isnan(got) & np.isnan(expected), -np.inf, np.nan_to_num(excess, nan=np.inf))
            i = tuple(int(k) for k in np.unravel_index(int(np.argmax(excess)), got.shape))
            ok = bool(excess[i] <= 0)
            if not ok:
                index, g, e = i, float(got[i]), float(expected[i])
                err = worst_element(got[i], expected[i])[3]
        detail = (f"max rel error {err:.1e}" if ok else
                  f"worst at {index}: expected {e:.6g}, got {g:.6g} (relative error {err:.2e})")
        self.line(ok, what, detail)
        return ok

    def gradient(self, what: str, analytic, f: Callable, x: np.ndarray, dout) -> bool:
        """Your gradient against the centred differences of sum(f(x) * dout) (f may return (out, cache))."""
        from numpy_ref.gradcheck import numerical_gradient

        return self.compare(f"gradient check {what}", analytic, numerical_gradient(f, x, dout), TOL_GRAD)


def _torch():
    import torch

    return torch


def _call(fn: Callable, *args, n_out: int | None = None, what: str = "your function"):
    """fn(*args), its result checked to be a tuple of n_out items when n_out is given."""
    result = fn(*args)
    if n_out is not None and (not isinstance(result, tuple) or len(result) != n_out):
        raise ValueError(f"{what} must return a tuple of {n_out} items, got {type(result).__name__}"
                         + (f" of {len(result)}" if isinstance(result, tuple) else ""))
    return result


# ----------------------------------------------------------------------------------------------------------
# the checks, one per exercise (small float64 inputs, odd sizes, random: never zeros)

def _check_conv2d_backward(fn, report: Report) -> None:
    from numpy_ref import functional as Fn

    torch = _torch()
    rng = np.random.default_rng(0)
    for stride, padding, groups, bias in ((2, 1, 2, True), (1, 2, 1, False)):
        x = rng.standard_normal((2, 4, 7, 6))                                                  # (N, C, H, W)
        w = rng.standard_normal((6, 4 // groups, 3, 3))                                        # (F, C/G, KH, KW)
        b = rng.standard_normal(6) if bias else None                                           # (F,)
        fwd = lambda x, w, b: Fn.conv2d_forward(x, w, b, stride, padding, 1, groups)          # noqa: E731
        out, cache = fwd(x, w, b)
        dout = rng.standard_normal(out.shape)                                                  # (N, F, OH, OW)
        dx, dw, db = _call(fn, dout, cache, n_out=3, what="conv2d_backward")
        case = f"(stride {stride}, padding {padding}, groups {groups}, bias {bias})"
        report.gradient(f"dx {case}", dx, lambda v: fwd(v, w, b), x, dout)
        report.gradient(f"dweight {case}", dw, lambda v: fwd(x, v, b), w, dout)
        if bias:
            report.gradient(f"dbias {case}", db, lambda v: fwd(x, w, v), b, dout)
        elif db is not None:
            report.line(False, f"dbias {case}", f"expected None (no bias), got {type(db).__name__}")
        ref = Fn.conv2d_backward(dout, cache)
        for name, got, exp in zip(("dx", "dweight", "dbias"), (dx, dw, db), ref):
            if exp is not None:
                report.compare(f"vs numpy_ref {name} {case}", got, exp)
        tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
        tb = torch.tensor(b, requires_grad=True) if bias else None
        tout = torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=padding, groups=groups)
        leaves = [tx, tw] + ([tb] if bias else [])
        for name, got, t in zip(("dx", "dweight", "dbias"), (dx, dw, db), torch.autograd.grad(tout, leaves,
                                                                                             torch.tensor(dout))):
            report.compare(f"vs torch {name} {case}", got, t.numpy())


def _check_max_pool2d_backward(fn, report: Report) -> None:
    from numpy_ref import functional as Fn

    torch = _torch()
    rng = np.random.default_rng(1)
    for k, s, p, ceil in ((3, 2, 1, True), (2, 2, 0, False)):
        x = rng.standard_normal((2, 3, 8, 7))                                                  # (N, C, H, W)
        fwd = lambda v: Fn.max_pool2d_forward(v, k, s, p, 1, ceil)                            # noqa: E731
        out, cache = fwd(x)
        dout = rng.standard_normal(out.shape)                                                  # (N, C, OH, OW)
        dx = _call(fn, dout, cache)
        case = f"(kernel {k}, stride {s}, padding {p}, ceil_mode {ceil})"
        report.gradient(f"dx {case}", dx, fwd, x, dout)
        report.compare(f"vs numpy_ref dx {case}", dx, Fn.max_pool2d_backward(dout, cache))
        tx = torch.tensor(x, requires_grad=True)
        tout = torch.nn.functional.max_pool2d(tx, k, s, p, ceil_mode=ceil)
        report.compare(f"vs torch dx {case}", dx, torch.autograd.grad(tout, tx, torch.tensor(dout))[0].numpy())


def _check_local_response_norm_backward(fn, report: Report) -> None:
    from numpy_ref import functional as Fn

    torch = _torch()
    rng = np.random.default_rng(2)
    for shape, size, alpha, beta, k in (((2, 5, 3, 4), 3, 0.5, 0.75, 1.0), ((2, 3, 5), 4, 0.8, 0.6, 2.0)):
        x = rng.standard_normal(shape)                                                         # (N, C, *)
        fwd = lambda v: Fn.local_response_norm_forward(v, size, alpha, beta, k)               # noqa: E731
        out, cache = fwd(x)
        dout = rng.standard_normal(out.shape)                                                  # like x
        dx = _call(fn, dout, cache)
        case = f"(size {size}, input {shape})"
        report.gradient(f"dx {case}", dx, fwd, x, dout)
        report.compare(f"vs numpy_ref dx {case}", dx, Fn.local_response_norm_backward(dout, cache))
        tx = torch.tensor(x, requires_grad=True)
        tout = torch.nn.functional.local_response_norm(tx, size, alpha, beta, k)
        report.compare(f"vs torch dx {case}", dx, torch.autograd.grad(tout, tx, torch.tensor(dout))[0].numpy())


def _check_relu_backward(fn, report: Report) -> None:
    from numpy_ref import functional as Fn

    torch = _torch()
    x = np.random.default_rng(3).standard_normal((3, 5, 4))                                    # any shape
    x[0, 0, :2] = 0.0                                                                          # exactly 0: gradient 0
    out, cache = Fn.relu_forward(x)
    dout = np.random.default_rng(4).standard_normal(out.shape)                                 # like x
    dx = _call(fn, dout, cache)
    report.gradient("dx (away from 0)", None if dx is None else np.asarray(dx)[1:], Fn.relu_forward,
                    x[1:].copy(), dout[1:])
    report.compare("vs numpy_ref dx (zeros included)", dx, Fn.relu_backward(dout, cache))
    tx = torch.tensor(x, requires_grad=True)
    report.compare("vs torch dx", dx, torch.autograd.grad(torch.relu(tx), tx, torch.tensor(dout))[0].numpy())


def _check_linear_backward(fn, report: Report) -> None:
    from numpy_ref import functional as Fn

    torch = _torch()
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 7))                                                         # (..., in)
    w, b = rng.standard_normal((5, 7)), rng.standard_normal(5)                                 # (out, in), (out,)
    out, cache = Fn.linear_forward(x, w, b)
    dout = rng.standard_normal(out.shape)                                                      # (2, 3, 5)
    dx, dw, db = _call(fn, dout, cache, n_out=3, what="linear_backward")
    report.gradient("dx", dx, lambda v: Fn.linear_forward(v, w, b), x, dout)
    report.gradient("dweight", dw, lambda v: Fn.linear_forward(x, v, b), w, dout)
    report.gradient("dbias", db, lambda v: Fn.linear_forward(x, w, v), b, dout)
    for name, got, exp in zip(("dx", "dweight", "dbias"), (dx, dw, db), Fn.linear_backward(dout, cache)):
        report.compare(f"vs numpy_ref {name}", got, exp)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    grads = torch.autograd.grad(torch.nn.functional.linear(tx, tw, tb), [tx, tw, tb], torch.tensor(dout))
    for name, got, t in zip(("dx", "dweight", "dbias"), (dx, dw, db), grads):
        report.compare(f"vs torch {name}", got, t.numpy())


def _check_dropout_forward(fn, report: Report) -> None:
    from numpy_ref import functional as Fn

    torch = _torch()
    x = np.random.default_rng(6).standard_normal((40, 50))                                     # (N, D)
    p, seed = 0.3, 7
    out, cache = _call(fn, x, p, True, np.random.default_rng(seed), n_out=2, what="dropout_forward")
    ref_out, ref_cache = Fn.dropout_forward(x, p, True, np.random.default_rng(seed))
    report.compare(f"vs numpy_ref out (p={p}, the same generator)", out, ref_out)
    dout = np.random.default_rng(8).standard_normal(x.shape)
    report.compare("vs numpy_ref: dropout_backward through your cache", Fn.dropout_backward(dout, cache),
                   Fn.dropout_backward(dout, ref_cache))
    report.gradient("dx (dropout_backward with your cache)", Fn.dropout_backward(dout, cache),
                    lambda v: fn(v, p, True, np.random.default_rng(seed)), x, dout)
    for mode, args in (("eval mode", (x, p, False, None)), ("p=0", (x, 0.0, True, None))):
        report.compare(f"{mode} is the identity", _call(fn, *args, n_out=2)[0], x)
    report.compare("p=1 drops everything", _call(fn, x, 1.0, True, np.random.default_rng(seed), n_out=2)[0],
                   np.zeros_like(x))
    # torch's dropout draws another mask, but keeps survivors at the same scale: 1/(1-p) times the input
    ones = np.ones((200, 50))
    kept = np.unique(np.asarray(_call(fn, ones, p, True, np.random.default_rng(seed), n_out=2)[0]))
    torch_kept = np.unique(torch.nn.functional.dropout(torch.ones(200, 50, dtype=torch.float64), p).numpy())
    report.compare("vs torch: the values an input of ones becomes", kept, torch_kept)


def _check_cross_entropy_backward(fn, report: Report) -> None:
    from numpy_ref import functional as Fn

    torch = _torch()
    rng = np.random.default_rng(9)
    logits, target = rng.standard_normal((5, 7)), rng.integers(0, 7, size=5)                  # (N, classes), (N,)
    for reduction in ("mean", "sum", "none"):
        fwd = lambda v: Fn.cross_entropy_forward(v, target, reduction)                        # noqa: E731
        loss, cache = fwd(logits)
        dloss = rng.standard_normal(5) if reduction == "none" else np.float64(1.0)            # like loss
        dlogits = _call(fn, dloss, cache)
        report.gradient(f"dlogits (reduction={reduction!r})", dlogits, fwd, logits, dloss)
        report.compare(f"vs numpy_ref dlogits (reduction={reduction!r})", dlogits,
                       Fn.cross_entropy_backward(dloss, cache))
        tl = torch.tensor(logits, requires_grad=True)
        tloss = torch.nn.functional.cross_entropy(tl, torch.tensor(target), reduction=reduction)
        report.compare(f"vs torch dlogits (reduction={reduction!r})", dlogits,
                       torch.autograd.grad(tloss, tl, torch.tensor(dloss))[0].numpy())


def _check_sgd_step(fn, report: Report) -> None:
    from numpy_ref.layers import Parameter
    from numpy_ref.optim import SGD

    torch = _torch()

    class YourSGD(SGD):
        step = fn

    rng = np.random.default_rng(10)
    shapes = [(4, 3), (3,)]
    start = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(3)]                      # 3 steps
    for kw in (dict(lr=0.1), dict(lr=0.05, momentum=0.9, weight_decay=1e-2),
               dict(lr=0.05, momentum=0.9, nesterov=True), dict(lr=0.1, momentum=0.5, dampening=0.3)):
        case = ", ".join(f"{k}={v}" for k, v in kw.items())
        mine, ref = ([Parameter(a.copy()) for a in start] for _ in range(2))
        tparams = [torch.tensor(a.copy(), requires_grad=True) for a in start]
        opts = (YourSGD(mine, **kw), SGD(ref, **kw), torch.optim.SGD(tparams, **kw))
        for step_grads in grads:
            for params in (mine, ref):
                for prm, g in zip(params, step_grads):
                    prm.grad = g.copy()
            for t, g in zip(tparams, step_grads):
                t.grad = torch.tensor(g)
            for opt in opts:
                opt.step()
        for i, (a, b, t) in enumerate(zip(mine, ref, tparams)):
            report.compare(f"vs numpy_ref param {i} after 3 steps ({case})", a.data, b.data)
            report.compare(f"vs torch.optim.SGD param {i} after 3 steps ({case})", a.data, t.detach().numpy())


def _check_im2col(fn, report: Report) -> None:
    from numpy_ref import functional as Fn
    from numpy_ref.geometry import conv2d_geometry

    torch = _torch()
    rng = np.random.default_rng(11)
    for (kh, kw), stride, padding, dilation in (((3, 2), 2, 1, 1), ((2, 3), 1, 2, 2)):
        x = rng.standard_normal((2, 3, 6, 5))                                                  # (N, C, H, W)
        w = rng.standard_normal((4, 3, kh, kw))                                                # (F, C, KH, KW)
        g = conv2d_geometry(x, w, None, stride, padding, dilation, 1)
        xp = np.pad(x, ((0, 0), (0, 0), g.pad_h, g.pad_w))                                     # (N, C, Hp, Wp)
        case = f"(kernel {kh}x{kw}, stride {stride}, padding {padding}, dilation {dilation})"
        cols = np.array(_call(fn, xp, g), copy=True)                                           # (C*KH*KW, N*OH*OW)
        report.compare(f"vs numpy_ref cols {case}", cols, np.array(Fn._im2col(xp, g), copy=True))
        unfold = torch.nn.functional.unfold(torch.tensor(x), (kh, kw), dilation, padding, stride)  # (N, C*KH*KW, L)
        report.compare(f"vs torch unfold {case}", cols, unfold.permute(1, 0, 2).reshape(cols.shape[0], -1).numpy())
        real = Fn._im2col
        try:  # the whole conv through your columns
            Fn._im2col = fn
            out = Fn.conv2d_forward(x, w, None, stride, padding, dilation)[0]                  # (N, F, OH, OW)
        finally:
            Fn._im2col = real
        tout = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), None, stride, padding, dilation)
        report.compare(f"vs torch conv2d through your im2col {case}", out, tout.numpy())


EXERCISES = {ex.name: ex for ex in [
    Exercise("relu_backward", "numpy_ref.functional:relu_backward",
             "ReLU's gradient: where does it flow, and what happens at exactly 0",
             "return np.zeros_like(out)", _check_relu_backward),
    Exercise("linear_backward", "numpy_ref.functional:linear_backward",
             "a fully connected layer's three gradients, for any number of leading dims",
             "return np.zeros_like(x), np.zeros_like(weight), (np.zeros(weight.shape[0], x.dtype) if has_bias "
             "else None)", _check_linear_backward),
    Exercise("dropout_forward", "numpy_ref.functional:dropout_forward",
             "inverted dropout: the mask, the 1/(1-p) scale, eval mode",
             "return x.copy(), (None, x.shape, x.dtype)", _check_dropout_forward),
    Exercise("cross_entropy_backward", "numpy_ref.functional:cross_entropy_backward",
             "softmax minus one-hot, and what each reduction does to it",
             "return np.zeros_like(logprobs)", _check_cross_entropy_backward),
    Exercise("sgd_step", "numpy_ref.optim:SGD.step",
             "torch.optim.SGD's update: weight decay, momentum, dampening, Nesterov",
             "return None", _check_sgd_step),
    Exercise("im2col", "numpy_ref.functional:_im2col",
             "the columns a convolution multiplies: every window as a column, through a strided view",
             "return np.zeros((g.C * g.KH * g.KW, g.N * g.OH * g.OW), dtype=xp.dtype)", _check_im2col),
    Exercise("max_pool2d_backward", "numpy_ref.functional:max_pool2d_backward",
             "route each gradient to the pixel that won its window; overlapping windows add up",
             "return np.zeros((g.C, g.H, g.W) if g.unbatched else (g.N, g.C, g.H, g.W), dtype=dtype)",
             _check_max_pool2d_backward),
    Exercise("conv2d_backward", "numpy_ref.functional:conv2d_backward",
             "a convolution's dx (col2im), dweight and dbias from the im2col columns, groups included",
             "return (np.zeros((g.C, g.H, g.W) if g.unbatched else (g.N, g.C, g.H, g.W), dtype=xp.dtype),\n"
             "        np.zeros_like(weight), np.zeros(g.F, dtype=xp.dtype) if has_bias else None)",
             _check_conv2d_backward),
    Exercise("local_response_norm_backward", "numpy_ref.functional:local_response_norm_backward",
             "LRN's gradient: the direct term and the sum over the windows that hold each channel",
             "return np.zeros_like(x)", _check_local_response_norm_backward),
]}


# ----------------------------------------------------------------------------------------------------------
# the blank: derived from the project's source

def resolve(target: str):
    """"module:name" or "module:Class.method" -> (module, the function object)."""
    module_name, _, qual = target.partition(":")
    module = importlib.import_module(module_name)
    obj = module
    for part in qual.split("."):
        obj = getattr(obj, part)
    return module, getattr(obj, "fn", obj)  # a @triton.jit kernel: its Python function


def _comments(src: str) -> dict[int, str]:
    """line number -> the text of the comment on it (without '#')."""
    found = {}
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            found[tok.start[0]] = tok.string.lstrip("#").strip()
    return found


def _free_names(fdef: ast.FunctionDef) -> list[str]:
    """Names the function reads that it neither takes nor assigns: the globals its module must provide."""
    args = {a.arg for a in fdef.args.args + fdef.args.kwonlyargs + fdef.args.posonlyargs}
    args |= {a.arg for a in (fdef.args.vararg, fdef.args.kwarg) if a}
    stored = {n.id for n in ast.walk(fdef) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    loaded = [n.id for n in ast.walk(fdef) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)]
    for deco in fdef.decorator_list:
        loaded += [n.id for n in ast.walk(deco) if isinstance(n, ast.Name)]
    return sorted({n for n in loaded if n not in args and n not in stored and not hasattr(builtins, n)})


def import_lines(module, names: list[str]) -> list[str]:
    """The import statements that give a workspace file the module-level names the function uses."""
    lines = []
    for name in names:
        if name not in vars(module):
            continue
        value = vars(module)[name]
        if inspect.ismodule(value):
            lines.append(f"import {value.__name__}" if value.__name__ == name else f"import {value.__name__} as {name}")
        else:
            lines.append(f"from {module.__name__} import {name}")
    return sorted(lines, key=lambda line: (line.startswith("from"), line))


def blank(ex: Exercise) -> tuple[str, str]:
    """(the blank function's source, its import lines): the signature and docstring as written, the leading lines
    that unpack the arguments (`x = input`, `... = cache`), the shape comments of every line of the answer, then
    the placeholder."""
    module, func = resolve(ex.target)
    src = textwrap.dedent(inspect.getsource(func))
    fdef = ast.parse(src).body[0]
    lines, comments = src.splitlines(), _comments(src)
    body = list(fdef.body)
    has_doc = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
        and isinstance(body[0].value.value, str)
    head_end = body[0].end_lineno if has_doc else body[0].lineno - 1  # decorators, signature, docstring
    if has_doc:
        body = body[1:]
    given = []
    while body and isinstance(body[0], ast.Assign) and isinstance(body[0].value, ast.Name):
        given.append(body.pop(0))  # `x = input`, `xp, weight, has_bias, g = cache`: the unpacking is given
    indent = " " * (len(lines[fdef.body[0].lineno - 1]) - len(lines[fdef.body[0].lineno - 1].lstrip()))
    out = lines[:head_end]
    for stmt in given:
        out += lines[stmt.lineno - 1:stmt.end_lineno]
    hints = []
    first = body[0].lineno if body else fdef.end_lineno + 1
    for node in sorted((n for stmt in body for n in ast.walk(stmt)
                        if isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign))), key=lambda n: n.lineno):
        note = comments.get(node.end_lineno) or comments.get(node.lineno)
        if note:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            name = " = ".join(ast.get_source_segment(src, t) for t in targets)
            hints.append((node.lineno, f"{name:<14} {note}"))
    hints += [(n, text) for n, text in comments.items() if first <= n <= fdef.end_lineno
              and lines[n - 1].strip().startswith("#")]  # the answer's own full-line comments, in place
    if hints:
        out.append(f"{indent}# The answer's arrays, in order, with their shape comments (yours may differ):")
        out += [f"{indent}#   {text}" for _, text in sorted(set(hints))]
    out.append(f"{indent}{PLACEHOLDER}")
    out += [f"{indent}{line}" for line in ex.stub.splitlines()]
    return "\n".join(out) + "\n", "\n".join(import_lines(module, _free_names(fdef)))


def function_name(ex: Exercise) -> str:
    return ex.target.rpartition(".")[2] if "." in ex.target.partition(":")[2] else ex.target.partition(":")[2]


def workspace_text(ex: Exercise, prog: str = PROG) -> str:
    """The file `start` writes: what to do, the imports the answer needs, the blank."""
    func_src, imports = blank(ex)
    module_name = ex.target.partition(":")[0]
    path = module_name.replace(".", "/") + ".py"
    return (f'"""Exercise {ex.name}: {ex.what}.\n\n'
            f"Write the body of {function_name(ex)} below (keep its name and signature), then check it:\n"
            f"    {prog} check {ex.name}\n"
            f"(add the same --dir as for `start` if you gave one). The answer is the project's own code: {path}, "
            f"{ex.target.partition(':')[2]}.\n"
            f'"""\n'
            f"from __future__ import annotations\n\n" + (f"{imports}\n\n\n" if imports else "\n") + func_src)


# ----------------------------------------------------------------------------------------------------------
# workspaces

class LearnerCodeError(Exception):
    """The workspace file raised while it was imported (its path in args[0], the error as __cause__)."""


def workspace_dir(directory: str | Path | None) -> Path:
    """--dir, or ./exercises; refused inside the installed numpy_ref / triton_kernels packages."""
    path = Path(directory if directory is not None else DEFAULT_DIR).expanduser().resolve()
    package_root = Path(__file__).resolve().parent.parent
    for pkg in ("numpy_ref", "triton_kernels", "torch_model"):
        if path == package_root / pkg or (package_root / pkg) in path.parents:
            raise ValueError(f"--dir {path}: inside the {pkg} package; pick a folder of your own "
                             f"(the default is ./{DEFAULT_DIR} in the current directory)")
    return path


def start(ex: Exercise, directory=None, force: bool = False, prog: str = PROG) -> Path:
    path = workspace_dir(directory) / f"{ex.name}.py"
    if path.exists() and not force:
        raise ValueError(f"{path} exists (your work?): check it with `{prog} check {ex.name}`, or start over "
                         f"with --force")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(workspace_text(ex, prog))
    return path


def load(ex: Exercise, directory=None, prog: str = PROG) -> Callable:
    """The learner's function from the workspace file."""
    path = workspace_dir(directory) / f"{ex.name}.py"
    if not path.is_file():
        raise ValueError(f"{path}: no such file; run `{prog} start {ex.name}` first"
                         + (" (with the same --dir)" if directory is not None else ""))
    spec = importlib.util.spec_from_file_location(f"exercise_{ex.name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Triton's JIT looks a kernel's module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the learner's file does not run: check() shows the traceback
        raise LearnerCodeError(path) from exc
    name = function_name(ex)
    if not hasattr(module, name):
        raise ValueError(f"{path} defines no {name}: keep the function's name and signature")
    return getattr(module, name)


def check(ex: Exercise, directory=None, out=None, prog: str = PROG) -> int:
    """Run the exercise's checks on the learner's function; 0 when all pass, 1 otherwise."""
    out = out or sys.stdout
    try:
        fn = load(ex, directory, prog)
    except LearnerCodeError as exc:  # the learner's file does not import: show where
        tb = "".join(traceback.format_exception(exc.__cause__))
        print(f"{ex.name}: {exc.args[0]} does not run:\n{textwrap.indent(tb, '    ')}", file=out)
        return 1
    print(f"{ex.name}: checking your {function_name(ex)}", file=out)
    report = Report(out)
    try:
        ex.check(fn, report)
    except Exception:  # a bug in the learner's code: the traceback is what helps
        print(f"  FAILED  your code raised:\n{textwrap.indent(traceback.format_exc(), '    ')}", file=out)
        return 1
    if report.failures:
        print(f"{len(report.failures)} of {report.count} comparisons FAILED (each prints its worst element)",
              file=out)
        return 1
    print(f"all {report.count} comparisons pass", file=out)
    return 0


def main(argv=None, exercises: dict[str, Exercise] | None = None, prog: str = PROG) -> int:
    exercises = EXERCISES if exercises is None else exercises
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.add_parser("list", help="the exercises (the default)")
    for cmd, help_ in (("start", "write the blank into the workspace folder"),
                       ("check", "check your function: gradient check, numpy_ref, torch"),
                       ("solution", "where the answer is in the project")):
        p = sub.add_parser(cmd, help=help_)
        p.add_argument("name", metavar="NAME", help="an exercise (see `list`)")
        if cmd != "solution":
            p.add_argument("--dir", help=f"the workspace folder (default: ./{DEFAULT_DIR})")
        if cmd == "start":
            p.add_argument("--force", action="store_true", help="overwrite an existing file")
    args = parser.parse_args(argv)
    try:
        if args.cmd in (None, "list"):
            width = max(len(n) for n in exercises)
            for ex in exercises.values():
                print(f"{ex.name:<{width}}  {ex.what}  [{ex.target}]")
            print(f"\n{len(exercises)} exercises. `{prog} start NAME` writes ./{DEFAULT_DIR}/NAME.py; "
                  f"`{prog} check NAME` checks it.")
            return 0
        if args.name not in exercises:
            raise ValueError(f"no exercise {args.name!r}; choose from: {', '.join(exercises)}")
        ex = exercises[args.name]
        if args.cmd == "solution":
            print(f"{ex.name}: {ex.target.partition(':')[0].replace('.', '/')}.py, {ex.target.partition(':')[2]}")
            return 0
        if args.cmd == "start":
            path = start(ex, args.dir, args.force, prog)
            print(f"wrote {path}\nwrite the body of {function_name(ex)}, then: {prog} check {ex.name}"
                  + (f" --dir {args.dir}" if args.dir else ""))
            return 0
        return check(ex, args.dir, prog=prog)
    except (ValueError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
