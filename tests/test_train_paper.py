"""`alexnet train --variant paper`: the 2012 paper's network on Fashion-MNIST (grey images repeated to 3
channels, resized to 227) with the paper's SGD (momentum 0.9, weight decay 5e-4); d2l's run keeps the seed's plain
SGD."""
import json

import pytest
import torch

from torch_model import cli
from torch_model.learners import make_learner
from torch_model.data import load_split, pixel_mean
from torch_model.checkpoint import read
from torch_model.config import resume_config
from torch_model.data import batches
from torch_model.config import TrainConfig, resolve_config
from torch_model.train import fit

from conftest import assert_close_verbose

CPU = torch.device("cpu")


def _paper(out, data, **kw):
    base = dict(variant="paper", epochs=2, batch_size=4, limit_train=4, limit_test=4, out=str(out),
                data_dir=str(data), progress=False, seed=2, amp="none")
    base.update(kw)
    return resolve_config(TrainConfig(**base))


def _history(result):
    return [{k: h[k] for k in ("epoch", "loss", "train_acc", "test_acc", "examples")} for h in result.history]


def test_paper_variant_trains_and_resumes(tmp_path, fake_data):
    full = fit(_paper(tmp_path / "full", fake_data))
    assert full.status == "completed" and len(full.history) == 2
    cfg = json.loads((tmp_path / "full" / "config.json").read_text())
    assert (cfg["variant"], cfg["resize"], cfg["momentum"], cfg["weight_decay"]) == ("paper", 227, 0.9, 5e-4)
    assert (cfg["lr"], cfg["pixels"]) == (0.001, "mean-subtracted")
    # the mean image the run subtracted is the one of the images it trained on, and both checkpoints carry it
    train_images = load_split(fake_data, "train").images[:4].to(torch.float64)          # (4, 28, 28)
    for name in ("last.pt", "best.pt"):
        assert_close_verbose(read(tmp_path / "full" / name)["pixel_mean"], train_images.mean(0),
                             atol=1e-4, rtol=0, what=f"{name} pixel_mean")
    best = read(tmp_path / "full" / "best.pt")["model"]
    assert best["0.weight"].shape == (96, 3, 11, 11) and best["22.weight"].shape == (10, 4096)
    last = read(tmp_path / "full" / "last.pt")["learner"]["optimizer"]
    assert last["param_groups"][0]["momentum"] == 0.9 and last["param_groups"][0]["weight_decay"] == 5e-4
    assert all("momentum_buffer" in s for s in last["state"].values()) and len(last["state"]) == 16

    def interrupt(epoch, row, learner):
        raise KeyboardInterrupt
    cut = fit(_paper(tmp_path / "cut", fake_data), on_epoch_end=interrupt)
    assert cut.status == "interrupted"
    with pytest.raises(ValueError, match=r"--momentum 0.5 \(recorded 0.9\)"):
        resume_config(tmp_path / "cut", {"momentum": 0.5})
    with pytest.raises(ValueError, match=r"momentum: 0\.9 -> 0\.0"):
        fit(_paper(tmp_path / "cut", fake_data, momentum=0.0, resume=True))
    resumed = fit(resume_config(tmp_path / "cut", {"progress": False}))   # what `--resume --out cut` runs
    assert _history(resumed) == _history(full)
    assert torch.equal(read(tmp_path / "cut" / "last.pt")["pixel_mean"],
                       read(tmp_path / "full" / "last.pt")["pixel_mean"])
    a = read(tmp_path / "full" / "last.pt")["learner"]
    b = read(tmp_path / "cut" / "last.pt")["learner"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["optimizer"]["state"][i]["momentum_buffer"], b["optimizer"]["state"][i]["momentum_buffer"])
               for i in a["optimizer"]["state"])


def test_a_resumed_paper_run_needs_its_recorded_mean_image(tmp_path, fake_data):
    def interrupt(epoch, row, learner):
        raise KeyboardInterrupt
    assert fit(_paper(tmp_path / "cut", fake_data, epochs=2, batch_size=2, limit_train=2, limit_test=2),
               on_epoch_end=interrupt).status == "interrupted"
    last = tmp_path / "cut" / "last.pt"
    checkpoint = read(last)
    del checkpoint["pixel_mean"]
    torch.save(checkpoint, last)
    with pytest.raises(ValueError, match=r"last\.pt: a --pixels mean-subtracted run's checkpoint without its"):
        fit(resume_config(tmp_path / "cut", {"progress": False}))


def test_mean_subtracted_pixels_are_centred_raw_values(fake_data):
    """--pixels mean-subtracted: each input pixel, over the training images, has mean 0 (the mean image subtracted
    at 28x28 and resized is the mean of the resized images: bilinear weights sum to 1), on the 0..255 scale; the
    three channels are the same grey."""
    ds = load_split(fake_data, "train")                                             # 20 random images
    mean = pixel_mean(ds)                                                           # (28, 28)
    for resize in (13, 227):                                                        # down- and upsampled
        unit = torch.cat([X for X, _ in batches(ds, 7, resize, channels=3)])           # (20, 3, R, R) in [0, 1]
        X = torch.cat([X for X, _ in batches(ds, 7, resize, channels=3, pixel_mean=mean)])  # (20, 3, R, R)
        assert X.shape == (len(ds), 3, resize, resize) and torch.equal(X[:, 0], X[:, 2])
        # float32 sums of values up to 255: tolerance a few ulps of 255
        assert_close_verbose(X.mean(0), torch.zeros_like(X[0]), atol=1e-3, rtol=0, what=f"pixel means at {resize}")
        # raw 0..255 values (not [0, 1]) minus each pixel's mean over the images
        assert_close_verbose(X, unit * 255 - (unit * 255).mean(0), atol=1e-3, rtol=0, what=f"centred at {resize}")


def test_optimizer_defaults_follow_the_variant():
    paper, d2l = resolve_config(TrainConfig(variant="paper")), resolve_config(TrainConfig())
    assert (paper.momentum, paper.weight_decay, paper.resize) == (0.9, 5e-4, 227)
    assert (d2l.momentum, d2l.weight_decay, d2l.resize) == (0.0, 0.0, 224)
    # the paper's 0.01 throws the 10-class fc8 past the class frequencies (docs/paper_variant.md): a tenth of it
    assert (paper.lr, paper.pixels, d2l.lr, d2l.pixels) == (0.001, "mean-subtracted", 0.01, "unit")
    assert resolve_config(TrainConfig(variant="paper", lr=0.01, pixels="unit")).lr == 0.01   # as asked
    with pytest.raises(ValueError, match="--pixels must be one of"):
        resolve_config(TrainConfig(pixels="centred"))
    mixed = resolve_config(TrainConfig(variant="paper", momentum=0.5))
    assert (mixed.momentum, mixed.weight_decay) == (0.5, 5e-4)
    with pytest.raises(ValueError, match="--weight-decay must be a number >= 0, got -1"):
        resolve_config(TrainConfig(weight_decay=-1.0))
    with pytest.raises(ValueError, match=r"--resize 224: the paper AlexNet takes 227\.\.258"):
        resolve_config(TrainConfig(variant="paper", resize=224))


def test_the_learners_sgd_is_torchs_with_the_papers_settings():
    torch.manual_seed(0)
    learner = make_learner("torch", 0.01, CPU, variant="paper", momentum=0.9, weight_decay=5e-4)
    assert type(learner.optimizer) is torch.optim.SGD
    reference = torch.optim.SGD(learner.net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    assert learner.optimizer.defaults == reference.defaults
    assert learner.optimizer.param_groups[0]["params"] == list(learner.net.parameters())
    X = torch.rand(2, 3, 227, 227)                          # (2, 3, 227, 227)
    assert learner.predict(X).shape == (2, 10)
    plain = make_learner("torch", 0.01, CPU, variant="paper")  # the d2l defaults when called bare: the seed's SGD
    assert (plain.optimizer.defaults["momentum"], plain.optimizer.defaults["weight_decay"]) == (0, 0)


def test_numpy_learner_gets_the_same_sgd_settings():
    learner = make_learner("numpy", 0.01, CPU, momentum=0.9, weight_decay=5e-4)
    opt = learner.optimizer.state_dict()
    assert (opt["lr"], opt["momentum"], opt["weight_decay"]) == (0.01, 0.9, 5e-4)


def test_the_triton_backend_builds_the_paper_variant():
    """The paper variant through the Triton backend: LRN and grouped convs swapped for our kernels, same parameters
    (a forward through it is tests/test_triton_paper.py's, at a reduced size: the interpreter is slow)."""
    from torch_model.learners import check_backend
    from torch_model.model import alexnet
    from triton_kernels.modules import TritonLocalResponseNorm

    check_backend("triton", "paper")
    net = alexnet(variant="paper", backend="triton", init=False)
    assert sum(isinstance(m, TritonLocalResponseNorm) for m in net) == 2


def test_paper_variant_through_numpy_ref(tmp_path, fake_data):
    """The numpy backend trains the paper network (numpy_ref.alexnet(variant="paper"), numpy_ref.SGD with the
    paper's momentum and weight decay): one step, resumable like the others."""
    result = fit(_paper(tmp_path / "np", fake_data, backend="numpy", epochs=1, batch_size=2, limit_train=2,
                        limit_test=2))
    assert result.status == "completed" and result.config.backend == "numpy"
    opt = read(tmp_path / "np" / "last.pt")["learner"]["optimizer"]
    assert (opt["momentum"], opt["weight_decay"]) == (0.9, 5e-4)
    assert [b.shape for b in opt["momentum_buffer"][:1]] == [(96, 3, 11, 11)]


def test_evaluate_feeds_a_mean_subtracted_run_as_it_was_trained(tmp_path, fake_data):
    """`alexnet evaluate` of a --pixels mean-subtracted checkpoint centres the pixels with the run's own mean image:
    its accuracy is the one the run measured on the same test images (both float32 here)."""
    from torch_model.checkpoint import load as load_for_eval
    from torch_model.evaluate import Evaluation, make_predictor, predict_dataset

    result = fit(_paper(tmp_path / "R", fake_data, epochs=1))
    ckpt = load_for_eval(tmp_path / "R" / "best.pt")
    assert ckpt.pixel_mean is not None and ckpt.pixel_mean.shape == (28, 28)
    test_ds = load_split(fake_data, "test").subset(4)
    logits = predict_dataset(make_predictor(ckpt), test_ds, 4, ckpt.resize, False, channels=3,
                             pixel_mean=ckpt.pixel_mean)
    assert Evaluation(test_ds.labels.numpy(), logits.numpy()).accuracy == result.history[-1]["test_acc"]
    blind = predict_dataset(make_predictor(ckpt), test_ds, 4, ckpt.resize, False, channels=3)
    assert not torch.allclose(blind, logits)          # [0, 1] pixels are not what this network was trained on
    checkpoint = torch.load(tmp_path / "R" / "best.pt", weights_only=True)
    del checkpoint["pixel_mean"]
    torch.save(checkpoint, tmp_path / "R" / "bare.pt")
    with pytest.raises(ValueError, match=r"bare.pt: a --pixels mean-subtracted run's checkpoint without"):
        load_for_eval(tmp_path / "R" / "bare.pt")
