"""torch_model/device.py: each decision about where and how training computes is made once, and the CPU's
default precision follows what the CPU computes natively."""
from pathlib import Path

import pytest
import torch

from torch_model import device as D
from torch_model.learners import make_learner
from torch_model.config import QUICK_LIMIT_TRAIN, TrainConfig, quick_limit_train, resolve_config

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_default_backend():
    assert D.default_backend(CUDA) == "triton" and D.default_backend(CPU) == "torch"
    assert D.default_backend(CUDA, "paper") == "triton"
    assert resolve_config(TrainConfig(device="cpu")).backend == "torch"


@pytest.mark.parametrize("amp, backend, device, channels_last, message", [
    ("fp16", "torch", CPU, False, "--amp must be one of"),
    ("bf16", "numpy", CPU, False, "--amp bf16 and --channels-last are for the torch and triton backends"),
    ("none", "numpy", CPU, True, "--amp bf16 and --channels-last are for the torch and triton backends"),
    ("bf16", "triton", CPU, False, r"cannot compute in bfloat16 \(dtype torch.bfloat16\)"),
])
def test_check_amp_refuses(amp, backend, device, channels_last, message):
    with pytest.raises(ValueError, match=message):
        D.check_amp(amp, backend, device, channels_last)
    # the training config and the learner factory ask the same function
    with pytest.raises(ValueError, match=message):
        make_learner(backend, 0.01, device, amp=amp, channels_last=channels_last)
    with pytest.raises(ValueError, match=message):
        resolve_config(TrainConfig(device="cpu", backend=backend, amp=amp, channels_last=channels_last))


def test_check_amp_accepts():
    for amp, backend, device in (("bf16", "torch", CPU), ("bf16", "triton", CUDA), ("none", "triton", CPU),
                                 ("none", "numpy", CPU), ("bf16", "torch", CUDA)):
        D.check_amp(amp, backend, device)


def test_cpu_bf16_detection_matches_cpuinfo():
    flags = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    feature = D.cpu_bf16_native()
    if flags & {"amx_bf16", "avx512_bf16"}:
        assert feature in flags & {"amx_bf16", "avx512_bf16"}
    elif cpuinfo.exists():
        assert feature is None or "bf16" in feature or "amx" in feature


@pytest.mark.parametrize("feature", ["avx512_bf16", None])
def test_cpu_default_precision(monkeypatch, feature):
    monkeypatch.setattr(D, "cpu_bf16_native", lambda: feature)
    amp, channels_last, why = D.cpu_default_amp(CPU, "torch")
    assert (amp, channels_last) == (("bf16", True) if feature else ("none", False))
    assert (feature or "no native bf16") in why
    assert D.cpu_default_amp(CUDA, "torch")[:2] == ("none", False)          # a GPU keeps the seed's fp32
    assert D.cpu_default_amp(CPU, "numpy")[:2] == ("none", False)
    cfg = resolve_config(TrainConfig(device="cpu"))
    assert (cfg.amp, cfg.channels_last) == (amp, channels_last)
    assert quick_limit_train(cfg) == QUICK_LIMIT_TRAIN[(amp, channels_last)]
    fp32 = resolve_config(TrainConfig(device="cpu", amp="none"))            # --amp none: the seed's fp32 NCHW run
    assert (fp32.amp, fp32.channels_last) == ("none", False)
    assert quick_limit_train(fp32) == QUICK_LIMIT_TRAIN[("none", False)]
    explicit = resolve_config(TrainConfig(device="cpu", amp="none", channels_last=True))
    assert (explicit.amp, explicit.channels_last) == ("none", True)


@pytest.mark.parametrize("feature", ["avx512_bf16", None])
def test_quick_preset_spends_its_minutes_on_the_configuration_that_runs(monkeypatch, feature):
    from torch_model import cli, train

    monkeypatch.setattr(D, "cpu_bf16_native", lambda: feature)
    parse = cli.build_parser("train").parse_args
    cfg = train.config_from_args(parse(["--device", "cpu"]))
    expected = ("bf16", True) if feature else ("none", False)
    assert (cfg.preset, cfg.epochs, cfg.amp, cfg.channels_last) == ("quick", 1, *expected)
    assert cfg.limit_train == QUICK_LIMIT_TRAIN[expected] and cfg.limit_test is None
    fp32 = train.config_from_args(parse(["--device", "cpu", "--amp", "none"]))
    assert (fp32.amp, fp32.channels_last, fp32.limit_train) == ("none", False, QUICK_LIMIT_TRAIN[("none", False)])
    assert train.config_from_args(parse(["--device", "cpu", "--limit-train", "64"])).preset == "quick+flags"
