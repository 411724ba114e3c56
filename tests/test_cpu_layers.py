"""The CPU learner's stand-ins (torch_model.cpu_layers) against the layers they replace: conv1 with its weight
gradient as one GEMM over im2col's patches against nn.Conv2d, dropout with a torch.rand mask against the
definition of inverted dropout."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from torch_model.model import alexnet
from torch_model.cpu_layers import PatchConv2d, RandDropout, im2col, use_cpu_layers, use_patch_conv1

# (in_channels, size, padding): d2l's conv1 (1 channel, padding 1) and the paper's (3 channels, unpadded), small
CASES = [(1, 35, 1), (3, 39, 0)]


def pair(c: int, padding: int) -> tuple[nn.Conv2d, nn.Sequential]:
    torch.manual_seed(0)
    ref = nn.Conv2d(c, 8, kernel_size=11, stride=4, padding=padding)
    net = nn.Sequential(nn.Conv2d(c, 8, kernel_size=11, stride=4, padding=padding))
    net[0].load_state_dict(ref.state_dict())
    assert use_patch_conv1(net) and isinstance(net[0], PatchConv2d)
    return ref, net


def forward_backward(conv, x, dy, amp: bool):
    conv.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        y = conv(x)
    y.backward(dy.to(y.dtype))
    return y, conv.weight.grad, conv.bias.grad


def test_im2col_rows_are_the_windows():
    x = torch.arange(2 * 3 * 9 * 9, dtype=torch.float32).reshape(2, 3, 9, 9)
    cols = im2col(x, (3, 3), (2, 2), (1, 1))                      # (2*5*5, 3*3*3 + 1)
    assert cols.shape == (50, 28) and torch.all(cols[:, -1] == 1)
    xp = torch.nn.functional.pad(x, (1, 1, 1, 1))
    n, oh, ow = 1, 2, 3                                            # row n*25 + oh*5 + ow
    window = xp[n, :, 2 * oh:2 * oh + 3, 2 * ow:2 * ow + 3]
    torch.testing.assert_close(cols[n * 25 + oh * 5 + ow, :-1], window.reshape(-1))


@pytest.mark.parametrize("c, size, padding", CASES)
def test_fp32_equals_conv2d(c, size, padding):
    ref, net = pair(c, padding)
    x = torch.rand(3, c, size, size)
    dy = torch.randn_like(ref(x))
    got, want = forward_backward(net[0], x, dy, amp=False), forward_backward(ref, x, dy, amp=False)
    assert torch.equal(got[0], want[0])                            # the forward is oneDNN's own
    for g, w in zip(got[1:], want[1:]):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c, size, padding", CASES)
def test_bf16_autocast_matches_conv2d(c, size, padding):
    """Under autocast both round x and W to bf16 and accumulate the gradient in fp32, in another order."""
    ref, net = pair(c, padding)
    x = torch.rand(4, c, size, size).contiguous(memory_format=torch.channels_last)
    dy = torch.randn(4, 8, *ref(x).shape[2:])
    (y1, w1, b1), (y0, w0, b0) = forward_backward(net[0], x, dy, True), forward_backward(ref, x, dy, True)
    assert y1.dtype == y0.dtype == torch.bfloat16 and torch.equal(y1, y0)
    assert w1.dtype == w0.dtype == torch.float32                  # gradients reach the fp32 parameters
    for got, want in ((w1, w0), (b1, b0)):
        assert ((got - want).norm() / want.norm()).item() < 1e-2


def test_input_needing_a_gradient_takes_onednn():
    ref, net = pair(1, 1)
    x = torch.rand(2, 1, 35, 35, requires_grad=True)
    net[0](x).sum().backward()
    ref(x.detach().requires_grad_()).sum().backward()
    torch.testing.assert_close(net[0].weight.grad, ref.weight.grad)
    assert x.grad is not None


def test_swap_shares_parameters_and_keys():
    net = alexnet()
    before = net.state_dict()
    weight = net[0].weight
    assert use_patch_conv1(net)
    assert net[0].weight is weight and list(net.state_dict()) == list(before)
    assert not use_patch_conv1(net)            # already swapped: a PatchConv2d is left alone
    assert not use_patch_conv1(nn.Sequential(nn.Conv2d(96, 8, 3)))   # many channels: oneDNN's direct conv is fine


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_rand_dropout_is_inverted_dropout(p):
    """Each unit kept with probability 1 - p and scaled by 1 / (1 - p), the rest zero; the gradient takes the same
    mask; eval mode is the identity; the same seed gives the same mask."""
    drop = RandDropout(p)
    x = (torch.rand(256, 4096) + 0.5).requires_grad_()
    torch.manual_seed(1)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.01        # 1M draws: the standard error is ~5e-4
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / (1 - p))
    torch.manual_seed(1)
    assert torch.equal(drop(x), y)
    assert torch.equal(drop.eval()(x), x)


def test_rand_dropout_under_bf16_autocast_keeps_the_dtype():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = RandDropout(0.5)(torch.ones(8, 16, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and set(y.unique().tolist()) <= {0.0, 2.0}


def test_cpu_channels_last_learner_takes_them():
    """The CPU's default (bf16 autocast + channels_last) takes both; fp32 NCHW, the reference, keeps nn's layers."""
    from torch_model.learners import make_learner

    cpu = torch.device("cpu")
    fast = make_learner("torch", 0.01, cpu, channels_last=True).net
    assert isinstance(fast[0], PatchConv2d)
    assert [type(m) for m in fast if isinstance(m, nn.Dropout)] == [RandDropout, RandDropout]
    assert list(fast.state_dict()) == list(alexnet().state_dict())
    plain = make_learner("torch", 0.01, cpu).net
    assert type(plain[0]) is nn.Conv2d and not any(isinstance(m, RandDropout) for m in plain)


def test_use_cpu_layers_keeps_dropout_rates():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Dropout(0.3), nn.ReLU(), nn.Dropout(0.7))
    use_cpu_layers(net)
    assert isinstance(net[1], RandDropout) and net[1].p == 0.3 and net[3].p == 0.7
