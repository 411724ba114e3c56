"""What every lesson shares and no kernel needs: argument checks, AlexNet's layers, the inputs and ops a step is
checked against, the self-check each step runs as `python -m triton_kernels.lessons.<step>`, and the timing a step
prints of itself on a GPU (`figure`, which `alexnet bench lessons` calls for each of its figures). The inputs,
passes, float64 reference, error and timer themselves are triton_kernels/testing.py's.

Legend: N batch, C channels in, F filters out, H/W input, OH/OW output, K kernel, s stride, p padding.
    OH = (H + 2*p - K) // s + 1
"""
from __future__ import annotations

import importlib
import sys

import torch
import torch.nn.functional as F

from numpy_ref.geometry import conv_output_size, pool_output_size

from triton_kernels._common import INTERPRET
from triton_kernels.lessons import CHAINS, STEPS
from triton_kernels.testing import PASSES, pass_err, reference, rel_err, time_pass
from triton_kernels.testing import make_inputs as layer_inputs

# AlexNet's layers at 224x224 (torch_model/model.py; tests/test_triton_lessons.py holds the two equal).
CONVS = {  # name: (C, F, K, stride, padding, H = W)
    "conv1": (1, 96, 11, 4, 1, 224), "conv2": (96, 256, 5, 1, 2, 26), "conv3": (256, 384, 3, 1, 1, 12),
    "conv4": (384, 384, 3, 1, 1, 12), "conv5": (384, 256, 3, 1, 1, 12)}
POOLS = {"pool1": (96, 3, 2, 0, 54), "pool2": (256, 3, 2, 0, 26), "pool5": (256, 3, 2, 0, 12)}  # (C, K, s, p, H)
LAYERS = ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5")  # in the network's order
# The CPU self-check's sizes: each layer's K, stride and padding, few channels (odd counts), tiny odd images.
SMALL = {"conv1": (1, 5, 23), "conv2": (3, 5, 7), "conv3": (3, 5, 5), "conv4": (5, 3, 6), "conv5": (3, 7, 5),
         "pool1": (3, 0, 9), "pool2": (2, 0, 8), "pool5": (3, 0, 7)}  # (C, F, H)
ELEMENTWISE_SIZES = (1, 7, 256, 1000)  # the primer's self-check: one element, a partial block, a full one, several
REL_TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}  # ||got - ref|| / ||ref|| vs float64


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_tensor(t, name: str, dims: int, dtype=None) -> None:
    if not isinstance(t, torch.Tensor) or t.dim() != dims:
        raise ValueError(f"{name} must be a {dims}-D torch.Tensor, got {getattr(t, 'shape', type(t).__name__)}")
    allowed = (torch.float32,) if t.device.type == "cpu" else (torch.float32, torch.float16, torch.bfloat16)
    if t.dtype not in allowed:
        raise ValueError(f"{name} dtype must be one of {allowed} on {t.device.type} (on a CPU the lessons run and "
                         f"are checked in fp32 only; the interpreter computes bf16 wrongly), got {t.dtype}")
    if t.device.type != "cuda" and not (t.device.type == "cpu" and INTERPRET):
        raise ValueError(f"{name} must be on a CUDA device (or a CPU with TRITON_INTERPRET=1), got {t.device}")
    if dtype is not None and t.dtype != dtype:
        raise ValueError(f"{name} dtype {t.dtype} differs from x dtype {dtype}")


def check_conv_args(x, weight, bias, stride, padding) -> tuple[int, ...]:
    """Validate a lesson's conv2d arguments before anything runs -> (N, C, H, W, F, KH, KW, OH, OW)."""
    _check_tensor(x, "x", 4)
    _check_tensor(weight, "weight", 4, x.dtype)
    _check_int(stride, "stride", 1)
    _check_int(padding, "padding", 0)
    n, c, h, w = x.shape
    f, cw, kh, kw = weight.shape
    if cw != c:
        raise ValueError(f"weight of shape {tuple(weight.shape)} wants {cw} input channels, x {tuple(x.shape)} has {c}")
    if bias is not None:
        _check_tensor(bias, "bias", 1, x.dtype)
        if tuple(bias.shape) != (f,):
            raise ValueError(f"bias must have shape ({f},) for weight {tuple(weight.shape)}, got {tuple(bias.shape)}")
    oh, ow = conv_output_size(h, kh, stride, padding), conv_output_size(w, kw, stride, padding)
    if oh < 1 or ow < 1:
        raise ValueError(f"weight {tuple(weight.shape)} does not fit x {tuple(x.shape)} padded by {padding}")
    return n, c, h, w, f, kh, kw, oh, ow


def check_pool_args(x, kernel_size, stride, padding) -> tuple[int, ...]:
    """Validate a lesson's max_pool2d arguments -> (N, C, H, W, K, s, p, OH, OW)."""
    _check_tensor(x, "x", 4)
    k = _check_int(kernel_size, "kernel_size", 1)
    s = k if stride is None else _check_int(stride, "stride", 1)
    p = _check_int(padding, "padding", 0)
    if p > k // 2:
        raise ValueError(f"padding must be at most kernel_size // 2 = {k // 2}, got {p}")
    n, c, h, w = x.shape
    oh, ow = pool_output_size(h, k, s, p), pool_output_size(w, k, s, p)
    if oh < 1 or ow < 1:
        raise ValueError(f"kernel_size {k} does not fit x {tuple(x.shape)} padded by {p}")
    return n, c, h, w, k, s, p, oh, ow


def bias_relu(out: torch.Tensor, bias, relu: bool) -> torch.Tensor:
    """Steps 1 and 2 finish in torch: two more passes over the output (step 3 moves them into the kernel)."""
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)  # (N, F, OH, OW)
    return torch.relu(out) if relu else out  # torch.relu keeps NaN, like the epilogue of step 3


# ------------------------------------------------------------------------------------ inputs, ops, reference

def layer_shapes(layer: str, batch: int, small: bool = False) -> tuple:
    """(kind, x shape (N, C, H, W), output shape (N, F, OH, OW), kernel) of one layer, at the SMALL sizes or
    AlexNet's own."""
    pool = layer in POOLS
    c, f, k, s, p, h = (POOLS[layer][0],) + POOLS[layer] if pool else CONVS[layer]
    if small:
        c, f, h = SMALL[layer]
        f = c if pool else f
    oh = (pool_output_size if pool else conv_output_size)(h, k, s, p)
    return "pool" if pool else "conv", (batch, c, h, h), (batch, f, oh, oh), k


def make_inputs(layer: str, batch: int, dtype, device, seed: int = 0, small: bool = False,
                layout: str = "nchw", grad: bool = False) -> tuple:
    """Random inputs (never zeros) for one layer: (x, w, b, dy) for a conv, (x, dy) for a pool."""
    kind, x_shape, y_shape, k = layer_shapes(layer, batch, small)
    return layer_inputs(kind, x_shape, y_shape, k, dtype, device, seed, layout, grad, dx=layer != "conv1")


def make_op(impl: str, layer: str):
    """f(x, w, b) -> relu(conv2d(x, w, b)) or f(x) -> max_pool2d(x), computed by a lesson step, by "cudnn" (eager
    torch) or by "production" (triton_kernels.conv2d_relu / max_pool2d)."""
    pool = layer in POOLS
    _, k, s, p, _ = POOLS[layer] if pool else CONVS[layer][1:]
    if impl in STEPS:
        mod = importlib.import_module(f"triton_kernels.lessons.{impl}")
        if pool:
            return lambda x: mod.max_pool2d(x, k, s, p)
        return lambda x, w, b: mod.conv2d(x, w, b, stride=s, padding=p, relu=True)
    if impl == "production":
        import triton_kernels

        if pool:
            return lambda x: triton_kernels.max_pool2d(x, k, s, p)
        return lambda x, w, b: triton_kernels.conv2d_relu(x, w, b, stride=s, padding=p, input_precision="ieee")
    if impl == "cudnn":
        if pool:
            return lambda x: F.max_pool2d(x, k, s, p)
        return lambda x, w, b: F.relu(F.conv2d(x, w, b, stride=s, padding=p))
    raise ValueError(f"impl must be a step {STEPS}, 'production' or 'cudnn', got {impl!r}")


def worst(got: torch.Tensor, ref: torch.Tensor) -> str:
    """The worst element, its index and both values (what a failed check prints); NaN on both sides agrees."""
    diff = (got.detach().double() - ref).abs().nan_to_num(float("inf"))
    diff[torch.isnan(got.detach()) & torch.isnan(ref)] = 0.0
    idx = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
    return f"worst at {idx}: got {got[idx].item()!r}, expected {ref[idx].item()!r}"


# ------------------------------------------------------------------------------------ the self-check

def _forward_backward(op, args: list, dy: torch.Tensor) -> list:
    """[out, then the gradient of every arg that requires one]; under no_grad when none does."""
    wanted = [a for a in args if a is not None and a.requires_grad]
    if not wanted:
        with torch.no_grad():
            return [op(*args)]
    out = op(*args)
    return [out.detach()] + list(torch.autograd.grad(out, wanted, dy))


def _compare(what: str, names: list[str], got: list, ref: list, failures: list[str]) -> None:
    """One line per tensor: its relative error, ok or FAILED with the worst element."""
    for name, g, r in zip(names, got, ref):
        err = rel_err(g, r) if g.shape == r.shape else float("inf")
        ok = err <= REL_TOL[torch.float32]
        shape_note = "" if g.shape == r.shape else f"shape {tuple(g.shape)}, expected {tuple(r.shape)}"
        print(f"{what} {name}: rel err {err:.1e} " + ("ok" if ok else f"FAILED {shape_note or worst(g, r)}"))
        if not ok:
            failures.append(f"{what} {name}")


def _conv_cases(mod) -> list[tuple]:
    """(layer, bias, relu, layout, dx_for_conv1) of a conv step's self-check: every layer with bias and ReLU on and
    off; a step that reads strides (LAYOUT channels_last) again in channels_last; a step with a backward also takes
    conv1's dx, the one strided dgrad."""
    cases = [(layer, bias, bias, "nchw", False) for layer in CONVS for bias in (True, False)]
    if getattr(mod, "LAYOUT", "nchw") == "channels_last":
        cases += [(layer, True, True, "channels_last", False) for layer in CONVS]
    if "fwd+bwd" in mod.PASSES:
        cases += [("conv1", True, True, "nchw", True), ("conv1", False, False, "channels_last", True)]
    return cases


def _check_elementwise(step: str, mod, device: torch.device, failures: list[str]) -> None:
    """The primer: relu(x) on 1-D tensors of ELEMENTWISE_SIZES (a NaN included), against torch.relu."""
    g = torch.Generator(device=device).manual_seed(0)
    for size in ELEMENTWISE_SIZES:
        x = torch.randn(size, generator=g, device=device)
        if size > 3:
            x[3] = float("nan")  # NaN in, NaN out, as torch.relu
        _compare(f"{step} x of {size}", ["out"], [mod.relu(x)], [torch.relu(x.double())], failures)


def self_check(step: str, device: torch.device) -> list[str]:
    """Check one step against float64 torch (fp32 inputs): a conv or pool step on every AlexNet layer of its kind
    at the SMALL sizes, bias and ReLU on and off, channels_last where the step reads strides, the gradients (a
    strided dgrad included) where it has a backward; the primer on a few lengths. Prints a line per check;
    returns the failures."""
    mod = importlib.import_module(f"triton_kernels.lessons.{step}")
    failures: list[str] = []
    if mod.KIND == "elementwise":
        _check_elementwise(step, mod, device, failures)
        return failures
    grad = "fwd+bwd" in mod.PASSES
    if mod.KIND == "pool":
        for seed, layer in enumerate(POOLS):
            *args, dy = make_inputs(layer, 2, torch.float32, device, seed, small=True, grad=grad)
            got = _forward_backward(make_op(step, layer), args, dy)
            args64 = [a.detach().double().requires_grad_(a.requires_grad) for a in args]
            ref = _forward_backward(make_op("cudnn", layer), args64, dy.double())
            names = ["out"] + (["dx"] if grad else [])
            _compare(f"{step} {layer} x {'x'.join(str(d) for d in args[0].shape)}", names, got, ref, failures)
        return failures
    for seed, (layer, bias, relu, layout, dx_conv1) in enumerate(_conv_cases(mod)):
        x, w, b, dy = make_inputs(layer, 2, torch.float32, device, seed, small=True, layout=layout, grad=grad)
        if dx_conv1:
            x.requires_grad_(True)
        args = [x, w, b if bias else None]
        _, k, s, p, _ = CONVS[layer][1:]

        def op(x, w, b, s=s, p=p, relu=relu):
            return mod.conv2d(x, w, b, stride=s, padding=p, relu=relu)

        def ref_op(x, w, b, s=s, p=p, relu=relu):
            return bias_relu(F.conv2d(x, w, stride=s, padding=p), b, relu)

        got = _forward_backward(op, args, dy)
        args64 = [None if a is None else a.detach().double().requires_grad_(a.requires_grad) for a in args]
        ref = _forward_backward(ref_op, args64, dy.double())
        names = ["out"] + [n for n, a in zip(("dx", "dw", "db"), args) if a is not None and a.requires_grad]
        what = (f"{step} {layer} x {'x'.join(str(d) for d in x.shape)} {layout} bias={bias} relu={relu}"
                + (f" (dgrad at stride {s})" if dx_conv1 else ""))
        _compare(what, names, got, ref, failures)
    return failures


# ------------------------------------------------------------------------------------ timing (a GPU's, mostly)

def layout_of(impl: str, kind: str) -> str:
    """The layout a figure runs in: a step's LAYOUT (default NCHW); production convs in channels_last."""
    if impl == "production":
        return "channels_last" if kind == "conv" else "nchw"
    if impl in STEPS:
        return getattr(importlib.import_module(f"triton_kernels.lessons.{impl}"), "LAYOUT", "nchw")
    raise ValueError(f"impl must be a step {STEPS} or 'production', got {impl!r}")


def figure(layer: str, pss: str, impl: str, batch: int, dtype, device, seed: int = 0, small: bool = False,
           layout: str | None = None, **timer) -> dict:
    """One timed figure: `impl` (a step, "production" or "cudnn") on one layer and pass, in `layout` (default: the
    one the step is written for), its first call checked against float64 torch, then timed (testing.time_pass)."""
    kind, x_shape, y_shape, _ = layer_shapes(layer, batch, small)
    layout = layout or layout_of(impl, kind)
    make = lambda i: make_inputs(layer, batch, dtype, device, seed * 1000 + i, small, layout,  # noqa: E731
                                 grad=pss == "fwd+bwd")
    ref_op = make_op("cudnn", layer)
    t = time_pass(make_op(impl, layer), pss, make, device,
                  check=lambda got, inputs: pass_err(got, reference(ref_op, inputs)), **timer)
    return {"layer": layer, "kind": kind, "pass": pss, "impl": impl, "layout": layout, "batch": batch, **t,
            "err_ok": bool(t["rel_err"] <= REL_TOL[dtype]), "x_shape": list(x_shape), "dy_shape": list(y_shape)}


def step_timings(step: str, device: torch.device, batch: int = 128, dtype=torch.bfloat16) -> list[dict]:
    """`python -m triton_kernels.lessons.<step>` on a GPU: this step, the step before it in its chain and eager
    torch (NCHW and channels_last, the faster is "torch") on every AlexNet layer of its kind, each checked against
    float64 before it is timed. On a CPU (tests) the same at the SMALL sizes, in the interpreter. Prints the table;
    returns its rows."""
    mod = importlib.import_module(f"triton_kernels.lessons.{step}")
    if mod.KIND not in ("conv", "pool"):
        raise ValueError(f"{step} is not a conv or pool step: nothing to time it against")
    small = device.type != "cuda"
    rows = []
    for layer in (CONVS if mod.KIND == "conv" else POOLS):
        for pss in PASSES:
            chain = CHAINS[(mod.KIND, pss)]
            if step not in chain:
                continue
            i = chain.index(step)
            figures = [(impl, None) for impl in chain[max(0, i - 1):i + 1]]
            figures += [("cudnn", "nchw"), ("cudnn", "channels_last")]
            timed = [figure(layer, pss, impl, batch, dtype, device, small=small, layout=layout)
                     for impl, layout in figures]
            best_torch = min(r["ms"] for r in timed if r["impl"] == "cudnn")
            prev = timed[0]["ms"] if i > 0 else None
            for r in timed:
                rows.append({**r, "impl": "torch" if r["impl"] == "cudnn" else r["impl"],
                             "x_torch": best_torch / r["ms"],
                             "x_previous": prev / r["ms"] if prev is not None and r["impl"] == step else None})
    print(f"{'layer':<6} {'pass':<8} {'impl':<22} {'layout':<14} {'ms':>9} {'x torch':>8} {'x previous':>10}  err")
    for r in rows:
        prev = f"{r['x_previous']:.2f}" if r["x_previous"] is not None else "-"
        print(f"{r['layer']:<6} {r['pass']:<8} {r['impl']:<22} {r['layout']:<14} {r['ms']:>9.4g} "
              f"{r['x_torch']:>8.2f} {prev:>10}  {r['rel_err']:.0e}" + ("" if r["err_ok"] else " WRONG"))
    print("x torch: the faster eager-torch layout's time over this one's; x previous: the previous step's over "
          "this one's")
    return rows


def main(step: str) -> int:
    """`python -m triton_kernels.lessons.<step>`: the self-check (exit 1 on any mismatch); on a GPU then the
    timing at batch 128 in bf16 against eager torch (cuDNN) and the previous step (step_timings)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"{step}: checking against torch (float64), small sizes, fp32, {device.type}"
          + (" (Triton interpreter)" if INTERPRET else ""))
    failures = self_check(step, device)
    if failures:
        print(f"{len(failures)} check(s) FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    print("all checks passed")
    mod = importlib.import_module(f"triton_kernels.lessons.{step}")
    if device.type == "cuda" and mod.KIND in ("conv", "pool"):
        step_timings(step, device)
    return 0
