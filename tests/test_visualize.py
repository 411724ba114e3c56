"""`alexnet visualize`: the saliency from numpy_ref's backward equals torch autograd's in float64, the initial
filters are rebuilt exactly, the pictures are written, and a bad --index is one line with exit 2."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_close_verbose
from probe_checkpoint import shared_probe_checkpoint
from torch_model.cli import main as alexnet_main
from torch_model.data import load_split, to_input
from torch_model.checkpoint import load
from torch_model.model import alexnet
from torch_model.plots import initial_conv1
from torch_model.visualize import numpy_model, saliency, to_pixels

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def probe(real_data_dir):
    return shared_probe_checkpoint(real_data_dir)


def test_saliency_numpy_backward_equals_torch_autograd_float64(probe, real_data_dir):
    """d score / d input from numpy_ref's backward == torch autograd's, on the 224x224 input and carried back
    through the bilinear resize to the 28x28 pixels (to_pixels), float64 both sides."""
    ckpt = load(probe)
    test = load_split(real_data_dir, "test")
    pixels = (test.images[[0, 7]].double() / 255).unsqueeze(1).requires_grad_(True)   # (2, 1, 28, 28), two classes
    xt = F.interpolate(pixels, size=(224, 224), mode="bilinear", align_corners=False)   # (2, 1, 224, 224)
    xt.retain_grad()
    grads, logits, target = saliency(numpy_model(ckpt.state), xt.detach().numpy())

    net = alexnet(init=False).double().eval()
    net.load_state_dict(ckpt.state)
    net.requires_grad_(False)                                         # only d/d input is wanted
    out = net(xt)                                                     # (2, 10)
    out[torch.arange(2), out.argmax(1)].sum().backward()              # each image's predicted-class score
    assert target.tolist() == out.argmax(1).tolist()
    # float64 both sides; the two differ only in summation order (~1e-16 relative); 1e-10 of the largest entry
    for name, ours, theirs in (("logits", torch.from_numpy(logits), out.detach()),
                               ("d score / d input", torch.from_numpy(grads), xt.grad),
                               ("d score / d pixel", torch.from_numpy(to_pixels(grads)), pixels.grad[:, 0])):
        scale = theirs.abs().max().item()
        assert scale > 0, name
        assert_close_verbose(ours, theirs, atol=1e-10 * scale, rtol=1e-10, what=name)


def test_initial_filters_are_the_runs_own(tmp_path):
    """filters.png's 'at initialisation' panel: alexnet train seeds torch, then builds the learner."""
    from torch_model.learners import make_learner

    torch.manual_seed(5)
    learner = make_learner("torch", 0.01, torch.device("cpu"), seed=5)
    before = torch.get_rng_state()
    np.testing.assert_array_equal(initial_conv1(5), learner.model_state_dict()["0.weight"].numpy())
    assert torch.equal(torch.get_rng_state(), before)                 # the caller's RNG is left alone


def test_visualize_writes_pictures_and_probabilities(probe, real_data_dir, tmp_path, capsys):
    out = tmp_path / "vis"
    assert alexnet_main(["visualize", "--checkpoint", str(probe), "--index", "9995", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("filters.png", "feature_maps.png", "saliency.png"):
        assert (out / name).read_bytes()[:8] == PNG, name
    test = load_split(real_data_dir, "test")
    net = alexnet(init=False).eval()
    net.load_state_dict(load(probe).state)
    with torch.no_grad():
        probs = torch.softmax(net(to_input(test.images[9995:9996])), 1)[0]   # (10,)
    from torch_model.data import CLASS_NAMES
    top = int(probs.argmax())
    assert f"predicted {CLASS_NAMES[top]}" in printed
    assert f"  {CLASS_NAMES[top]:<11} {probs[top].item():7.2%}" in printed      # numpy's, equal to torch's here
    assert "max |probability difference|" in printed


@pytest.mark.parametrize("index", ["10000", "-1", "99999"])
def test_bad_index_one_line_exit_2(probe, index, tmp_path, capsys):
    assert alexnet_main(["visualize", "--checkpoint", str(probe), "--index", index, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--index {index}: the test set has 10000 images" in err
    assert not list(tmp_path.iterdir())                               # nothing written
