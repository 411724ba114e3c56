"""numpy_ref's layers, SGD and AlexNet against torch: the whole network at 224x224 in float64, SGD steps,
and the module bookkeeping (state_dict / grad_dict / load_state_dict / train / eval)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import numpy_ref
from numpy_ref.functional import cross_entropy_backward, cross_entropy_forward
from conftest import assert_rel
from torch_model import alexnet as torch_alexnet


def _check_whole_model(variant: str, x: np.ndarray, y: np.ndarray, num_classes: int,
                       dropouts: tuple[int, int]) -> numpy_ref.Sequential:
    """Logits, loss and every parameter gradient within 1e-10 of torch_model.alexnet(variant=...) from the same
    weights, dropout in training mode with the same masks on both sides (numpy's masks are fed into torch's
    layers: `dropouts` are their indices)."""
    torch.manual_seed(0)
    tnet = torch_alexnet(num_classes=num_classes, variant=variant).double().train()
    net = numpy_ref.alexnet(num_classes, dtype=np.float64, seed=1, variant=variant, init=False).train()
    net.load_state_dict({k: v.numpy() for k, v in tnet.state_dict().items()})

    logits = net.forward(x)                                                   # (N, classes)
    masks = {i: net[i]._cache[0] for i in dropouts}                           # the Dropout layers' masks
    loss, cache = cross_entropy_forward(logits, y)
    net.backward(cross_entropy_backward(1.0, cache))

    hooks = [tnet[i].register_forward_hook(lambda m, inp, out, i=i: inp[0] * torch.from_numpy(masks[i]))
             for i in masks]
    tlogits = tnet(torch.from_numpy(x))
    tloss = nn.functional.cross_entropy(tlogits, torch.from_numpy(y))
    tloss.backward()
    for h in hooks:
        h.remove()
    assert all(0.3 < (m == 0).mean() < 0.7 for m in masks.values()), "dropout masks should drop about half"

    assert_rel(logits, tlogits, 1e-10, f"{variant} logits")
    assert abs(float(loss) - tloss.item()) <= 1e-10 * abs(tloss.item()), (float(loss), tloss.item())
    grads = net.grad_dict()
    assert list(grads) == [k for k, _ in tnet.named_parameters()]
    for name, p in tnet.named_parameters():
        assert_rel(grads[name], p.grad, 1e-10, f"{variant} d{name}")
    return net


def test_alexnet_matches_torch_model_float64_224_batch2():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (2, 1, 224, 224))                                   # (N, 1, 224, 224), like images
    _check_whole_model("d2l", x, np.array([3, 8]), 10, dropouts=(16, 19))


def test_paper_alexnet_matches_torch_paper_variant_float64_227_batch1():
    """The 2012 paper's network (LRN, groups, its N(0, 0.01) init), the same checks. The input is in pixel
    units minus the mean, as the paper fed it, so that the LRN's neighbours matter against its k = 2."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-128, 128, (1, 3, 227, 227))                              # (N, 3, 227, 227)
    net = _check_whole_model("paper", x, np.array([4]), 5, dropouts=(18, 21))
    a = net[1].forward(net[0].forward(x))                                     # conv1 + ReLU, what LRN 1 sees
    b = net[2].forward(a)
    assert np.abs(a / 2.0 ** 0.75 - b).max() > 1e-3 * np.abs(b).max(), "LRN should do more than divide by k^beta"


def test_alexnet_structure_matches_torch():
    tnet = torch_alexnet(num_classes=7)
    net = numpy_ref.alexnet(num_classes=7)
    tstate = tnet.state_dict()
    assert list(net.state_dict()) == list(tstate)
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: tuple(v.shape) for k, v in tstate.items()}
    assert numpy_ref.num_parameters(net) == sum(p.numel() for p in tnet.parameters())
    assert all(v.dtype == np.float32 for v in net.state_dict().values())
    # d2l's init: xavier-uniform weights, bounded by sqrt(6 / (fan_in + fan_out))
    w = net.state_dict()["3.weight"]                                          # (256, 96, 5, 5)
    bound = np.sqrt(6 / (96 * 25 + 256 * 25))
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound and abs(w.mean()) < 0.01 * bound
    with pytest.raises(ValueError, match="num_classes"):
        numpy_ref.alexnet(num_classes=0)


@pytest.mark.parametrize("variant", ["d2l", "paper"])
def test_layer_names_are_the_papers_and_the_same_for_numpy_and_torch(variant):
    from numpy_ref.model import layer_names

    names = layer_names(numpy_ref.alexnet(variant=variant, init=False))
    assert names == layer_names(torch_alexnet(variant=variant, init=False))
    lrn = ["lrn1"] if variant == "paper" else []
    assert names[:4 + len(lrn)] == ["conv1", "relu1", *lrn, "pool1", "conv2"]
    assert names[-9:] == ["pool5", "flatten", "fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8"]
    with pytest.raises(ValueError, match="BatchNorm2d"):
        layer_names([nn.BatchNorm2d(3)])


def test_paper_alexnet_structure_and_init_match_torch():
    tnet = torch_alexnet(num_classes=1000, variant="paper")
    net = numpy_ref.alexnet(variant="paper", num_classes=1000, seed=0)
    tstate = tnet.state_dict()
    assert list(net.state_dict()) == list(tstate)
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: tuple(v.shape) for k, v in tstate.items()}
    assert numpy_ref.num_parameters(net) == sum(p.numel() for p in tnet.parameters()) == 60_965_224
    assert [type(m).__name__ for m in net] == [type(m).__name__ for m in tnet]
    assert [m.groups for m in net if isinstance(m, numpy_ref.Conv2d)] == [1, 2, 1, 2, 2]
    lrns = [m for m in net if isinstance(m, numpy_ref.LocalResponseNorm)]
    assert [(m.size, m.alpha, m.beta, m.k) for m in lrns] == [(5, 5e-4, 0.75, 2.0)] * 2
    # the paper's init, as torch_model's: N(0, 0.01) weights, biases 1 in conv2, conv4, conv5, fc6, fc7, else 0
    state = net.state_dict()
    for key in ("0", "4", "8", "10", "12", "16", "19", "22"):
        assert abs(state[f"{key}.weight"].std() - 0.01) < 1e-3 and abs(state[f"{key}.weight"].mean()) < 1e-3
        assert np.array_equal(state[f"{key}.bias"], tstate[f"{key}.bias"].numpy()), f"{key}.bias"
    shapes, x = [], np.zeros((1, 3, 227, 227), dtype=np.float32)
    for layer in net:
        x = layer.forward(x)
        shapes.append(x.shape[1:])
    assert shapes[3] == (96, 27, 27) and shapes[7] == (256, 13, 13) and shapes[14] == (256, 6, 6)
    assert shapes[22] == (1000,)
    with pytest.raises(ValueError, match="variant"):
        numpy_ref.alexnet(variant="caffe")


def _small_pair(seed: int):
    """The same small network in numpy_ref (float64) and in torch, same weights."""
    torch.manual_seed(seed)
    tnet = nn.Sequential(
        nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(6, 4, 3, padding=1, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(16, 5),
    ).double()
    net = numpy_ref.Sequential(
        numpy_ref.Conv2d(3, 6, 3, stride=2, padding=1, dtype=np.float64), numpy_ref.ReLU(),
        numpy_ref.MaxPool2d(3, 2, ceil_mode=True),
        numpy_ref.Conv2d(6, 4, 3, padding=1, groups=2, dtype=np.float64), numpy_ref.ReLU(),
        numpy_ref.Flatten(), numpy_ref.Linear(16, 5, dtype=np.float64),
    )
    net.load_state_dict({k: v.numpy() for k, v in tnet.state_dict().items()})
    return net, tnet


@pytest.mark.parametrize("opts", [dict(), dict(momentum=0.9, weight_decay=1e-3), dict(momentum=0.9, weight_decay=5e-4),
                                  dict(momentum=0.8, dampening=0.1), dict(momentum=0.9, nesterov=True)])
def test_sgd_steps_match_torch_sgd(opts):
    net, tnet = _small_pair(0)
    opt = numpy_ref.SGD(net.parameters(), lr=0.05, **opts)
    topt = torch.optim.SGD(tnet.parameters(), lr=0.05, **opts)
    rng = np.random.default_rng(1)
    for step in range(4):
        x = rng.standard_normal((4, 3, 9, 9))                                 # (N, C, H, W)
        y = rng.integers(0, 5, 4)                                             # (N,)
        opt.zero_grad()
        loss, cache = cross_entropy_forward(net.forward(x), y)
        net.backward(cross_entropy_backward(1.0, cache))
        opt.step()
        topt.zero_grad()
        tloss = nn.functional.cross_entropy(tnet(torch.from_numpy(x)), torch.from_numpy(y))
        tloss.backward()
        topt.step()
        assert abs(float(loss) - tloss.item()) < 1e-12, f"step {step}: loss {float(loss)} vs {tloss.item()}"
        state = net.state_dict()
        for name, p in tnet.named_parameters():
            assert_rel(state[name], p, 1e-12, f"step {step} {name} after SGD {opts}")


def test_sgd_state_dict_round_trip_and_checks():
    net, _ = _small_pair(1)
    opt = numpy_ref.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x, y = np.random.default_rng(0).standard_normal((2, 3, 9, 9)), np.array([1, 2])
    _, cache = cross_entropy_forward(net.forward(x), y)
    net.backward(cross_entropy_backward(1.0, cache))
    opt.step()
    state = opt.state_dict()
    assert all(b is not None and b.shape == p.shape for b, p in zip(state["momentum_buffer"], net.parameters()))
    fresh = numpy_ref.SGD(net.parameters(), lr=0.5)
    fresh.load_state_dict(state)
    assert fresh.lr == 0.1 and fresh.momentum == 0.9
    assert all(np.array_equal(a, b) for a, b in zip(fresh.momentum_buffer, state["momentum_buffer"]))
    with pytest.raises(ValueError, match="params"):
        numpy_ref.SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        numpy_ref.SGD(net.parameters(), lr=-1.0)


def test_module_bookkeeping():
    net, _ = _small_pair(2)
    x, y = np.random.default_rng(3).standard_normal((2, 3, 9, 9)), np.array([0, 4])
    assert all(g is None for g in net.grad_dict().values())
    with pytest.raises(ValueError, match="before forward"):
        net.backward(np.ones((2, 5)))

    def grads_once():
        _, cache = cross_entropy_forward(net.forward(x), y)
        net.backward(cross_entropy_backward(1.0, cache))
        return {k: v.copy() for k, v in net.grad_dict().items()}

    first = grads_once()
    second = grads_once()  # gradients accumulate, as in torch, until zero_grad
    assert list(first) == list(net.state_dict())
    assert all(np.allclose(second[k], 2 * first[k], rtol=1e-13) for k in first)
    net.zero_grad()
    assert all(g is None for g in net.grad_dict().values())

    state = {k: v.copy() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="missing keys"):
        net.load_state_dict({k: v for k, v in state.items() if k != "0.bias"})
    with pytest.raises(ValueError, match="unexpected keys"):
        net.load_state_dict({**state, "9.weight": np.ones(2)})
    with pytest.raises(ValueError, match=r"0.weight has shape \(6, 3, 3, 3\)"):
        net.load_state_dict({**state, "0.weight": np.ones((6, 3, 2, 2))})

    drop = numpy_ref.Sequential(numpy_ref.Dropout(0.5, rng=np.random.default_rng(0)))
    ones = np.ones((4, 50))
    assert (drop.forward(ones) == 0).any()
    drop.eval()
    assert not drop[0].training and np.array_equal(drop.forward(ones), ones)
    assert "Conv2d(3, 6" in repr(net)
