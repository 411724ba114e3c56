"""triton_kernels/lessons: every step against float64 torch in the interpreter (fp32, IEEE dots), the backward
steps' gradients, the primer, each step's self-check, the sm_90 codegen facts each docstring states (and the
tool's refusals), a step's own timing and `alexnet bench lessons` at small sizes.

Shapes are tiny on purpose (the interpreter runs program instances one by one in Python) and odd (1, 3, 5, 7, 17
channels; 5..15 pixels), with AlexNet's kernel/stride/padding combinations: 11/4/1, 5/1/2, 3/1/1 and pools 3/2/0.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import triton_kernels  # noqa: F401  (first: on a CPU it sets TRITON_INTERPRET before anything imports triton)
from conftest import assert_close_verbose
from triton_kernels.lessons import CONV_STEPS, POOL_STEPS, STEPS, harness

REPO = Path(__file__).resolve().parents[1]
# The sm_90 codegen tool; main renames it triton_kernels.codegen: this one constant is all that changes.
CODEGEN_MODULE = "triton_kernels.codegen"
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# fp32 with IEEE dots against a float64 reference: sums of <= 17*9 products of O(1) values, accumulated in fp32
# (relative rounding ~6e-8 per add), stay far inside 1e-5; the gradients sum up to ~100 of them.
ATOL, RTOL = 1e-5, 1e-5
FORWARD_STEPS = ("step1_direct_conv", "step2_implicit_gemm", "step3_tap_walk", "step4_backward",
                 "step4b_fused_backward")
BACKWARD_STEPS = ("step4_backward", "step4b_fused_backward")


def step(name: str):
    return importlib.import_module(f"triton_kernels.lessons.{name}")


def rnd(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE)


# (N, C, H, W, F, K, stride, padding, bias, relu, layout)
CONV_CASES = [
    (2, 1, 15, 15, 3, 11, 4, 1, True, True, "nchw"),        # conv1's 11/4/1 on a 15x15 image, C = 1
    (1, 3, 7, 7, 5, 5, 1, 2, False, False, "nchw"),         # conv2's 5/1/2, no bias, no ReLU
    (2, 5, 6, 5, 7, 3, 1, 1, True, False, "nchw"),          # conv3..5's 3/1/1 on a non-square image
    (2, 17, 5, 5, 17, 3, 1, 1, True, True, "channels_last"),  # 17 channels and filters: two K chunks, two N tiles
]


def _conv_ref(x, w, b, s, p, relu):
    out = F.conv2d(x.double(), w.double(), None if b is None else b.double(), stride=s, padding=p)
    return torch.relu(out) if relu else out


@pytest.mark.parametrize("name", FORWARD_STEPS)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"K{c[5]}s{c[6]}p{c[7]}-C{c[1]}-{c[10]}")
def test_conv_steps_match_torch(name, case):
    n, c, h, w, f, k, s, p, bias, relu, layout = case
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = rnd(n, c, h, w, seed=1).contiguous(memory_format=fmt)
    wt = rnd(f, c, k, k, seed=2).contiguous(memory_format=fmt)
    b = rnd(f, seed=3) if bias else None
    with torch.no_grad():
        out = step(name).conv2d(x, wt, b, stride=s, padding=p, relu=relu)
    assert_close_verbose(out, _conv_ref(x, wt, b, s, p, relu), ATOL, RTOL, f"{name} {case}")


def test_fused_relu_keeps_nan_like_torch():
    x = rnd(1, 3, 5, 5)
    x[0, 1, 2, 2] = float("nan")
    out = step("step3_tap_walk").conv2d(x, rnd(4, 3, 3, 3, seed=1), rnd(4, seed=2), padding=1, relu=True)
    ref = _conv_ref(x, rnd(4, 3, 3, 3, seed=1), rnd(4, seed=2), 1, 1, True)
    assert torch.isnan(out).sum() == torch.isnan(ref).sum() == 36
    assert_close_verbose(out, ref, ATOL, RTOL, "step3 with a NaN pixel")


@pytest.mark.parametrize("name", BACKWARD_STEPS)
@pytest.mark.parametrize("case", [
    (2, 3, 7, 7, 5, 5, 1, 2, True, True, "nchw"),
    (1, 17, 5, 6, 5, 3, 1, 1, False, False, "channels_last"),
    (1, 2, 15, 15, 3, 11, 4, 1, True, True, "nchw"),  # stride 4: a strided dgrad (dilated in 4, gathered in 4b)
    (1, 3, 9, 9, 17, 3, 2, 1, True, True, "channels_last"),  # stride 2 in channels_last, 17 filters: two chunks
], ids=["K5s1p2-relu", "K3s1p1-cl", "K11s4p1", "K3s2p1-cl"])
def test_backward_step_gradients(name, case):
    n, c, h, w, f, k, s, p, bias, relu, layout = case
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = rnd(n, c, h, w, seed=4).contiguous(memory_format=fmt).requires_grad_()
    wt = rnd(f, c, k, k, seed=5).contiguous(memory_format=fmt).requires_grad_()
    b = rnd(f, seed=6).requires_grad_() if bias else None
    out = step(name).conv2d(x, wt, b, stride=s, padding=p, relu=relu)
    dy = rnd(*out.shape, seed=7)
    leaves = [t for t in (x, wt, b) if t is not None]
    got = torch.autograd.grad(out, leaves, dy)
    leaves64 = [t.detach().double().requires_grad_() for t in leaves]
    ref_out = _conv_ref(leaves64[0], leaves64[1], leaves64[2] if bias else None, s, p, relu)
    ref = torch.autograd.grad(ref_out, leaves64, dy.double())
    for grad_name, g, r in zip(("dx", "dw", "db"), got, ref):
        assert_close_verbose(g, r, 1e-4, 1e-4, f"{name} {grad_name} {case}")


@pytest.mark.parametrize("name", POOL_STEPS)
@pytest.mark.parametrize("shape,k,s,p", [((2, 3, 9, 9), 3, 2, 0), ((1, 5, 8, 7), 3, 2, 0), ((1, 2, 6, 5), 3, 1, 1)],
                         ids=["pool-3-2-0-odd", "pool-3-2-0-even", "pool-3-1-1"])
def test_pool_steps_match_torch(name, shape, k, s, p):
    x = rnd(*shape, seed=8)
    x[0, 0, 1, 1] = float("nan")  # NaN wins its windows, as in torch
    x[-1, -1] = torch.randint(0, 3, x.shape[2:], generator=torch.Generator().manual_seed(0)).float()  # ties
    with torch.no_grad():
        out = step(name).max_pool2d(x, k, s, p)
    assert_close_verbose(out, F.max_pool2d(x.double(), k, s, p), 0, 0, f"{name} {shape}")
    if name == "step6_pool_argmax":  # the gather backward: dy goes to the first maximum, as torch sends it
        xg, x64 = x.clone().requires_grad_(), x.double().requires_grad_()
        out = step(name).max_pool2d(xg, k, s, p)
        dy = rnd(*out.shape, seed=9)
        (dx,) = torch.autograd.grad(out, xg, dy)
        (ref,) = torch.autograd.grad(F.max_pool2d(x64, k, s, p), x64, dy.double())
        assert_close_verbose(dx, ref, 1e-6, 1e-6, f"{name} dx {shape}")


def test_bad_arguments_are_refused_by_name():
    x, w = rnd(1, 3, 7, 7), rnd(4, 3, 3, 3)
    for name in CONV_STEPS:
        conv2d = step(name).conv2d
        with pytest.raises(ValueError, match="stride must be an int >= 1"):
            conv2d(x, w, stride=1.5)
        with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
            conv2d(x, w, rnd(5))
        with pytest.raises(ValueError, match="weight of shape"):
            conv2d(x, rnd(4, 2, 3, 3))
        if DEVICE.type == "cpu":
            with pytest.raises(ValueError, match="x dtype must be one of"):
                conv2d(x.bfloat16(), w.bfloat16())
    with pytest.raises(ValueError, match="padding must be at most"):
        step("step6_pool_argmax").max_pool2d(x, 3, 2, 2)
    with pytest.raises(ValueError, match="has no backward"):
        step("step5_pool_direct").max_pool2d(x.requires_grad_(), 3, 2)


def test_split_k_sums_every_slice():
    """step 4b's wgrad with K split 1, 3 and 7 ways (slices of whole BLOCK_K steps, the last one short) is the same
    dW, and the ReLU mask applied on load gives torch's gradient where out <= 0."""
    s4b = step("step4b_fused_backward")
    x, wt = rnd(2, 3, 7, 7, seed=10), rnd(4, 3, 3, 3, seed=11)
    out = torch.relu(F.conv2d(x, wt, padding=1))  # (2, 4, 7, 7), about half zeros
    dy = rnd(*out.shape, seed=12)
    x64, w64 = x.double().requires_grad_(), wt.double().requires_grad_()
    ref = torch.autograd.grad(torch.relu(F.conv2d(x64, w64, padding=1)), [x64, w64], dy.double())
    for split in (1, 3, 7):
        dx, dw, _ = s4b.conv2d_backward(dy, x, wt, out, 1, 1, True, need=(True, True, False), split_k=split)
        assert_close_verbose(dw, ref[1], 1e-4, 1e-4, f"step4b dw split {split}")
        assert_close_verbose(dx, ref[0], 1e-4, 1e-4, f"step4b dx split {split}")


def test_primer_runs_itself_and_masks_the_tail():
    proc = subprocess.run([sys.executable, "-m", "triton_kernels.lessons.step0_primer"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(" ok") == len(harness.ELEMENTWISE_SIZES) and "all checks passed" in proc.stdout
    relu = step("step0_primer").relu
    x = rnd(3, 5, 7)  # 105 elements: one partial block
    assert_close_verbose(relu(x), torch.relu(x), 0, 0, "primer relu 3x5x7")
    with pytest.raises(ValueError, match="floating-point"):
        relu(torch.arange(5))


def test_self_checks_cover_channels_last_and_a_strided_dgrad():
    cases = {name: harness._conv_cases(step(name)) for name in CONV_STEPS}
    for name, layout in (("step1_direct_conv", "channels_last"), ("step2_implicit_gemm", "channels_last")):
        assert all(c[3] != layout for c in cases[name])  # they copy to NCHW: nothing to check there
    for name in ("step3_tap_walk", "step4_backward", "step4b_fused_backward"):
        assert {c[0] for c in cases[name] if c[3] == "channels_last"} >= set(harness.CONVS), name
    for name in BACKWARD_STEPS:
        assert any(c[0] == "conv1" and c[4] for c in cases[name]), name  # conv1's dx: stride 4


def test_bridge_step_runs_its_self_check(capsys, monkeypatch):
    """`python -m triton_kernels.lessons.step4b_fused_backward` end to end on its channels_last cases. The full case
    list is checked by test_self_checks_cover_channels_last_and_a_strided_dgrad and the strided dgrad's numbers by
    test_backward_step_gradients[K11s4p1]: conv1's dgrad at its self-check size takes 36 s of the interpreter."""
    all_cases = harness._conv_cases
    monkeypatch.setattr(harness, "_conv_cases",
                        lambda mod: [c for c in all_cases(mod) if c[3] == "channels_last" and not c[4]])
    assert harness.main("step4b_fused_backward") == 0
    out = capsys.readouterr().out
    assert "FAILED" not in out and "all checks passed" in out
    assert out.count("channels_last bias=True relu=True out: rel err") == len(harness.CONVS)


def test_codegen_says_why_it_refuses_a_tile():
    from triton_kernels.codegen import refusal
    from triton_kernels.lessons.specs import SM90_COMPILE_SPECS

    gemm = next(s for s in SM90_COMPILE_SPECS if s["name"].startswith("step2_implicit_gemm"))
    assert refusal(gemm) is None
    small_k = dict(gemm, constexprs={**gemm["constexprs"], "BLOCK_K": 8})
    assert "BLOCK_K = 8 < 16" in refusal(small_k) and "tensor cores" in refusal(small_k)
    odd = dict(gemm, constexprs={**gemm["constexprs"], "BLOCK_N": 48})
    assert "BLOCK_N = 48 is not a power of two" in refusal(odd)
    plain = next(s for s in SM90_COMPILE_SPECS if s["name"].startswith("step0_primer"))
    assert refusal(dict(plain, constexprs={"BLOCK": 8})) is None  # no tensor cores wanted: 8 lanes are fine


def test_step_timings_without_the_benchmark_package(capsys):
    """What a step prints of itself on a GPU (here at the small sizes, in the interpreter): the step, the previous
    step of its chain, eager torch in both layouts, each checked first."""
    rows = harness.step_timings("step6_pool_argmax", DEVICE, batch=1, dtype=torch.float32)
    base = "torch"
    assert {(r["impl"], r["pass"]) for r in rows} >= {("step5_pool_direct", "fwd"), ("step6_pool_argmax", "fwd"),
                                                      ("step6_pool_argmax", "fwd+bwd"), (base, "fwd+bwd")}
    assert all(r["impl"] != "production" and r["err_ok"] and r["ms"] > 0 for r in rows)
    assert all((r["x_previous"] is not None) == (r["impl"] == "step6_pool_argmax" and r["pass"] == "fwd")
               for r in rows)
    assert "x previous" in capsys.readouterr().out
    with pytest.raises(ValueError, match="not a conv or pool step"):
        harness.step_timings("step0_primer", DEVICE)


def test_harness_layers_are_alexnets():
    from torch_model.bench.layer_specs import alexnet_specs

    specs = {s.name: s for s in alexnet_specs(batch=1)}
    for name, (c, f, k, s, p, h) in harness.CONVS.items():
        assert (specs[name].C, specs[name].F, specs[name].K, specs[name].stride, specs[name].padding,
                specs[name].H) == (c, f, k, s, p, h), name
    for name, (c, k, s, p, h) in harness.POOLS.items():
        assert (specs[name].C, specs[name].K, specs[name].stride, specs[name].padding, specs[name].H) == (c, k, s, p, h)


def test_a_step_runs_itself_and_fails_on_a_wrong_kernel(monkeypatch, capsys):
    proc = subprocess.run([sys.executable, "-m", "triton_kernels.lessons.step5_pool_direct"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(" ok") == 3 and "all checks passed" in proc.stdout
    mod = step("step5_pool_direct")
    real = mod.max_pool2d
    monkeypatch.setattr(mod, "max_pool2d", lambda *a, **kw: real(*a, **kw) * 1.5)
    assert harness.main("step5_pool_direct") == 1
    assert "FAILED worst at" in capsys.readouterr().out


def test_codegen_facts_per_step(tmp_path):
    """Every spec compiles for sm_90 and shows what its step's docstring says: tensor cores (HGMMA) from step 2
    on and never in the direct kernels and pools; shared memory only for the GEMMs; spills where the A tile's
    per-element address math is (steps 2 and 4's wgrad); step 3 in fewer registers than step 2, and in
    channels_last fewer registers and more (multi-buffered) shared memory than in NCHW."""
    out = tmp_path / "lessons_sm90.json"
    env = dict(os.environ, TRITON_INTERPRET="0")
    proc = subprocess.run([sys.executable, "-m", CODEGEN_MODULE, "--module", "triton_kernels.lessons.specs",
                           "--jobs", "2", "--json", str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads(out.read_text())["results"]}
    from triton_kernels.lessons.specs import SM90_COMPILE_SPECS

    assert set(rows) == {s["name"] for s in SM90_COMPILE_SPECS}
    assert {s["name"].split("[")[0].split(".")[0] for s in SM90_COMPILE_SPECS} == set(STEPS)  # every step
    for spec in SM90_COMPILE_SPECS:
        r, facts = rows[spec["name"]], spec["facts"]
        assert r["ok"], r
        assert ("HGMMA" in r["tensor_cores"]) is facts["tensor_cores"], r
        if not facts["tensor_cores"]:
            assert r["tensor_cores"] == [], r
        assert (r["shared_bytes"] > 0) is facts["shared"], r
        assert (r["spill_stores"] > 0) is facts["spills"], r
    by = {name.split("[")[0] + ("-cl" if "channels_last" in name else ""): r for name, r in rows.items()}
    assert by["step3_tap_walk"]["registers"] < by["step2_implicit_gemm"]["registers"]
    assert by["step3_tap_walk-cl"]["registers"] < by["step3_tap_walk"]["registers"]
    assert by["step3_tap_walk-cl"]["shared_bytes"] >= 2 * by["step3_tap_walk"]["shared_bytes"]


def test_bench_lessons_small_on_this_machine(tmp_path, capsys):
    from torch_model.bench import layers, lessons
    from torch_model.bench.common import read_rows
    from torch_model.cli import main
    from triton_kernels.testing import PASSES

    out = tmp_path / "results"
    argv = ["bench", "lessons", "--layers", "conv3,pool5", "--out-dir", str(out), "--no-progress"]
    if DEVICE.type == "cuda":
        argv += ["--batch", "2", "--dtype", "fp32", "--warmup-ms", "1", "--rep-ms", "3"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    (path,) = out.glob("*.jsonl")
    rows = read_rows(path)
    base = "cudnn" if DEVICE.type == "cuda" else "torch-cpu"
    got = {(e["layer"], e["pass"], e["step"], e["layout"]) for e in rows}
    want = {(layer, pss, impl if impl != "cudnn" else base, layout)
            for layer, pss, impl, layout in lessons.plan(["conv3", "pool5"], PASSES)}
    assert got == want and {e["bench"] for e in rows} == {"lessons"}
    for e in rows:
        assert e["err_ok"] and e["ms"] > 0 and e["gb_per_s"] > 0, e
        assert (e["tflops"] is not None) is (e["kind"] == "conv"), e
    if DEVICE.type == "cpu":
        assert all(e["cpu"] for e in rows) and "NOT GPU results" in text
    assert "x previous" in text and "x cudnn" in text
    # the bench times the lessons' own layers and passes
    assert lessons.LAYERS == harness.LAYERS and layers.PASSES == PASSES == harness.PASSES
