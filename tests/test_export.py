"""`alexnet export`: the .npz holds torch's state_dict keys and how the run fed them, numpy_ref loads it as
documented and gives torch's logits, the walkthrough feeds an image as the run did (its probabilities are
`alexnet visualize`'s); bad output names are one line with exit 2."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import numpy_ref
from conftest import assert_close_verbose
from probe_checkpoint import shared_probe_checkpoint
from torch_model.cli import main as alexnet_main
from torch_model.data import CLASS_NAMES, load_split, to_input
from torch_model.model import alexnet


@pytest.fixture
def probe(real_data_dir):
    return shared_probe_checkpoint(real_data_dir)


def test_export_loads_in_numpy_ref_with_torchs_logits(probe, real_data_dir, tmp_path, capsys):
    path = tmp_path / "alexnet.npz"
    assert alexnet_main(["export", "--checkpoint", str(probe), "--out", str(path)]) == 0
    assert "46,764,746 float32 parameters" in capsys.readouterr().out
    state = torch.load(probe, weights_only=True)["model"]
    with np.load(path) as npz:
        # torch's keys in torch's order, then how the run fed them (the probe: a d2l run at 224, [0, 1] pixels)
        assert list(npz.files) == [*state, "input.variant", "input.size", "input.pixels"]
        assert all(npz[k].dtype == np.float32 and np.array_equal(npz[k], state[k].numpy()) for k in state)
        assert (str(npz["input.variant"]), int(npz["input.size"]), str(npz["input.pixels"])) == ("d2l", 224, "unit")
    net = numpy_ref.alexnet(init=False).eval()
    net.load_state_dict({k: v for k, v in np.load(path).items() if not k.startswith("input.")})   # as documented

    x = to_input(load_split(real_data_dir, "test").images[:3])        # (3, 1, 224, 224)
    ref = alexnet(init=False).eval()
    ref.load_state_dict(state)
    with torch.no_grad():
        expected = ref(x)                                             # (3, 10)
    got = torch.from_numpy(net.forward(x.numpy()))
    # float32 both sides, 46M weights summed in another order: ~1e-5 of the logits' size
    assert_close_verbose(got, expected, atol=1e-4 * expected.abs().max().item(), rtol=1e-4, what="logits")
    assert torch.equal(got.argmax(1), expected.argmax(1))


def test_export_bad_out_one_line_exit_2(probe, tmp_path, capsys):
    for out, message in ((tmp_path / "w.txt", "must end in .npz"),
                         (tmp_path / "no" / "w.npz", f"the folder {tmp_path / 'no'} does not exist")):
        assert alexnet_main(["export", "--checkpoint", str(probe), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--out {out}: {message}" in err
        assert not out.exists()


def _run_checkpoint(path, variant, resize, pixels, seed, data_dir):
    """best.pt as `alexnet train` writes it, for an untrained network whose last layer is scaled up so that its
    class probabilities are far from uniform (and so tell one way of feeding an image from another)."""
    from torch_model.data import pixel_mean

    torch.manual_seed(seed)
    net = alexnet(10, variant=variant)
    last = [m for m in net if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(60 if pixels == "unit" else 3)
    config = dict(variant=variant, resize=resize, pixels=pixels, seed=seed, backend="torch", dataset="fashion-mnist")
    extra = {}
    if pixels == "mean-subtracted":
        extra["pixel_mean"] = pixel_mean(load_split(data_dir, "train").subset(500))       # (28, 28), 0..255
    torch.save(dict(epoch=1, test_acc=0.1, model=net.state_dict(), config=config, **extra), path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("variant, resize, pixels", [("d2l", 193, "unit"), ("paper", 230, "mean-subtracted")])
def test_the_walkthrough_feeds_the_run_s_input_and_gets_visualize_s_probabilities(
        variant, resize, pixels, real_data_dir, tmp_path, capsys):
    from numpy_ref import walkthrough
    from torch_model.checkpoint import load
    from torch_model.visualize import activations, model_input, numpy_model, softmax

    best = _run_checkpoint(tmp_path / "best.pt", variant, resize, pixels, seed=3, data_dir=real_data_dir)
    npz = tmp_path / "w.npz"
    assert alexnet_main(["export", "--checkpoint", str(best), "--out", str(npz)]) == 0
    assert f"the {variant} AlexNet, {resize}x{resize} input" in capsys.readouterr().out
    with np.load(npz) as entries:
        assert (str(entries["input.variant"]), int(entries["input.size"])) == (variant, resize)
        assert str(entries["input.pixels"]) == pixels and ("input.mean" in entries.files) == (pixels != "unit")

    index = 5
    ckpt = load(best)                                  # visualize's way: its own functions, in order
    images = load_split(real_data_dir, "test").images
    x_vis = model_input(images[index:index + 1], ckpt)           # (1, C, R, R) float64, from float32 arithmetic
    vis_probs = softmax(activations(numpy_model(ckpt.state, variant=variant), x_vis)[-1][0])   # (10,)

    net = walkthrough.load_weights(npz)                           # the walkthrough's way
    image, label = walkthrough.read_test_image(real_data_dir, index)
    x = net.feeding.model_input(image)                            # (1, C, R, R) float64
    # visualize resizes in float32: its interpolation weights are off by ~eps32 * 28 (2e-6) of a step between two
    # pixels, which are up to 1 (unit) or 255 (mean-subtracted) apart: within 4e-6 of that range
    assert_close_verbose(x, x_vis, atol=4e-6 * (255 if pixels != "unit" else 1), rtol=0, what="input")
    logits = walkthrough.walk(x, label, net=net, out=io.StringIO())["logits"][0]   # (10,)
    probs = softmax(logits)
    # float64 networks on inputs equal to ~1e-7 of their scale: the probabilities agree to ~1e-6
    assert_close_verbose(probs, vis_probs, atol=1e-5, rtol=0, what="walkthrough vs visualize probabilities")
    assert vis_probs.max() > 0.3, "the test network should not be near-uniform"
    # and feeding it as an export without input.* would (the variant's default size, [0, 1] pixels) is far off
    default = walkthrough.Feeding(variant, walkthrough.INPUTS[variant][1])
    naive = softmax(walkthrough.walk(default.model_input(image), label, net=net, out=io.StringIO())["logits"][0])
    assert np.abs(naive - vis_probs).max() > 1e-2

    assert walkthrough.main(["--weights", str(npz), "--index", str(index), "--data-dir", str(real_data_dir)]) == 0
    printed = capsys.readouterr().out
    assert f"fed as its run fed it: {resize}x{resize} input" in printed
    assert f"input  (1, {1 if variant == 'd2l' else 3}, {resize}, {resize})" in printed
    top = int(vis_probs.argmax())
    assert f"top 3: {CLASS_NAMES[top]} {vis_probs[top]:.1%}" in printed
