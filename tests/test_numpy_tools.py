"""The step-through (`python -m numpy_ref.walkthrough`) and `alexnet bench numpy`, run for real (small)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from numpy_ref import walkthrough
from torch_model.cli import main as alexnet_main
from torch_model.data import load_split

SEED_SHAPES = [(1, 96, 54, 54), (1, 96, 54, 54), (1, 96, 26, 26), (1, 256, 26, 26), (1, 256, 26, 26),
               (1, 256, 12, 12), (1, 384, 12, 12), (1, 384, 12, 12), (1, 384, 12, 12), (1, 384, 12, 12),
               (1, 256, 12, 12), (1, 256, 12, 12), (1, 256, 5, 5), (1, 6400), (1, 4096), (1, 4096), (1, 4096),
               (1, 4096), (1, 4096), (1, 4096), (1, 10)]  # the seed's comment column, layer by layer


@pytest.mark.parametrize("n_in,n_out", [(28, 224), (5, 13), (7, 3), (1, 4)])
def test_resize_matches_torch_bilinear(n_in, n_out):
    image = np.random.default_rng(0).uniform(0, 1, (n_in, n_in + 2))              # (H, W), not square
    ours = walkthrough.resize_bilinear(image, n_out)                                 # (n_out, n_out)
    ref = F.interpolate(torch.from_numpy(image)[None, None], size=(n_out, n_out), mode="bilinear",
                        align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-14)


def test_walkthrough_real_image_matches_torch_data_pipeline(real_data_dir, capsys):
    """The torch-free IDX reader + resize give the same input as torch_model.data, and every layer's shape
    printed is the seed's."""
    image, label = walkthrough.read_test_image(real_data_dir, 5)
    test = load_split(real_data_dir, "test")
    assert label == int(test.labels[5]) and np.array_equal(image, test.images[5].numpy())
    assert walkthrough.main(["--index", "5", "--data-dir", str(real_data_dir)]) == 0
    out = capsys.readouterr().out
    assert f"test image 5 from {real_data_dir}: {walkthrough.CLASS_NAMES[label]}" in out
    for i, shape in enumerate(SEED_SHAPES):
        assert f"{i:>2} " in out and str(shape) in out


def test_walkthrough_random_image_shapes_and_gradients():
    x = np.random.default_rng(1).uniform(0, 1, (1, 1, 224, 224))
    out = io.StringIO()
    result = walkthrough.walk(x, label=4, out=out)
    assert [tuple(s) for s in result["shapes"]] == SEED_SHAPES
    assert result["grad_shapes"][0] == (1, 1, 224, 224) and result["grad_shapes"][-1] == (1, 4096)
    assert np.isfinite(result["loss"]) and abs(result["loss"] - np.log(10)) < 0.5   # untrained: near uniform
    assert "backward" in out.getvalue() and out.getvalue().count("\n") > 2 * len(SEED_SHAPES)
    with pytest.raises(ValueError, match="--index"):
        walkthrough.read_test_image(walkthrough.find_data_dir(), 10**6)


def test_bench_numpy_runs_and_reports_the_ratio(capsys, tmp_path):
    path = tmp_path / "numpy_bench.json"
    assert alexnet_main(["bench", "numpy", "--batch", "1", "--repeat", "1", "--threads", "1", "--whole-only",
                         "--no-progress", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "whole AlexNet" in out and "1 thread(s)" in out and "goal" in out
    data = json.loads(path.read_text())
    whole = data["rows"][-1]
    assert data["batch"] == 1 and data["dtype"] == "float32" and data["torch"] == torch.__version__
    assert whole["numpy_ms"] > 0 and whole["torch_ms"] > 0 and whole["ratio"] == pytest.approx(
        whole["numpy_ms"] / whole["torch_ms"])
    assert whole["flops_fwd_bwd"] == 3 * 2 * (96 * 54 * 54 * 121 + 256 * 26 * 26 * 96 * 25 + 384 * 144 * 256 * 9
                                              + 384 * 144 * 384 * 9 + 256 * 144 * 384 * 9 + 6400 * 4096
                                              + 4096 * 4096 + 4096 * 10)
    assert alexnet_main(["bench", "numpy", "--batch", "0"]) == 2
