"""The benchmark harness (`alexnet bench layers|train`) end to end on the CPU at tiny sizes: napkin math on known
cases, the rows appended to the results file (one per figure, a run cut short keeping its rows), bad flags.

These tests check the harness, never timings: on a CPU the Triton kernels run in the interpreter and every figure
is labelled a CPU smoke result.
"""
from __future__ import annotations

import argparse

import pytest
import torch

import triton_kernels  # noqa: F401  (first: on a CPU it sets TRITON_INTERPRET before anything imports triton)
from torch_model.bench import layers, train
from torch_model.bench.common import append_rows, format_table, read_rows
from torch_model.bench.layer_specs import alexnet_specs, paper_lrn_specs, train_step_flops
from triton_kernels.testing import PASSES, time_ms

CPU = torch.device("cpu")
# On a CUDA machine the same tests run the harness on the GPU (tiny sizes too); on a CPU, Triton is interpreted.
GPU = torch.cuda.is_available()
DEVICE = ["--device", "cuda" if GPU else "cpu", "--dtypes", "fp32"]
TINY = ["--batch", "1", "--resize", "68", "--channel-div", "16", "--warmup-ms", "1", "--rep-ms", "3"]
BASE = "cudnn" if GPU else "torch-cpu"


def parse(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"alexnet bench {module.__name__.rsplit('.', 1)[1]}")
    module.configure(parser)
    return parser.parse_args(argv)


def rows_of(out, bench: str = "layers") -> list[dict]:
    """The rows of the one results file in `out`, of one bench."""
    (path,) = out.glob("*.jsonl")
    return [r for r in read_rows(path) if r["bench"] == bench]


# ----------------------------------------------------------------------------------------------- napkin math

def test_conv1_flops_and_bytes_known_case():
    conv1, pool1, conv2 = alexnet_specs(batch=1)[:3]
    assert (conv1.name, conv1.OH, conv1.OW) == ("conv1", 54, 54)
    assert conv1.flops("fwd") == 2 * 96 * 54 * 54 * 11 * 11 * 1
    assert conv1.flops("fwd+bwd") == 2 * conv1.flops("fwd")          # input is the data: dW only, no dX
    assert conv2.flops("fwd+bwd") == 3 * conv2.flops("fwd")          # dW and dX
    assert alexnet_specs(batch=128)[0].flops() == 128 * conv1.flops()
    # pool1 forward under no_grad reads 96x54x54 and writes 96x26x26 (fp32)
    assert pool1.bytes("fwd", 4) == 4 * (96 * 54 * 54 + 96 * 26 * 26)
    assert pool1.flops() == 0
    # conv1 forward bytes: x + w + b + y
    assert conv1.bytes("fwd", 4) == 4 * (224 * 224 + 96 * 121 + 96 + 96 * 54 * 54)


def test_pool_bytes_are_what_each_kernel_moves():
    """A pool's GB/s counts the bytes its kernels really read and write. Ours: the training
    forward reads x and writes out + a 1-byte tap per output; the backward reads dy + the taps and writes dx (it
    never reads x). ATen's (the "cudnn" figures on a GPU): int64 indices always, and dx zero-filled before the
    gather writes it. pool1 at batch 128 in bf16: our backward is 96.6 MB, not the 160 MB of dy + x + dx."""
    pool1 = alexnet_specs(batch=128)[1]
    x, y = 128 * 96 * 54 * 54, 128 * 96 * 26 * 26
    fwd_train = 2 * (x + y) + 1 * y
    bwd = 2 * y + 1 * y + 2 * x
    assert pool1.bytes("fwd", 2, impl="triton") == 2 * (x + y)  # under no_grad no record is written
    assert pool1.bytes("fwd+bwd", 2, impl="triton") == fwd_train + bwd
    assert round(bwd / 1e6, 1) == 96.6 and round(fwd_train / 1e6, 1) == 96.6  # docs/triton_kernels.md's table
    assert pool1.bytes("fwd", 2, impl="compile") == 2 * (x + y)
    assert pool1.bytes("fwd+bwd", 2, impl="compile") == fwd_train + bwd  # inductor's int8 offsets
    assert pool1.bytes("fwd", 2, impl="cudnn") == 2 * (x + y) + 8 * y
    assert pool1.bytes("fwd+bwd", 2, impl="cudnn") == (2 * (x + y) + 8 * y) + (2 * y + 8 * y + 2 * 2 * x)
    assert pool1.bytes("fwd", 4, impl="torch-cpu") == 4 * (x + y)
    assert pool1.bytes("fwd+bwd", 4, impl="torch-cpu") == (4 * (x + y) + 8 * y) + (4 * y + 8 * y + 2 * 4 * x)
    conv2 = alexnet_specs(batch=1)[2]  # convs: the fewest bytes, the same whoever computes them
    assert len({conv2.bytes("fwd+bwd", 2, impl=i) for i in ("triton", "cudnn", "compile")}) == 1
    with pytest.raises(ValueError, match="impl must be one of"):
        pool1.bytes("fwd", 2, impl="cuDNN")


def test_lrn_bytes_and_flops_known_case():
    """lrn1 and lrn2 are the paper variant's two LRNs (after conv1+ReLU and conv2+ReLU on 3x227x227), and
    each implementation's bytes are what its kernels move (docs/triton_lrn.md). E elements of x, n = 5, Ep =
    N*(C+n-1)*H*W (torch's zero-padded squares). Ours: forward reads x, writes out (2E); backward reads x, dy,
    writes dx (3E). torch: forward 8 kernels, (14E + 2Ep); backward 16 kernels, (38E + 2Ep). torch.compile: one
    fused kernel under no_grad (2E); in training (5E + 2Ep) forward, (10E + Ep) backward."""
    from torch_model.model import PAPER_LRN

    lrn1, lrn2 = paper_lrn_specs(batch=128)
    assert (lrn1.name, lrn1.kind, lrn1.N, lrn1.C, lrn1.H, lrn1.W) == ("lrn1", "lrn", 128, 96, 55, 55)
    assert (lrn2.name, lrn2.N, lrn2.C, lrn2.H, lrn2.W) == ("lrn2", 128, 256, 27, 27)
    assert lrn1.lrn == (PAPER_LRN["size"], PAPER_LRN["alpha"], PAPER_LRN["beta"], PAPER_LRN["k"]) == lrn2.lrn
    assert (lrn1.F, lrn1.OH, lrn1.OW) == (96, 55, 55)  # the output has the input's shape
    E, Ep = 128 * 96 * 55 * 55, 128 * (96 + 4) * 55 * 55
    assert (E, Ep) == (37_171_200, 38_720_000)
    assert lrn1.bytes("fwd", 4, impl="triton") == 4 * 2 * E
    assert lrn1.bytes("fwd+bwd", 4, impl="triton") == 4 * (2 * E + 3 * E)
    assert lrn1.bytes("fwd", 2, impl="triton") == 2 * 2 * E  # bf16: half
    for impl in ("cudnn", "torch-cpu"):  # eager torch, on a GPU or a CPU: the same aten ops
        assert lrn1.bytes("fwd", 4, impl=impl) == 4 * (14 * E + 2 * Ep)
        assert lrn1.bytes("fwd+bwd", 4, impl=impl) == 4 * ((14 * E + 2 * Ep) + (38 * E + 2 * Ep))
    assert lrn1.bytes("fwd", 4, impl="compile") == 4 * 2 * E
    assert lrn1.bytes("fwd+bwd", 4, impl="compile") == 4 * ((5 * E + 2 * Ep) + (10 * E + Ep))
    # docs/triton_lrn.md's figures at lrn1, fp32: torch ~2.4 GB forward and ~6.0 GB backward, ours 0.30 and 0.45
    torch_bwd = lrn1.bytes("fwd+bwd", 4, impl="cudnn") - lrn1.bytes("fwd", 4, impl="cudnn")
    assert round(lrn1.bytes("fwd", 4, impl="cudnn") / 1e9, 1) == 2.4 and round(torch_bwd / 1e9, 1) == 6.0
    assert round(lrn1.bytes("fwd", 4) / 1e9, 2) == 0.30 and round(3 * 4 * E / 1e9, 2) == 0.45
    E2, Ep2 = 128 * 256 * 27 * 27, 128 * 260 * 27 * 27
    assert lrn2.bytes("fwd+bwd", 2, impl="cudnn") == 2 * (52 * E2 + 4 * Ep2)
    # FLOPs: (2n+3) per element forward, + (2n^2+6n+1) backward: 13 and 81 for n = 5
    assert lrn1.flops("fwd") == 13 * E and lrn1.flops("fwd+bwd") == (13 + 81) * E
    assert lrn2.flops("fwd") == 13 * E2
    assert lrn1.by_bytes and not alexnet_specs(batch=1)[0].by_bytes
    with pytest.raises(ValueError, match="impl must be one of"):
        lrn1.bytes("fwd", 4, impl="cuDNN")


def test_lrn_specs_are_the_paper_models_shapes():
    """lrn1/lrn2's shapes are the ones alexnet(variant="paper") really feeds its LocalResponseNorms (run on the meta
    device), at the paper's 227 and at the CPU smoke size (68, channels / 16)."""
    from torch_model.model import alexnet

    with torch.device("meta"):
        net = alexnet(variant="paper", init=False)
    last_lrn = max(i for i, m in enumerate(net) if isinstance(m, torch.nn.LocalResponseNorm))
    net = net[:last_lrn + 1]  # the layers up to lrn2 (the dense layers take only 227..258)
    for resize, div in ((227, 1), (68, 16)):
        seen = []
        hooks = [m.register_forward_hook(lambda m, i, o: seen.append((tuple(i[0].shape), tuple(o.shape))))
                 for m in net if isinstance(m, torch.nn.LocalResponseNorm)]
        with torch.no_grad():
            net(torch.empty(2, 3, resize, resize, device="meta"))
        for h in hooks:
            h.remove()
        specs = paper_lrn_specs(batch=2, resize=resize, channel_div=div)
        assert [s.name for s in specs] == ["lrn1", "lrn2"] and len(seen) == 2
        for spec, (x_shape, y_shape) in zip(specs, seen):
            assert x_shape == y_shape
            assert (spec.N, spec.C * div, spec.H, spec.W) == x_shape
    assert [(s.C, s.H) for s in paper_lrn_specs(1, 68, 16)] == [(6, 15), (16, 7)]
    with pytest.raises(ValueError, match="--resize 10: the paper variant's conv1 gets a 10x10 input"):
        paper_lrn_specs(batch=1, resize=10)


def test_train_step_flops_by_hand():
    convs = [(1, 96, 54, 11), (96, 256, 26, 5), (256, 384, 12, 3), (384, 384, 12, 3), (384, 256, 12, 3)]
    fwd = [2 * f * o * o * c * k * k for c, f, o, k in convs]
    fcs = [2 * 6400 * 4096, 2 * 4096 * 4096, 2 * 4096 * 10]
    by_hand = 2 * fwd[0] + 3 * sum(fwd[1:]) + 3 * sum(fcs)
    assert train_step_flops(1) == by_hand
    assert train_step_flops(128) == 128 * by_hand
    assert 5.5e9 < by_hand < 5.6e9  # ~5.56 GFLOP per image, the figure the docs quote


def test_specs_are_the_models_shapes():
    """The shapes the benchmark times are the ones the seed model really produces."""
    from torch_model.model import alexnet

    net = alexnet(init=False).eval()
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((tuple(i[0].shape), tuple(o.shape))))
             for m in net if isinstance(m, (torch.nn.Conv2d, torch.nn.MaxPool2d, torch.nn.Linear))]
    with torch.no_grad():
        net(torch.rand(1, 1, 224, 224))
    for h in hooks:
        h.remove()
    specs = alexnet_specs(batch=1)
    assert [s.name for s in specs] == ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5",
                                       "fc6", "fc7", "fc8"]
    for spec, (x_shape, y_shape) in zip(specs, seen):
        if spec.kind == "linear":
            assert (spec.C, spec.F) == (x_shape[1], y_shape[1])
        else:
            assert (spec.N, spec.C, spec.H, spec.W) == x_shape
            assert (spec.N, spec.F, spec.OH, spec.OW) == y_shape
    small = alexnet_specs(batch=1, resize=68, channel_div=16)
    assert all(s.OH >= 1 for s in small) and small[0].C == 1 and small[0].F == 6
    with pytest.raises(ValueError, match="--resize 40"):
        alexnet_specs(batch=1, resize=40)


def test_cpu_timer_median_and_spread():
    t = time_ms(lambda: torch.ones(64, 64) @ torch.ones(64, 64), CPU, repeat=7)
    assert 0 < t["ms_p20"] <= t["ms"] <= t["ms_p80"]
    assert "CPU" in t["timer"]


# ----------------------------------------------------------------------------------------------- results file

def test_rows_are_appended_one_line_each(tmp_path):
    """append_rows adds one JSON line per row (NaN written as null), after what is there, even when the file's
    last line lacks its newline."""
    path = tmp_path / "results" / "h200.jsonl"
    append_rows(path, [{"layer": "conv1", "ms": 1.0}, {"layer": "pool1", "ms": float("nan")}])
    with open(path, "a") as f:
        f.write('{"layer": "conv2", "ms": 2.0}')  # a line someone wrote without its newline
    append_rows(path, [{"layer": "conv3", "ms": 3.0}])
    assert read_rows(path) == [{"layer": "conv1", "ms": 1.0}, {"layer": "pool1", "ms": None},
                               {"layer": "conv2", "ms": 2.0}, {"layer": "conv3", "ms": 3.0}]
    assert path.read_text().count("\n") == 4


# ----------------------------------------------------------------------------------------------- end to end

def test_layers_end_to_end_with_triton_in_the_interpreter(tmp_path, capsys):
    out = tmp_path / "results"
    args = parse(layers, ["--layers", "conv3,pool5", "--layouts", "nchw", "--impls", "triton,cudnn",
                          "--repeat", "1", "--out-dir", str(out), "--no-progress", *DEVICE, *TINY])
    assert layers.run(args) == 0
    text = capsys.readouterr().out
    (path,) = out.glob("*.jsonl")
    rows = rows_of(out)
    assert path.name == f"{rows[0]['machine']}.jsonl" and len({r["started"] for r in rows}) == 1
    if not GPU:
        assert "NOT GPU results" in text
        assert all(r["cpu"] is True and r["machine"].startswith("cpu-") for r in rows)
        peak = rows[0]["peak"]
        assert peak["bf16_matmul_tflops"] is None and peak["fp32_matmul_tflops"] > 0 and "CPU machine" in peak["how"]
    got = {(e["layer"], e["pass"], e["impl"]) for e in rows}
    assert got == {(l, p, i) for l in ("conv3", "pool5") for p in PASSES for i in ("triton", BASE)}
    for e in rows:
        assert e["dtype"] == "fp32" and e["layout"] == "nchw" and e["batch"] == 1 and e["ms"] > 0
        assert e["err_ok"] is True, f"{e['layer']} {e['pass']} {e['impl']}: rel_err {e['rel_err']}"
        assert e["interpreter"] is (not GPU and e["impl"] == "triton")
        spec = {s.name: s for s in alexnet_specs(1, 68, 16)}[e["layer"]]
        assert e["flops"] == spec.flops(e["pass"]) and e["bytes"] == spec.bytes(e["pass"], 4, impl=e["impl"])
        if e["layer"] == "conv3":
            assert e["tflops"] == pytest.approx(e["flops"] / (e["ms"] * 1e9))
            assert e["peak_fraction"] == pytest.approx(e["tflops"] / e["peak"]["fp32_matmul_tflops"])
        else:
            assert e["tflops"] is None
            assert e["peak_fraction"] == pytest.approx(e["gb_per_s"] / (e["peak"]["copy_tb_per_s"] * 1e3))
    # the printed table: one line per figure, x BASE = the baseline's time over this one's
    lines = {tuple(line.split()[:4]): line.split() for line in text.splitlines() if line.startswith(("conv3", "pool5"))}
    assert set(lines) == {(l, "fp32", p, i) for l, p, i in got}
    assert all(line[-2] == "1.00" for key, line in lines.items() if key[3] == BASE)  # x BASE of BASE itself
    # a second run appends its rows to the same file
    assert layers.run(parse(layers, ["--layers", "pool5", "--impls", "cudnn", "--passes", "fwd", "--layouts", "nchw",
                                     "--repeat", "1", "--out-dir", str(out), "--no-progress", *DEVICE, *TINY])) == 0
    again = rows_of(out)
    assert again[:len(rows)] == rows and len(again) == len(rows) + 1


def test_lrn_layers_end_to_end_in_the_interpreter(tmp_path, capsys):
    """lrn1 and lrn2 (the paper variant's LRNs, tiny on a CPU) through `bench layers`: ours in the
    interpreter against torch's F.local_response_norm, forward and forward+backward, each checked against float64
    and its GB/s counted from its own traffic."""
    out = tmp_path / "results"
    args = parse(layers, ["--layers", "lrn1,lrn2", "--layouts", "nchw", "--impls", "triton,cudnn", "--repeat", "1",
                          "--out-dir", str(out), "--no-progress", *DEVICE, *TINY])
    assert layers.run(args) == 0
    assert "lrn1, lrn2: the paper variant's, input 68x68" in capsys.readouterr().out
    rows = rows_of(out)
    assert all(r["lrn_resize"] == 68 for r in rows)
    got = {(e["layer"], e["pass"], e["impl"]) for e in rows}
    assert got == {(l, p, i) for l in ("lrn1", "lrn2") for p in PASSES for i in ("triton", BASE)}
    specs = {s.name: s for s in paper_lrn_specs(1, 68, 16)}
    for e in rows:
        spec = specs[e["layer"]]
        assert e["kind"] == "lrn" and e["err_ok"] is True, f"{e['layer']} {e['pass']} {e['impl']}: {e['rel_err']}"
        assert e["shape"]["C"] == spec.C and e["shape"]["size"] == 5 and e["shape"]["k"] == 2.0
        assert e["bytes"] == spec.bytes(e["pass"], 4, impl=e["impl"]) and e["flops"] == spec.flops(e["pass"])
        assert e["tflops"] is None and e["gb_per_s"] == pytest.approx(e["bytes"] / (e["ms"] * 1e6))
        assert e["peak_fraction"] == pytest.approx(e["gb_per_s"] / (e["peak"]["copy_tb_per_s"] * 1e3))
        assert e["floor_ms"] == pytest.approx(e["bytes"] / (e["peak"]["copy_tb_per_s"] * 1e9))
    bytes_of = {(e["layer"], e["pass"], e["impl"]): e["bytes"] for e in rows}
    assert bytes_of[("lrn1", "fwd", BASE)] > 6 * bytes_of[("lrn1", "fwd", "triton")]  # torch's 8 kernels vs our 1


def test_layers_help_says_lrns_are_the_paper_variants():
    parser = argparse.ArgumentParser(prog="alexnet bench layers")
    layers.configure(parser)
    text = " ".join(parser.format_help().split())
    assert "lrn1,lrn2 are the paper variant's two local response normalizations (d2l's model has none)" in text
    assert parse(layers, []).layers == list(layers.LAYERS)  # they run by default, after d2l's eight layers
    assert layers.LAYERS[-2:] == ("lrn1", "lrn2") and layers.PASSES == PASSES


def test_train_end_to_end_then_layers_append_to_one_file(tmp_path, fake_data, capsys):
    out = tmp_path / "results"
    args = parse(train, ["--impls", "torch", "--steps", "1", "--batch", "1", "--seed-run",
                         "--data-dir", str(fake_data), "--limit-train", "2", "--limit-test", "2",
                         "--out-dir", str(out), "--no-progress", *DEVICE])
    assert train.run(args) == 0
    (step,) = rows_of(out, "train")
    assert (step["impl"], step["dtype"], step["batch"], step["layout"]) == ("torch", "fp32", 1, "nchw")
    assert step["img_per_s"] == pytest.approx(1e3 / step["step_ms"])
    assert step["tflops"] == pytest.approx(train_step_flops(1) / step["step_ms"] / 1e9)
    assert step["conv_dtypes"] == ["float32"] and step["first_loss"] > 0
    (seed,) = rows_of(out, "train --seed-run")
    assert (seed["impl"], seed["epochs"], seed["limit_train"]) == ("torch", 1, 2)
    assert seed["seconds"] > 0 and 0 <= seed["test_acc"] <= 1 and seed["status"] == "completed"
    assert "test acc" in capsys.readouterr().out

    # a layers run appends to the same file, beside the train rows
    assert layers.run(parse(layers, ["--layers", "pool1", "--impls", "cudnn", "--passes", "fwd", "--repeat", "1",
                                     "--out-dir", str(out), "--no-progress", *DEVICE, *TINY])) == 0
    assert sorted(e["layout"] for e in rows_of(out)) == ["channels_last", "nchw"]
    assert rows_of(out, "train") == [step]

    # a channels_last train figure is one more row, and the table shows both
    assert train.run(parse(train, ["--backends", "torch", "--steps", "1", "--batch", "1", "--layouts",
                                   "channels_last", "--out-dir", str(out), "--no-progress", *DEVICE])) == 0
    steps = rows_of(out, "train")
    assert [e["layout"] for e in steps] == ["nchw", "channels_last"]
    assert "channels_last" in format_table(*train.step_rows(steps))


def test_triton_train_impl_is_wired():
    """The train bench's triton learner really runs our kernels (the step itself at 224x224 is minutes in the
    interpreter; the layers test above times the same kernels at tiny sizes)."""
    from triton_kernels.modules import TritonConv2d

    learner = train.make_bench_learner("triton", "fp32", 0.01, CPU, "max-autotune")
    assert sum(isinstance(m, TritonConv2d) for m in learner.net.modules()) == 5


# ----------------------------------------------------------------------------------------------- bad flags

@pytest.mark.parametrize("module, argv, flag", [
    (layers, ["--layers", "conv9"], "--layers"),
    (layers, ["--dtypes", "fp16"], "--dtypes"),
    (layers, ["--passes", "bwd"], "--passes"),
    (layers, ["--impls", "cublas"], "--impls"),
    (layers, ["--batch", "0"], "--batch"),
    (layers, ["--compile-mode", "fast"], "--compile-mode"),
    (train, ["--impls", "jax"], "--impls"),
    (train, ["--backends", "jax"], "--impls/--backends"),
    (train, ["--steps", "-1"], "--steps"),
])
def test_bad_flag_is_named(module, argv, flag, capsys):
    with pytest.raises(SystemExit) as info:
        parse(module, argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and argv[1] in err


@pytest.mark.parametrize("module, argv, message", [
    (layers, ["--dtypes", "bf16"], "--dtypes bf16: on a CPU only fp32"),
    (train, ["--dtypes", "tf32"], "--dtypes tf32: on a CPU only fp32"),
    (train, ["--epochs", "3"], "--epochs is a --seed-run setting"),
    (train, ["--impls", "compile"], "--impls: nothing left"),
    pytest.param(layers, ["--device", "cuda"], "--device cuda: CUDA is not available",
                 marks=pytest.mark.skipif(GPU, reason="this machine has CUDA")),
    (layers, ["--resize", "40"], "--resize 40"),
])
def test_bad_settings_raise_value_error_naming_the_flag(module, argv, message, tmp_path):
    device = [] if "--device" in argv else ["--device", "cpu"]
    args = parse(module, argv + ["--out-dir", str(tmp_path), "--no-progress", *device])
    with pytest.raises(ValueError, match=message.replace("+", r"\+")):
        module.run(args)
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_cli_prints_one_line_error(capsys):
    from torch_model.cli import main

    assert main(["bench", "layers", "--dtypes", "bf16", "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("alexnet bench: error: --dtypes bf16")


def test_a_failing_or_wrong_figure_is_recorded_and_fails_the_run(tmp_path, monkeypatch, capsys):
    """A kernel that raises costs only its own figure; one that computes a wrong result keeps its time but is
    marked err_ok false and makes the exit status 1 (never a silent success)."""
    real = layers.make_op

    def broken(spec, impl, dtype, mode):
        op = real(spec, "cudnn", dtype, mode)
        if impl != "triton":
            return op
        if spec.kind == "conv":
            def raises(*args):
                raise RuntimeError("boom")
            return raises
        return lambda x: op(x) * 1.5  # wrong by 50%

    monkeypatch.setattr(layers, "make_op", broken)
    out = tmp_path / "results"
    args = parse(layers, ["--layers", "conv3,pool5", "--passes", "fwd", "--impls", "triton,cudnn", "--layouts",
                          "nchw", "--repeat", "1", "--out-dir", str(out), "--no-progress", *DEVICE, *TINY])
    assert layers.run(args) == 1
    err = capsys.readouterr().err
    assert "conv3 fp32 fwd triton nchw: RuntimeError: boom" in err and "pool5 fp32 fwd triton nchw: WRONG" in err
    got = {(e["layer"], e["impl"]): e["err_ok"] for e in rows_of(out)}
    assert got == {("conv3", BASE): True, ("pool5", "triton"): False, ("pool5", BASE): True}


def test_a_run_cut_short_keeps_what_it_measured(tmp_path, monkeypatch):
    """Each figure is appended as it is measured, so a GPU run killed by a timeout still leaves its figures."""
    real, calls = layers.measure_one, []

    def interrupted_after_one(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(layers, "measure_one", interrupted_after_one)
    out = tmp_path / "results"
    args = parse(layers, ["--layers", "pool5", "--impls", "cudnn", "--repeat", "1", "--out-dir", str(out),
                          "--no-progress", *DEVICE, *TINY])
    with pytest.raises(KeyboardInterrupt):
        layers.run(args)
    assert len(rows_of(out)) == 1
