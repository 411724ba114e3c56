"""torch_model.alexnet's two variants: d2l's (the default) and the 2012 paper's, their shapes, sizes and init."""
import pytest
import torch
from torch import nn

from torch_model.model import PAPER_LRN, alexnet, check_resize, final_feature_size, num_parameters
from torch_model.summary import layer_summary, neurons


def test_paper_variant_shapes_and_parameters():
    net = alexnet(variant="paper", num_classes=1000).eval()
    x = torch.randn(2, 3, 227, 227)
    shapes = {}
    for i, layer in enumerate(net):
        x = layer(x)
        shapes[i] = tuple(x.shape[1:])
    assert shapes[0] == (96, 55, 55) and shapes[3] == (96, 27, 27)
    assert shapes[4] == (256, 27, 27) and shapes[7] == (256, 13, 13)
    assert shapes[8] == shapes[10] == (384, 13, 13) and shapes[12] == (256, 13, 13)
    assert shapes[14] == (256, 6, 6) and shapes[15] == (9216,) and shapes[22] == (1000,)
    # by hand: conv1 3*96*121+96, conv2 96/2*256*25+256, conv3 256*384*9+384, conv4/5 grouped, fc6, fc7, fc8
    by_hand = (34_944 + 307_456 + 885_120 + 663_936 + 442_624 + 9216 * 4096 + 4096 + 4096 * 4096 + 4096
               + 4096 * 1000 + 1000)
    assert num_parameters(net) == by_hand == 60_965_224
    groups = [m.groups for m in net if isinstance(m, nn.Conv2d)]
    assert groups == [1, 2, 1, 2, 2]
    lrns = [m for m in net if isinstance(m, nn.LocalResponseNorm)]
    assert len(lrns) == 2 and all((m.size, m.alpha, m.beta, m.k) == (5, 5e-4, 0.75, 2.0) for m in lrns)


def test_paper_lrn_is_the_papers_formula():
    """torch's alpha is divided by the window size: alpha 5e-4 in torch is the paper's alpha 1e-4 on the plain sum."""
    a = torch.rand(2, 7, 3, 3, dtype=torch.float64) * 10
    got = nn.LocalResponseNorm(**PAPER_LRN)(a)
    n, k, alpha, beta = 5, 2.0, 1e-4, 0.75
    want = torch.empty_like(a)
    for c in range(a.shape[1]):
        lo, hi = max(0, c - n // 2), min(a.shape[1] - 1, c + n // 2)
        want[:, c] = a[:, c] / (k + alpha * (a[:, lo:hi + 1] ** 2).sum(1)) ** beta
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


def test_paper_init():
    torch.manual_seed(0)
    net = alexnet(variant="paper", num_classes=1000)
    layers = [m for m in net if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [float(m.bias.detach().unique()) for m in layers] == [0, 1, 0, 1, 1, 1, 1, 0]
    std = layers[5].weight.std().item()   # fc6: 37M samples of N(0, 0.01^2)
    assert abs(std - 0.01) < 1e-4


def test_resize_ranges_per_variant():
    assert final_feature_size(224) == 5 and final_feature_size(227, "paper") == 6
    fits = [r for r in range(150, 300) if final_feature_size(r, "paper") == 6]
    assert (fits[0], fits[-1]) == (227, 258)
    check_resize(258, variant="paper")
    with pytest.raises(ValueError, match="--resize 224: the paper AlexNet takes 227..258"):
        check_resize(224, variant="paper")
    with pytest.raises(ValueError, match="variant must be one of"):
        alexnet(variant="resnet")
    with pytest.raises(ValueError, match="num_classes"):
        alexnet(num_classes=True)


def test_summary_counts_the_papers_neurons(capsys):
    from torch_model.cli import main

    rows = layer_summary(variant="paper")
    assert sum(r.params for r in rows) == 60_965_224
    # conv outputs 96*55*55 + 256*27*27 + 2*384*13*13 + 256*13*13, dense 4096 + 4096 + 1000
    assert neurons(rows) == 290_400 + 186_624 + 2 * 64_896 + 43_264 + 4096 + 4096 + 1000
    assert main(["summary", "--variant", "paper"]) == 0
    out = capsys.readouterr().out
    assert "[1, 256, 6, 6]" in out and "60,965,224" in out and "650,000 neurons" in out
    assert main(["summary", "--variant", "paper", "--resize", "224"]) == 2
