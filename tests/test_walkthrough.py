"""`python -m numpy_ref.walkthrough`: with --weights it steps the trained network and predicts what torch predicts;
every bad input (index, data folder, damaged file, weights) is one line naming the argument or file, exit 2; and
it stays torch-free, reading the data through numpy_ref.idx, the reader torch_model.data uses too."""
from __future__ import annotations

import gzip
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import write_fake_fashion_mnist, write_idx
from numpy_ref import walkthrough
from probe_checkpoint import shared_probe_checkpoint
from torch_model.data import CLASS_NAMES, load_split, to_input
from torch_model.export import export_npz
from torch_model.model import alexnet

PROG = "python -m numpy_ref.walkthrough"


@pytest.fixture(scope="module")
def weights(tmp_path_factory, real_data_dir):
    path = tmp_path_factory.mktemp("probe") / "alexnet.npz"
    return export_npz(shared_probe_checkpoint(real_data_dir), path), path


def test_walkthrough_with_weights_predicts_what_torch_predicts(weights, real_data_dir, capsys):
    state, path = weights
    test = load_split(real_data_dir, "test")
    ref = alexnet(init=False).eval()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    for index in (0, 7):
        with torch.no_grad():
            probs = torch.softmax(ref(to_input(test.images[index:index + 1])), 1)[0]   # (10,)
        assert walkthrough.main(["--weights", str(path), "--index", str(index),
                                 "--data-dir", str(real_data_dir)]) == 0
        out = capsys.readouterr().out
        top = int(probs.argmax())
        assert f"weights: {path} (trained, the d2l AlexNet)" in out
        assert f"top 3: {CLASS_NAMES[top]} {probs[top].item():.1%}" in out, out[-400:]


def test_walk_with_loaded_weights_matches_torch_logits(weights, real_data_dir):
    state, path = weights
    net = walkthrough.load_weights(path)                              # float64
    image, label = walkthrough.read_test_image(real_data_dir, 3)
    x = walkthrough.resize_bilinear(image / 255.0, 224)[None, None]   # (1, 1, 224, 224)
    import io
    result = walkthrough.walk(x, label, net=net, out=io.StringIO())
    ref = alexnet(init=False).double().eval()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(result["logits"], expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())


def _error(capsys, argv, *needles):
    assert walkthrough.main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith(f"{PROG}: error: "), err
    for needle in needles:
        assert needle in err, (needle, err)


@pytest.mark.parametrize("index", ["99999", "-1", "10"])
def test_bad_index(index, tmp_path, capsys):
    data = write_fake_fashion_mnist(tmp_path / "fm", n_test=10)
    _error(capsys, ["--index", index, "--data-dir", str(data)], f"--index {index}", "10 images", "0..9")


def test_bad_data_dirs_and_files(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _error(capsys, ["--data-dir", str(tmp_path / "empty")], "--data-dir", "missing t10k-images-idx3-ubyte")
    _error(capsys, ["--data-dir", ""], "--data-dir is empty")
    _error(capsys, ["--data-dir", str(tmp_path / "nowhere")], "nowhere: no such directory")
    (tmp_path / "afile").write_text("x")
    _error(capsys, ["--data-dir", str(tmp_path / "afile")], "afile: is a file, not a directory")

    data = write_fake_fashion_mnist(tmp_path / "fm", n_test=10)
    images = data / "t10k-images-idx3-ubyte.gz"
    write_idx(images, np.ones((10, 28, 28)), magic=2049)
    _error(capsys, ["--data-dir", str(data)], str(images), "magic number 2049, expected 2051")
    images.write_bytes(b"this is not gzip")
    _error(capsys, ["--data-dir", str(data)], str(images), "cannot read")
    raw = write_idx(tmp_path / "raw", np.arange(7840).reshape(10, 28, 28) % 251).read_bytes()   # valid IDX
    whole = gzip.compress(raw)
    images.write_bytes(whole[: len(whole) // 2])                                  # a gzip stream cut short
    _error(capsys, ["--data-dir", str(data)], str(images), "cannot read")
    write_idx(images, np.ones((10, 28, 28)), cut=3)
    _error(capsys, ["--data-dir", str(data)], str(images), "truncated")
    write_idx(images, np.ones((9, 28, 28)))
    _error(capsys, ["--data-dir", str(data)], "10 labels for 9 images")
    write_idx(images, np.ones((10, 28, 28)))
    write_idx(data / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 11]))
    _error(capsys, ["--data-dir", str(data)], "label 11 at index 9 is outside 0..9")


def test_bad_weights(weights, tmp_path, capsys):
    state, _ = weights
    _error(capsys, ["--random", "--weights", str(tmp_path / "none.npz")], "none.npz: no such file")
    (tmp_path / "text.npz").write_text("not a zip")
    _error(capsys, ["--random", "--weights", str(tmp_path / "text.npz")], "text.npz: not an .npz file")
    np.savez(tmp_path / "partial.npz", **{k: v for k, v in state.items() if k != "3.bias"})
    _error(capsys, ["--random", "--weights", str(tmp_path / "partial.npz")], "partial.npz", "missing keys ['3.bias']")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    _error(capsys, ["--random", "--weights", str(tmp_path / "other.npz")], "other.npz: not AlexNet's weights")
    np.savez(tmp_path / "big.npz", **{**state, "20.weight": np.zeros((1000, 4096), np.float32)})
    _error(capsys, ["--random", "--weights", str(tmp_path / "big.npz")], "a 1000-class network")
    np.savez(tmp_path / "shape.npz", **{**state, "0.weight": np.zeros((96, 3, 11, 11), np.float32)})
    _error(capsys, ["--random", "--weights", str(tmp_path / "shape.npz")], "0.weight has shape (96, 1, 11, 11)")
    for value in (np.nan, np.inf):                                # docs/visualizing.md: a refusal, not "nan%"
        bias = state["14.bias"].copy()
        bias[7] = value
        np.savez(tmp_path / "diverged.npz", **{**state, "14.bias": bias})
        _error(capsys, ["--random", "--weights", str(tmp_path / "diverged.npz")],
               "diverged.npz: 14.bias holds NaN or inf")
    np.savez(tmp_path / "fed.npz", **state, **{"input.variant": np.array("paper"), "input.size": np.array(224),
                                               "input.pixels": np.array("unit")})
    _error(capsys, ["--random", "--weights", str(tmp_path / "fed.npz")],
           "fed.npz: input.variant is array('paper'", "the weights are the d2l AlexNet's")
    np.savez(tmp_path / "nomean.npz", **state, **{"input.variant": np.array("d2l"), "input.size": np.array(224),
                                                  "input.pixels": np.array("mean-subtracted")})
    _error(capsys, ["--random", "--weights", str(tmp_path / "nomean.npz")], "nomean.npz: input.mean must be")


def test_weights_without_input_entries_are_fed_the_variant_s_default_with_a_note(weights, tmp_path, capsys):
    state, _ = weights
    np.savez(tmp_path / "bare.npz", **state)                      # torch's keys only
    assert walkthrough.main(["--random", "--weights", str(tmp_path / "bare.npz")]) == 0
    out = capsys.readouterr().out
    assert (f"note: {tmp_path / 'bare.npz'} does not say how its run fed the network (no input.* entries): "
            f"assuming the d2l variant's 224x224 input, pixels in [0, 1]") in out
    assert "input  (1, 1, 224, 224)" in out


def test_command_line_is_one_line_and_torch_free(tmp_path):
    """At the real command line (no traceback), and numpy_ref's reader and walkthrough never import torch."""
    p = subprocess.run([sys.executable, "-m", "numpy_ref.walkthrough", "--index", "-1", "--data-dir",
                        str(write_fake_fashion_mnist(tmp_path / "fm"))], capture_output=True, text=True, timeout=600)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    p = subprocess.run([sys.executable, "-c", "import sys, numpy_ref.walkthrough, numpy_ref.idx; "
                        "assert 'torch' not in sys.modules, 'torch imported'"], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr


def test_one_reader_for_both():
    """torch_model.data and the walkthrough read through the same numpy_ref.idx functions."""
    import numpy_ref.idx as idx
    import torch_model.data as data

    assert data.DatasetError is idx.DatasetError
    assert walkthrough.load_split_arrays is idx.load_split_arrays and data.load_split_arrays is idx.load_split_arrays


def _pdb_session(args: list[str], commands: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "numpy_ref.walkthrough", "--random", *args], input=commands,
                          capture_output=True, text=True, timeout=600)


def test_break_at_then_q_ends_quietly():
    proc = _pdb_session(["--break-at", "0"], "p x.shape\nq\n")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr and "BdbQuit" not in proc.stderr, proc.stderr
    assert "-- stopping before layer 0" in proc.stdout and "(1, 1, 224, 224)" in proc.stdout


@pytest.mark.slow
def test_break_at_backward_stops_with_dout_in_scope():
    proc = _pdb_session(["--break-at-backward", "20"], "p dout.shape\np type(layer).__name__\nq\n")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "-- stopping before layer 20's backward" in proc.stdout
    assert "(1, 10)" in proc.stdout and "'Linear'" in proc.stdout
    assert " 0 Conv2d    d_input" not in proc.stdout  # q ended the walk there


def test_break_at_backward_out_of_range(capsys):
    _error(capsys, ["--random", "--break-at-backward", "21"], "--break-at-backward must be in 0..20, got 21")


def test_triton_walkthrough_agrees_with_numpy_ref_layer_by_layer(capsys):
    """python -m triton_kernels.walkthrough: a narrow AlexNet in Triton's interpreter, each layer within 1e-4."""
    from triton_kernels import walkthrough as tw

    assert tw.main(["--random", "--width", "32"]) == 0
    out = capsys.readouterr().out
    for layer in (" 0 Conv2d+ReLU", " 2 MaxPool2d", "12 MaxPool2d", "18 Linear"):
        assert layer in out, out
    assert "TOO LARGE" not in out
    assert tw.main(["--random", "--size", "40"]) == 2
    assert "--size 40 is too small" in capsys.readouterr().err
