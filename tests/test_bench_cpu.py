"""`alexnet bench cpu` at tiny sizes: its napkin math against `alexnet summary`'s FLOPs, the profile's attribution
(every op in exactly one row, the rows adding up to the profiled step, each layer's ops in that layer's row), the
smoke run end to end (table, results line, chart, the training loop), --compare-malloc, and bad flags.

These tests check the harness, never timings.
"""
from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from torch_model.bench import cpu
from torch_model.bench.layer_specs import train_step_flops

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = ["--batch", "2", "--steps", "1", "--warmup-steps", "1", "--profile-steps", "1", "--matmul-size", "64"]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="alexnet bench cpu")
    cpu.configure(parser)
    return parser.parse_args(argv)


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------------------------- napkin math

def test_gemm_rows_are_summarys_flops():
    """Each conv's and linear's forward row is `alexnet summary`'s FLOPs less its bias (summary counts one add per
    output); the backward rows are 2x that (dX and dW), 1x for conv1 (no dX); all of them: bench train's step."""
    from torch_model.summary import layer_summary

    rows = {r.name: r for r in cpu.step_rows(1, "bf16")}
    layers = [info for info in layer_summary() if info.name in ("Conv2d", "Linear")]
    names = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    assert len(layers) == len(names)
    for name, info in zip(names, layers):
        fwd = info.flops - math.prod(info.shape)
        assert rows[f"{name} fwd"].flops == fwd, name
        if name.startswith("conv"):
            bwd = rows[f"{name} bwd"].flops
        else:
            bwd = rows[f"{name} dX"].flops + rows[f"{name} dW"].flops
        assert bwd == (1 if name == "conv1" else 2) * fwd, name
    per_image = sum(r.flops for r in rows.values())
    assert per_image == train_step_flops(1) and 5.5e9 < per_image < 5.6e9
    assert sum(r.flops for r in cpu.step_rows(128, "bf16")) == 128 * per_image
    assert {r.kind for r in rows.values() if r.flops} == {"gemm"}


def test_memory_rows_napkin_bytes_known_case():
    rows = {r.name: r for r in cpu.step_rows(1, "bf16")}
    relu = 96 * 54 * 54 + 256 * 26 * 26 + 2 * 384 * 12 * 12 + 256 * 12 * 12 + 2 * 4096   # 7 ReLU outputs
    assert rows["relu fwd"].bytes == 2 * 2 * relu and rows["relu bwd"].bytes == 3 * 2 * relu
    x, y = 96 * 54 * 54, 96 * 26 * 26                  # pool1: ATen's int64 indices, dx zero-filled then scattered
    assert rows["pool1 fwd"].bytes == 2 * (x + y) + 8 * y
    assert rows["pool1 bwd"].bytes == 2 * y + 8 * y + 2 * x
    pool_x = x + 256 * 26 * 26 + 256 * 12 * 12
    assert rows["alloc/fill"].bytes == 2 * pool_x      # the zero-fills, counted here and not in the pool rows
    params = 46_764_746
    assert rows["optimizer"].bytes == 12 * params     # fp32 SGD: read p and g, write p
    assert rows["casts"].bytes == 6 * (2 * params + 224 * 224 + 2 * 10)
    fp32 = {r.name: r for r in cpu.step_rows(1, "none")}
    assert fp32["casts"].bytes is None and fp32["relu fwd"].bytes == 2 * rows["relu fwd"].bytes
    assert [r.name for r in fp32.values()] == [r.name for r in rows.values()]


# ----------------------------------------------------------------------------------------------- attribution

@pytest.mark.slow
def test_every_op_lands_in_exactly_one_row_and_its_layers():
    """One profiled bf16 channels_last step at batch 2: every event is given one row, the rows' self times add up
    to the roots' total times, and each layer's ops (found by their shapes, independently of the hooks the bench
    uses) sit in that layer's rows."""
    from torch_model.bench.train import make_bench_learner

    torch.manual_seed(0)
    learner = make_bench_learner("torch", "bf16", 0.01, cpu.CPU, None, "channels_last")
    learner.train()
    data = cpu.random_batches(2, 0)
    learner.step(*data[0])
    prof = cpu.profile_steps(learner, data, 1)
    names = [r.name for r in cpu.step_rows(2, "bf16")]
    assert len(prof.rows_of) == len(prof.events) and set(prof.rows_of) <= set(names)

    summary = cpu.summarize(prof, cpu.step_rows(2, "bf16"), ref_tflops=1.0, copy_gb_per_s=10.0)
    assert [r["row"] for r in summary["rows"]] == names
    assert sum(r["ms"] for r in summary["rows"]) == pytest.approx(summary["total_ms"], rel=1e-9)
    roots = sum(e.cpu_time_total for e in prof.events if e.cpu_parent is None) / 1e3
    assert summary["total_ms"] == pytest.approx(roots, rel=1e-9)
    assert sum(r["share"] for r in summary["rows"]) == pytest.approx(1.0)

    layers = cpu.layer_names(learner.net)
    conv_by_weight = {tuple(m.weight.shape): n for n, kind, m in layers if kind == "conv"}
    pool_by_input = {}
    x = data[0][0]
    with torch.no_grad():
        for n, kind, m in layers:
            if kind == "pool":
                pool_by_input[tuple(x.shape)] = n
            x = m(x)
    fc = {n: (m.in_features, m.out_features) for n, kind, m in layers if kind == "fc"}
    conv1 = learner.net[0]
    conv1_patch = conv1.in_channels * conv1.kernel_size[0] * conv1.kernel_size[1] + 1     # + the bias's ones
    seen = set()
    for e, row in zip(prof.events, prof.rows_of):
        shapes = e.input_shapes
        if e.name == "aten::mkldnn_convolution":
            expect = f"{conv_by_weight[tuple(shapes[1])]} fwd"
        elif e.name == "aten::convolution_backward":
            expect = f"{conv_by_weight[tuple(shapes[2])]} bwd"
        elif e.name == "aten::max_pool2d_with_indices":
            expect = f"{pool_by_input[tuple(shapes[0])]} fwd"
        elif e.name == "aten::max_pool2d_with_indices_backward":
            expect = f"{pool_by_input[tuple(shapes[1])]} bwd"
        elif e.name == "aten::threshold_backward":
            expect = "relu bwd"
        elif e.name == "aten::clamp_min":
            expect = "relu fwd"
        elif e.name == "aten::mm" and shapes[1][1] == conv1_patch:   # conv1's dW: dy.T @ im2col (cpu_layers.py)
            expect = "conv1 bwd"
        elif e.name == "aten::mm":                      # else only the linears' backwards multiply with mm
            a, b = shapes[0], shapes[1]
            (name,) = [n for n, (fan_in, fan_out) in fc.items()
                       if (a, b) in (([2, fan_out], [fan_out, fan_in]), ([fan_out, 2], [2, fan_in]),
                                     ([fan_in, 2], [2, fan_out]))]
            expect = f"{name} dX" if a == [2, fc[name][1]] else f"{name} dW"
        elif e.name == "aten::addmm":
            (name,) = [n for n, (fan_in, fan_out) in fc.items() if shapes[2] == [fan_in, fan_out]]
            expect = f"{name} fwd"
        elif e.name == "aten::add_" and e.cpu_parent is not None and e.cpu_parent.name.startswith("Optimizer."):
            expect = "optimizer"
        elif e.name == "aten::copy_" and len(set(e.input_dtypes[:2])) > 1:
            expect = "casts"
        elif e.name in ("aten::fill_", "aten::zero_", "aten::empty"):
            expect = "alloc/fill"
        else:
            continue
        assert row == expect, f"{e.name} {shapes} went to {row!r}, expected {expect!r}"
        seen.add(row)
    gemm_rows = {n for n in names if n.startswith(("conv", "fc", "pool"))}
    assert gemm_rows <= seen, f"rows no op was found in: {sorted(gemm_rows - seen)}"
    assert {"relu fwd", "relu bwd", "optimizer", "casts", "alloc/fill"} <= seen
    by = {r["row"]: r for r in summary["rows"]}
    assert by["conv2 bwd"]["tflops"] == pytest.approx(by["conv2 bwd"]["flops"] / (by["conv2 bwd"]["ms"] * 1e9))
    assert by["conv2 bwd"]["peak_fraction"] == pytest.approx(by["conv2 bwd"]["tflops"] / 1.0)
    assert by["relu fwd"]["peak_fraction"] == pytest.approx(by["relu fwd"]["gb_per_s"] / 10.0)
    assert by["layout"]["peak_fraction"] is None                       # no napkin bytes: no rate


# ----------------------------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_smoke_run_prints_the_table_and_appends_a_line(tmp_path, fake_data, capsys):
    out = tmp_path / "cpu"
    args = parse([*TINY, "--amp", "bf16", "--data-dir", str(fake_data), "--loop-train", "2", "--loop-test", "2",
                  "--out-dir", str(out)])
    assert cpu.run(args) == 0
    text = capsys.readouterr().out
    (path,) = out.glob("*.jsonl")
    (line,) = lines(path)
    assert path.name == f"{line['machine']}.jsonl" and line["mode"] == "single"
    for key in ("cpu_model", "cpu_count", "torch", "threads", "date", "allocator"):
        assert line[key], key
    assert (line["amp"], line["layout"], line["batch"], line["ref_dtype"]) == ("bf16", "channels_last", 2, "bf16")
    step = line["step"]
    assert step["img_per_s"] == pytest.approx(2e3 / step["step_ms"])
    assert step["tflops"] == pytest.approx(train_step_flops(2) / step["step_ms"] / 1e9)
    assert step["peak_fraction"] == pytest.approx(step["tflops"] / line["matmul"]["bf16"]["tflops"])
    assert step["minor_faults_per_step"] >= 0 and line["flops_per_image"] == train_step_flops(1)
    prof = line["profile"]
    assert [r["row"] for r in prof["rows"]] == [r.name for r in cpu.step_rows(2, "bf16")]
    assert sum(r["ms"] for r in prof["rows"]) == pytest.approx(prof["total_ms"])
    assert prof["total_ms"] == pytest.approx(prof["roots_ms"])
    assert line["loop"]["images"] == 2 and line["loop"]["examples_per_sec"] > 0
    assert "the alexnet train loop beside it" in text and "minor page faults per step" in text
    assert "conv2 bwd" in text and "top ops" in text
    png = out / f"{line['machine']}-{line['amp']}-step-profile.png"
    assert png.read_bytes()[:8] == PNG_MAGIC

    # fp32 NCHW, no loop: a second line in the same file; the GEMM rows set against the fp32 matmul
    assert cpu.run(parse([*TINY, "--amp", "none", "--no-loop", "--out-dir", str(out)])) == 0
    first, second = lines(path)
    assert first == line
    assert (second["amp"], second["layout"], second["ref_dtype"], second["loop"]) == ("none", "nchw", "fp32", None)
    assert second["ref_tflops"] == second["matmul"]["fp32"]["tflops"]
    assert "not run (--no-loop)" in capsys.readouterr().out


@pytest.mark.slow
def test_compare_malloc_runs_both_allocators_side_by_side(tmp_path, capsys):
    out = tmp_path / "cpu"
    assert cpu.run(parse([*TINY, "--amp", "bf16", "--no-loop", "--compare-malloc", "--out-dir", str(out)])) == 0
    text = capsys.readouterr().out
    assert "minor page faults per step" in text and "ms glibc" in text and "ms kept" in text
    (path,) = out.glob("*.jsonl")
    (line,) = lines(path)
    assert line["mode"] == "compare-malloc" and line["rounds"] == 1
    glibc, kept = (runs for runs in (line["runs"]["glibc_defaults"], line["runs"]["keep_freed_memory"]))
    assert len(glibc) == len(kept) == 1
    assert glibc[0]["allocator"] == f"glibc defaults ({cpu.MALLOC_ENV}=1)"
    assert kept[0]["allocator"] != glibc[0]["allocator"]
    assert "--child-json" not in glibc[0]["argv"] and "--amp" in glibc[0]["argv"]  # no temporary path recorded
    assert (out / f"{line['machine']}-{line['amp']}-step-profile.png").read_bytes()[:8] == PNG_MAGIC


def test_rounds_are_combined_by_their_medians():
    def result(img_per_s, ms):
        return {"step": {"img_per_s": img_per_s, "step_ms": 1e3 / img_per_s, "minor_faults_per_step": 10.0,
                         "tflops": 1.0, "peak_fraction": 0.5, "bf16_fraction": 0.5},
                "profile": {"wall_ms": ms, "total_ms": ms, "roots_ms": ms,
                            "rows": [{"row": "conv2 fwd", "flops": 2e9, "bytes": None, "ms": ms, "share": 1.0}]},
                "loop": None, "matmul": {"bf16": {"tflops": 2.0}}, "ref_tflops": 2.0, "copy_gb_per_s": 10.0}

    merged = cpu.median_result([result(100.0, 4.0), result(300.0, 1.0), result(200.0, 2.0)])
    assert merged["step"]["img_per_s"] == 200.0 and merged["rounds"] == 3
    (row,) = merged["profile"]["rows"]
    assert row["ms"] == 2.0 and row["tflops"] == pytest.approx(1.0) and row["peak_fraction"] == pytest.approx(0.5)
    assert cpu.median_result([result(100.0, 4.0)])["step"]["img_per_s"] == 100.0


# ----------------------------------------------------------------------------------------------- bad flags

@pytest.mark.parametrize("argv, flag", [
    (["--batch", "0"], "--batch"),
    (["--amp", "fp16"], "--amp"),
    (["--steps", "x"], "--steps"),
    (["--rounds", "0"], "--rounds"),
    (["--threads", "-2"], "--threads"),
])
def test_bad_flag_is_named(argv, flag, capsys):
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and argv[1] in err


@pytest.mark.parametrize("argv, message", [
    (["--rounds", "2"], "--rounds alternates the two allocators of --compare-malloc"),
    (["--no-loop", "--loop-train", "8"], "--loop-train sets the training loop's run: drop --no-loop"),
    (["--lr", "-1"], "--lr must be a positive number"),
    (["--data-dir", "no-such-folder"], "--no-loop"),
])
def test_bad_settings_raise_one_line_errors_before_any_work(argv, message, tmp_path):
    with pytest.raises(ValueError, match=message) as info:
        cpu.run(parse(argv + ["--out-dir", str(tmp_path / "cpu")]))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "cpu").exists()


def test_cli_prints_one_line_error(capsys):
    from torch_model.cli import main

    assert main(["bench", "cpu", "--rounds", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("alexnet bench: error: --rounds alternates")
