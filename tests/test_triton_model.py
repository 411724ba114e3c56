"""The Triton-backed model against the torch model from the same weights: tritonize() on a small Sequential of
AlexNet's structure (the full 224x224 AlexNet is too slow for the interpreter), and alexnet(backend="triton")'s
modules and state_dict. On a GPU: the full AlexNet at batch 128, eager and torch.compile'd.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from torch_model.model import alexnet
from triton_kernels.modules import FusedReLU, TritonConv2d, TritonMaxPool2d, tritonize
from conftest import CUDA, DEVICE, assert_close_verbose


# fp32 both sides; the conv sums C*KH*KW products in another order than torch's, so not bitwise.
ATOL, RTOL = 1e-5, 1e-4


def small_net() -> nn.Sequential:
    """AlexNet's pattern at toy size: conv+relu, pool, conv+relu, pool, flatten, linear. Input (N, 1, 21, 21)."""
    return nn.Sequential(
        nn.Conv2d(1, 4, kernel_size=5, stride=2, padding=1), nn.ReLU(),  # (N, 4, 10, 10)
        nn.MaxPool2d(kernel_size=3, stride=2),  # (N, 4, 4, 4)
        nn.Conv2d(4, 6, kernel_size=3, padding=1), nn.ReLU(),  # (N, 6, 4, 4)
        nn.MaxPool2d(kernel_size=2),  # (N, 6, 2, 2)
        nn.Flatten(),  # (N, 24)
        nn.Linear(24, 5),  # (N, 5)
    )


def test_tritonize_small_net_matches_torch():
    torch.manual_seed(0)
    ref = small_net().to(DEVICE)
    net = tritonize(copy.deepcopy(ref))
    assert [type(m) for m in net] == [TritonConv2d, FusedReLU, TritonMaxPool2d, TritonConv2d, FusedReLU,
                                      TritonMaxPool2d, nn.Flatten, nn.Linear]
    assert net[0].relu and net[3].relu
    assert list(net.state_dict()) == list(ref.state_dict())

    x = torch.randn(3, 1, 21, 21, device=DEVICE)  # (N, 1, H, W)
    y = torch.randint(0, 5, (3,), device=DEVICE)
    losses = []
    for model in (net, ref):
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        losses.append(loss)
    assert_close_verbose(net(x), ref(x), ATOL, RTOL, "logits")
    assert_close_verbose(losses[0], losses[1], ATOL, RTOL, "loss")
    for (name, p), p_ref in zip(net.named_parameters(), ref.parameters()):
        assert_close_verbose(p.grad, p_ref.grad, ATOL, RTOL, f"grad {name}")


def test_tritonize_keeps_parameter_objects_and_optimizer():
    """An optimizer built before tritonize still trains the model: the Parameters are the same objects."""
    torch.manual_seed(1)
    net = small_net().to(DEVICE)
    params_before = [id(p) for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    ref = copy.deepcopy(net)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    tritonize(net)
    assert [id(p) for p in net.parameters()] == params_before
    x = torch.randn(2, 1, 21, 21, device=DEVICE)
    for model, o in ((net, opt), (ref, ref_opt)):
        model(x).square().mean().backward()
        o.step()
    for (name, p), p_ref in zip(net.named_parameters(), ref.parameters()):
        assert_close_verbose(p, p_ref, ATOL, RTOL, f"{name} after one SGD step")


def test_channels_last_model_stays_channels_last():
    """`alexnet train --channels-last`: the net and its 1-channel input in channels_last keep every conv and pool
    activation channels_last (conv1's C == 1 input included, as torch decides it), with the torch net's numbers."""
    torch.manual_seed(2)
    ref = small_net().to(DEVICE).to(memory_format=torch.channels_last)
    net = tritonize(copy.deepcopy(ref))
    x = torch.randn(3, 1, 21, 21, device=DEVICE).to(memory_format=torch.channels_last)  # (N, 1, H, W)
    layouts = []
    for m in net:
        if isinstance(m, (TritonConv2d, TritonMaxPool2d)):
            m.register_forward_hook(lambda m, i, o: layouts.append(o.is_contiguous(memory_format=torch.channels_last)
                                                                    and not o.is_contiguous()))
    out, out_ref = net(x), ref(x)
    assert layouts == [True] * 4, layouts
    assert_close_verbose(out, out_ref, ATOL, RTOL, "channels_last logits")
    out.square().sum().backward()
    out_ref.square().sum().backward()
    for (name, p), p_ref in zip(net.named_parameters(), ref.parameters()):
        assert_close_verbose(p.grad, p_ref.grad, ATOL, RTOL, f"channels_last grad {name}")


def test_tritonize_edge_cases():
    """A conv without a following ReLU keeps relu=False; a ReLU not after a conv stays torch; nested Sequentials
    are converted; tritonize twice is tritonize once."""
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.MaxPool2d(2), nn.ReLU(),
                        nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU(inplace=True)))
    tritonize(net)
    tritonize(net)
    assert type(net[0]) is TritonConv2d and not net[0].relu
    assert type(net[1]) is TritonMaxPool2d and type(net[2]) is nn.ReLU
    assert type(net[3][0]) is TritonConv2d and net[3][0].relu and type(net[3][1]) is FusedReLU
    assert "relu=True (fused)" in repr(net[3][0]) and "fused into the previous" in repr(net[3][1])
    torch.manual_seed(2)
    x = torch.randn(1, 2, 9, 9, device=DEVICE)
    ref = nn.Sequential(nn.Conv2d(2, 3, 3), nn.MaxPool2d(2), nn.ReLU(),
                        nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU())).to(DEVICE)
    ref.load_state_dict(net.state_dict())
    assert_close_verbose(net.to(DEVICE)(x), ref(x), ATOL, RTOL, "edge-case net")


def test_tritonize_refuses():
    with pytest.raises(ValueError, match="net must be an nn.Sequential, got Conv2d"):
        tritonize(nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match="padding_mode must be 'zeros' for the Triton conv, got 'reflect'"):
        tritonize(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")))


def test_alexnet_triton_state_dict_moves_unchanged():
    torch.manual_seed(3)
    seed = alexnet(backend="torch")
    net = alexnet(backend="triton", init=False)
    keys = [f"{i}.{p}" for i in (0, 3, 6, 8, 10, 14, 17, 20) for p in ("weight", "bias")]
    assert list(net.state_dict()) == list(seed.state_dict()) == keys
    net.load_state_dict(seed.state_dict())  # strict: same keys, same shapes
    for (k, v), v_seed in zip(net.state_dict().items(), seed.state_dict().values()):
        assert torch.equal(v, v_seed), k
    back = alexnet(backend="torch", init=False)
    back.load_state_dict(net.state_dict())  # and the other way
    assert all(torch.equal(a, b) for a, b in zip(back.parameters(), seed.parameters()))
    convs = [i for i, m in enumerate(net) if isinstance(m, nn.Conv2d)]
    assert convs == [0, 3, 6, 8, 10]
    assert all(type(net[i]) is TritonConv2d and net[i].relu and type(net[i + 1]) is FusedReLU for i in convs)
    assert [i for i, m in enumerate(net) if type(m) is TritonMaxPool2d] == [2, 5, 12]
    assert all(type(net[i]) is nn.Linear for i in (14, 17, 20))


# ------------------------------------------------------------------------------------------------------------
# GPU: the real AlexNet at batch 128 through the kernels, eager and torch.compile'd.
# ------------------------------------------------------------------------------------------------------------

def _alexnet_pair():
    torch.manual_seed(4)
    ref = alexnet(backend="torch").cuda()
    net = alexnet(backend="triton", init=False).cuda()
    net.load_state_dict(ref.state_dict())
    return net, ref


@pytest.mark.gpu
def test_gpu_alexnet_batch128_matches_torch_ieee():
    """Exact-fp32 dots on both sides (TF32 off), so the only difference is summation order."""
    net, ref = _alexnet_pair()
    x = torch.randn(128, 1, 224, 224, device="cuda")  # (N, 1, 224, 224)
    y = torch.randint(0, 10, (128,), device="cuda")
    flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for model in (net, ref):
            model.eval()  # no dropout, so both see the same function
            nn.functional.cross_entropy(model(x), y).backward()
        assert_close_verbose(net(x), ref(x), 1e-4, 1e-3, "logits")
        for (name, p), p_ref in zip(net.named_parameters(), ref.parameters()):
            scale = p_ref.grad.abs().max().item()
            assert_close_verbose(p.grad, p_ref.grad, 1e-4 * scale, 1e-3, f"grad {name}")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


@pytest.mark.gpu
def test_gpu_torch_compile_triton_alexnet():
    net, _ = _alexnet_pair()
    net.eval()
    x = torch.randn(32, 1, 224, 224, device="cuda", requires_grad=True)  # (N, 1, 224, 224)
    eager = net(x)
    (g_eager,) = torch.autograd.grad(eager.square().sum(), x)
    compiled = torch.compile(net)
    out = compiled(x)
    (g_comp,) = torch.autograd.grad(out.square().sum(), x)
    scale = eager.abs().max().item()
    assert_close_verbose(out, eager, 1e-5 * scale, 1e-4, "compiled logits")
    assert_close_verbose(g_comp, g_eager, 1e-5 * g_eager.abs().max().item(), 1e-4, "compiled grad x")


def test_gpu_marker_skips_without_cuda(monkeypatch):
    """conftest.py is the one place that turns `@pytest.mark.gpu` into a skip on a machine without CUDA."""
    import conftest

    class Item:
        def __init__(self, keywords):
            self.keywords, self.markers = keywords, []

        def add_marker(self, marker):
            self.markers.append(marker)

    gpu_item, cpu_item = Item({"gpu": True}), Item({})
    monkeypatch.setattr(conftest, "CUDA", False)
    conftest.pytest_collection_modifyitems(None, [gpu_item, cpu_item])
    assert [m.name for m in gpu_item.markers] == ["skip"] and "CUDA" in gpu_item.markers[0].kwargs["reason"]
    assert cpu_item.markers == []
    monkeypatch.setattr(conftest, "CUDA", True)
    gpu_item.markers.clear()
    conftest.pytest_collection_modifyitems(None, [gpu_item])
    assert gpu_item.markers == []


def test_the_one_assert_close_helper():
    """conftest.assert_close_verbose takes torch tensors and NumPy arrays, element-wise or relative to the scale
    (assert_rel, test_numpy_model's spelling), and names the worst element when it fails."""
    import numpy as np

    from conftest import assert_rel

    e = torch.tensor([1.0, -2.0, 1e-9, float("nan")], dtype=torch.float64)
    assert_close_verbose(e.numpy() + 1e-12, e, 1e-11, 0.0, "numpy vs torch, NaN on both sides")
    with pytest.raises(AssertionError, match=r"1/4 elements off; worst at \(2,\): got 1\.1"):
        assert_close_verbose(e.numpy() + np.array([0, 0, 1e-10, 0]), e, 0.0, 1e-3, "element-wise")
    assert_rel(e[:3].numpy() + np.array([0, 0, 1e-10]), e[:3], 1e-9, "scale-relative: 1e-10 of max|e| = 2")
    with pytest.raises(AssertionError, match=r"max\|diff\|/max\|expected\| 0.05"):
        assert_rel(e[:3].numpy() + np.array([0.1, 0, 0]), e[:3], 1e-3, "scale-relative")
    with pytest.raises(AssertionError, match="1/4 elements off"):
        assert_rel(e.numpy(), e, 1e-3, "assert_rel never takes NaN for equal")
