"""torch_model.learners.NumpyLearner: the training step equals the torch learner's, resume is bit-exact,
and `alexnet train --backend numpy` runs end to end with the same outputs as the torch backend."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torch_model import alexnet as torch_alexnet
from torch_model.learners import make_learner
from torch_model.learners import NumpyLearner
from torch_model.config import TrainConfig, resolve_config
from torch_model.train import fit

CPU = torch.device("cpu")


def _batch(seed: int, n: int = 2):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 224, 224, generator=g), torch.randint(0, 10, (n,), generator=g)  # (N, 1, R, R), (N,)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def test_numpy_step_equals_torch_step_float32():
    """One SGD step with dropout off (eval mode), so both learners compute the same function. Loss and logits
    agree to float32 accuracy; each weight's update is measured against a float64 torch step and must be
    within 2x torch float32's own error (or 1e-5 of the update's scale: float32's floor)."""
    torch.manual_seed(0)
    nl = make_learner("numpy", 0.05, CPU, seed=0)
    torch.manual_seed(0)
    tl = make_learner("torch", 0.05, CPU, seed=0)
    w0 = tl.model_state_dict()
    w0 = {k: v.clone() for k, v in w0.items()}
    n0 = nl.model_state_dict()  # (a copy of every weight: call it once)
    for k, v in w0.items():
        assert torch.equal(n0[k], v), f"{k}: the learners should start from the same weights"
    ref = torch_alexnet().double().eval()
    ref.load_state_dict(w0)
    nl.eval()
    tl.eval()
    X, y = _batch(0, n=1)
    nloss, nlogits = nl.step(X, y)
    tloss, tlogits = tl.step(X, y)
    ref_logits = ref(X.double())
    F.cross_entropy(ref_logits, y).backward()
    assert isinstance(nloss, float) and nlogits.dtype == torch.float32 and nlogits.shape == (1, 10)
    assert abs(nloss - tloss) <= 1e-5 * abs(tloss), f"loss {nloss} vs torch {tloss}"
    assert _rel(nlogits, ref_logits) < 1e-5, f"logits differ from float64 by {_rel(nlogits, ref_logits):.3g}"
    n1, t1 = nl.model_state_dict(), tl.model_state_dict()
    for name, p in ref.named_parameters():
        update = -0.05 * p.grad                                                # the float64 step
        ours = _rel(n1[name].double() - w0[name].double(), update)
        theirs = _rel(t1[name].double() - w0[name].double(), update)
        assert ours <= max(2 * theirs, 1e-5), f"{name}: update error {ours:.3g}, torch float32's {theirs:.3g}"
    X, _ = _batch(9, n=1)
    assert _rel(nl.predict(X), tl.predict(X)) < 1e-4


def test_resume_is_bit_exact_with_dropout():
    torch.manual_seed(1)
    a = make_learner("numpy", 0.01, CPU, seed=7)
    a.train()
    a.step(*_batch(0, n=1))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)                 # what train.py writes into last.pt
    buf.seek(0)
    state = torch.load(buf, weights_only=True)      # tensors and plain Python values only
    loss_a, logits_a = a.step(*_batch(1, n=1))

    torch.manual_seed(2)                            # other initial weights and another dropout seed...
    b = make_learner("numpy", 0.01, CPU, seed=8)
    b.train()
    b.load_state_dict(state)                        # ...all replaced by the checkpoint
    loss_b, logits_b = b.step(*_batch(1, n=1))
    assert loss_a == loss_b and torch.equal(logits_a, logits_b)
    b_state = b.model_state_dict()
    for k, v in a.model_state_dict().items():
        assert torch.equal(b_state[k], v), k


def test_learner_refuses_bad_batches():
    learner = NumpyLearner({k: v for k, v in make_learner("torch", 0.1, CPU).model_state_dict().items()}, lr=0.1)
    assert learner.device == CPU
    with pytest.raises(ValueError, match="4-D"):
        learner.step(torch.rand(1, 224, 224), torch.tensor([1]))
    with pytest.raises(ValueError, match="in_features=6400"):
        learner.step(torch.rand(1, 1, 96, 96), torch.tensor([1]))   # AlexNet's classifier needs 224x224
    with pytest.raises(ValueError, match="target"):
        learner.step(torch.rand(1, 1, 224, 224), torch.tensor([10]))


def test_alexnet_train_numpy_backend_end_to_end(fake_data, tmp_path):
    """A tiny run on fake IDX files through train.fit (the code every backend shares), then --resume."""
    cfg = dict(epochs=1, batch_size=2, limit_train=2, limit_test=2, device="cpu", backend="numpy",
               data_dir=str(fake_data), out=str(tmp_path / "run"), progress=False)
    result = fit(resolve_config(TrainConfig(**cfg)))
    assert result.status == "completed" and len(result.history) == 1
    row = result.history[0]
    assert np.isfinite(row["loss"]) and 0 <= row["test_acc"] <= 1 and row["examples"] == 2
    resumed = fit(resolve_config(TrainConfig(**{**cfg, "epochs": 2, "resume": True})))
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert {"last.pt", "best.pt", "config.json"} <= {p.name for p in (tmp_path / "run").iterdir()}
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert best["model"]["0.weight"].shape == (96, 1, 11, 11) and best["model"]["0.weight"].dtype == torch.float32


def test_paper_variant_learner_steps_like_torch_sgd_with_weight_decay():
    """NumpyLearner(variant="paper", momentum=0.9, weight_decay=5e-4) hands the settings to numpy_ref.SGD
    (whose update is held to torch.optim.SGD's in tests/test_numpy_model.py); one step (dropout off) moves every
    weight of the paper network like torch.optim.SGD with the same settings, to float32 accuracy."""
    torch.manual_seed(0)
    ref = torch_alexnet(num_classes=4, variant="paper").double().eval()
    w0 = {k: v.float() for k, v in ref.state_dict().items()}
    nl = NumpyLearner(w0, lr=0.01, num_classes=4, seed=0, variant="paper", momentum=0.9, weight_decay=5e-4)
    assert (nl.optimizer.momentum, nl.optimizer.weight_decay) == (0.9, 5e-4)
    ref.load_state_dict(w0)  # the float32 weights, so both start from the same numbers
    opt = torch.optim.SGD(ref.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    nl.eval()
    X = torch.rand(1, 3, 227, 227, generator=torch.Generator().manual_seed(5)) * 255 - 128  # (1, 3, 227, 227)
    y = torch.tensor([2])
    loss, logits = nl.step(X, y)
    tloss = F.cross_entropy(ref(X.double()), y)
    tloss.backward()
    opt.step()
    assert logits.shape == (1, 4) and abs(loss - tloss.item()) <= 1e-5 * abs(tloss.item()), (loss, tloss.item())
    state = nl.model_state_dict()
    assert list(state) == list(w0)
    for name, p in ref.named_parameters():
        moved = (p.detach() - w0[name].double()).abs().max()
        err = (state[name].double() - p.detach()).abs().max()
        ulp = float(np.finfo(np.float32).eps) * p.detach().abs().max()         # float32 can hold no better
        assert moved > 0 and err <= 1e-3 * moved + ulp, f"{name}: off by {err:.3g} of a {moved:.3g} move"
