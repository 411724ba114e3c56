"""`alexnet export`: the .npz holds exactly torch's state_dict keys, numpy_ref loads it as documented and gives
torch's logits; bad output names are one line with exit 2."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import numpy_ref
from conftest import assert_close_verbose
from probe_checkpoint import shared_probe_checkpoint
from torch_model.cli import main as alexnet_main
from torch_model.data import load_split, to_input
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
        assert list(npz.files) == list(state)                         # torch's keys, in torch's order, nothing else
        assert all(npz[k].dtype == np.float32 and np.array_equal(npz[k], state[k].numpy()) for k in state)
    net = numpy_ref.alexnet(init=False).eval()
    net.load_state_dict(dict(np.load(path)))                          # the documented one-liner

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
