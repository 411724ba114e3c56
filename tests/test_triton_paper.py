"""The 2012 paper's AlexNet through the Triton kernels against torch's, from the same weights.

alexnet(variant="paper", backend="triton") must be the paper's stack with every conv+ReLU a fused TritonConv2d
(grouped convs included), every LRN a TritonLocalResponseNorm and every max pool a TritonMaxPool2d, with torch's
state_dict. Its numbers are checked in the interpreter on a scaled-down copy of the very same stack (built from
alexnet(variant="paper") layer by layer: every channel count divided by 16, dense widths too, 10 classes, a 67x67
input; kernel sizes, strides, paddings, groups, LRN parameters, ReLU/pool/dropout placement unchanged), forward
and every parameter's gradient, NCHW and channels_last. The full 3x227x227 network is too slow for the
interpreter; on a GPU it is checked whole at batch 128.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from torch_model.model import PAPER_LRN, alexnet
from triton_kernels.modules import FusedReLU, TritonConv2d, TritonLocalResponseNorm, TritonMaxPool2d, tritonize
from conftest import assert_close_verbose

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (the paper model is checked small in the interpreter)")

# fp32 both sides; the convs and Linears sum in another order than torch's and the LRN computes s ** -beta as
# exp2(-beta log2 s): agreement to a few fp32 ulps per layer, ~1e-6 relative after 8 layers. Gradients go through
# the same 8 layers back: rtol 1e-4, and atol relative to each tensor's largest entry (tiny entries are sums of
# cancelling terms).
RTOL = 1e-4
SCALE_DIV = 16  # 96, 256, 384 channels -> 6, 16, 24 (both groups keep whole channels); 4096 -> 256
SMALL_INPUT = 67  # (67 - 11)//4 + 1 = 15 -> pool 7 -> conv2 7 -> pool 3 -> conv3..5 3 -> pool 1


def paper_torch() -> nn.Sequential:
    with torch.device("meta"):  # the structure only: no 61M parameters to allocate
        return alexnet(num_classes=1000, variant="paper", init=False)


def scaled_paper(num_classes: int = 10, div: int = SCALE_DIV, in_hw: int = SMALL_INPUT) -> nn.Sequential:
    """alexnet(variant="paper")'s layers with channel counts and dense widths divided by div and num_classes
    outputs; everything else copied (same kernel sizes, strides, paddings, groups, LRNs, ReLUs, pools, dropout)."""
    layers, channels, hw = [], 3, in_hw
    paper = list(paper_torch())
    last_linear = max(i for i, m in enumerate(paper) if type(m) is nn.Linear)
    for i, m in enumerate(paper):
        if type(m) is nn.Conv2d:
            out = m.out_channels // div
            layers.append(nn.Conv2d(channels, out, m.kernel_size, m.stride, m.padding, groups=m.groups))
            channels = out
            hw = (hw + 2 * m.padding[0] - m.kernel_size[0]) // m.stride[0] + 1
        elif type(m) is nn.MaxPool2d:
            layers.append(nn.MaxPool2d(m.kernel_size, m.stride))
            hw = (hw - m.kernel_size) // m.stride + 1
        elif type(m) is nn.Linear:
            in_features = channels * hw * hw if layers and type(layers[-1]) is nn.Flatten else channels
            channels = num_classes if i == last_linear else m.out_features // div
            layers.append(nn.Linear(in_features, channels))
        elif type(m) is nn.LocalResponseNorm:
            layers.append(nn.LocalResponseNorm(m.size, m.alpha, m.beta, m.k))
        else:  # ReLU, Flatten, Dropout
            layers.append(copy.deepcopy(m))
    assert hw >= 1, hw
    return nn.Sequential(*layers)


def _kinds(net: nn.Sequential) -> list:
    """Layer kinds with what the scaled copy must keep: conv geometry and groups, pool geometry, LRN parameters."""
    out = []
    for m in net:
        if isinstance(m, nn.Conv2d):
            out.append(("conv", m.kernel_size, m.stride, m.padding, m.groups))
        elif isinstance(m, nn.MaxPool2d):
            out.append(("pool", m.kernel_size, m.stride))
        elif isinstance(m, nn.LocalResponseNorm):
            out.append(("lrn", m.size, m.alpha, m.beta, m.k))
        else:  # a FusedReLU stands where a ReLU was
            out.append("ReLU" if isinstance(m, FusedReLU) else type(m).__name__)
    return out


def test_triton_paper_model_structure_and_state_dict():
    ref = paper_torch()
    net = alexnet(num_classes=1000, variant="paper", backend="triton", init=False)
    kinds = [type(m) for m in net]
    convs = [i for i, m in enumerate(ref) if type(m) is nn.Conv2d]
    assert convs == [0, 4, 8, 10, 12]
    assert all(kinds[i] is TritonConv2d and net[i].relu and kinds[i + 1] is FusedReLU for i in convs)
    assert [net[i].groups for i in convs] == [1, 2, 1, 2, 2]
    assert [i for i, t in enumerate(kinds) if t is TritonLocalResponseNorm] == [2, 6]
    assert all((net[i].size, net[i].alpha, net[i].beta, net[i].k) == tuple(PAPER_LRN.values()) for i in (2, 6))
    assert [i for i, t in enumerate(kinds) if t is TritonMaxPool2d] == [3, 7, 14]
    assert _kinds(net) == _kinds(ref)
    assert [(k, tuple(v.shape)) for k, v in net.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in ref.state_dict().items()]
    assert "alpha=0.0005" in repr(net[2])


def test_scaled_copy_keeps_the_paper_stack():
    small, paper = scaled_paper(), paper_torch()
    assert _kinds(small) == _kinds(paper)
    convs = [m for m in small if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 6), (6, 16), (16, 24), (24, 24), (24, 16)]
    assert [m.out_features for m in small if isinstance(m, nn.Linear)] == [256, 256, 10]


# One image per layout: conv1's gradient (15x15 outputs of an 11x11x3 window) dominates the interpreter's time,
# several seconds an image. Batches of several images go through each kernel's own tests.
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_scaled_paper_model_matches_torch(channels_last):
    """Forward (train mode: the same dropout masks from the same seed) and every parameter's gradient."""
    torch.manual_seed(0)
    ref = scaled_paper().to(DEVICE)
    x = 40 * torch.randn(1, 3, SMALL_INPUT, SMALL_INPUT, device=DEVICE)  # (N, 3, 67, 67)
    if channels_last:
        ref = ref.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    net = tritonize(copy.deepcopy(ref))
    assert [type(m) for m in net].count(TritonLocalResponseNorm) == 2
    assert [m.groups for m in net if isinstance(m, TritonConv2d)] == [1, 2, 1, 2, 2]
    # The LRNs must do more than divide by k^beta here, or the test would not see their window term.
    lrn_inputs = []
    net[2].register_forward_hook(lambda m, i, o: lrn_inputs.append(i[0].detach()))
    y = torch.tensor([3], device=DEVICE)
    outs = []
    for model in (net, ref):
        torch.manual_seed(1)
        logits = model(x)
        nn.functional.cross_entropy(logits, y).backward()
        outs.append(logits)
    a = lrn_inputs[0]
    window = nn.functional.avg_pool3d(a.square().unsqueeze(1), (5, 1, 1), stride=1, padding=(2, 0, 0)).squeeze(1)
    assert (PAPER_LRN["alpha"] * window).max() > 0.1 * PAPER_LRN["k"], "LRN inputs too small to test the window"
    scale = outs[1].abs().max().item()
    assert_close_verbose(outs[0], outs[1], RTOL * scale, RTOL, "logits")
    for (name, p), p_ref in zip(net.named_parameters(), ref.parameters()):
        assert p.grad is not None, name
        assert_close_verbose(p.grad, p_ref.grad, RTOL * p_ref.grad.abs().max().item(), RTOL, f"grad {name}")


# ------------------------------------------------------------------------------------------------------------
# GPU: the paper's AlexNet at batch 128, 3x227x227, through the kernels.
# ------------------------------------------------------------------------------------------------------------

@pytest.mark.gpu
@gpu
def test_gpu_paper_alexnet_batch128_matches_torch_ieee():
    """Exact-fp32 dots on both sides (TF32 off), eval mode: summation order is the only difference."""
    torch.manual_seed(2)
    ref = alexnet(num_classes=1000, variant="paper").cuda()
    net = alexnet(num_classes=1000, variant="paper", backend="triton", init=False).cuda()
    net.load_state_dict(ref.state_dict())
    x = torch.randn(128, 3, 227, 227, device="cuda")  # (N, 3, 227, 227)
    y = torch.randint(0, 1000, (128,), device="cuda")
    flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for model in (net, ref):
            model.eval()
            nn.functional.cross_entropy(model(x), y).backward()
        out, out_ref = net(x), ref(x)
        assert_close_verbose(out, out_ref, 1e-4 * out_ref.abs().max().item(), 1e-3, "logits")
        for (name, p), p_ref in zip(net.named_parameters(), ref.parameters()):
            scale = p_ref.grad.abs().max().item()
            assert_close_verbose(p.grad, p_ref.grad, 1e-4 * scale, 1e-3, f"grad {name}")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
