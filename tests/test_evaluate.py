"""`alexnet evaluate`: its numbers against a plain torch loop, the confusion matrix's sums, the same predictions on
every backend, the pictures, `alexnet train`'s run pictures, and every bad checkpoint as one line with exit 2."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import write_fake_fashion_mnist
from probe_checkpoint import shared_probe_checkpoint
from torch_model.cli import main as alexnet_main
from torch_model.data import CLASS_NAMES, load_split, to_input
from torch_model.checkpoint import load
from torch_model.evaluate import Evaluation, make_predictor, predict_dataset
from torch_model.model import alexnet

N_TEST = 40
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def probe(real_data_dir):
    return shared_probe_checkpoint(real_data_dir)


def _plain_torch_predictions(ckpt_path, images):
    """The reference: torch.load, load_state_dict, eval, argmax, no project code but the model and to_input."""
    state = torch.load(ckpt_path, weights_only=True)["model"]
    net = alexnet(init=False).eval()
    net.load_state_dict(state)
    with torch.no_grad():
        return torch.cat([net(to_input(images[i:i + 16])) for i in range(0, len(images), 16)])   # (N, 10)


def test_evaluate_equals_a_plain_torch_loop(probe, real_data_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    assert alexnet_main(["evaluate", "--checkpoint", str(probe), "--limit-test", str(N_TEST), "--out", str(out),
                         "--batch-size", "16", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "evaluation.json").read_text())

    test = load_split(real_data_dir, "test").subset(N_TEST)
    labels = test.labels.tolist()
    preds = _plain_torch_predictions(probe, test.images).argmax(1).tolist()
    confusion = [[0] * 10 for _ in range(10)]
    for t, p in zip(labels, preds):
        confusion[t][p] += 1
    accuracy = sum(t == p for t, p in zip(labels, preds)) / N_TEST
    assert report["images"] == N_TEST and report["confusion"] == confusion
    assert report["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert f"test accuracy {accuracy:.4f} ({round(accuracy * N_TEST)}/{N_TEST})" in printed
    assert len(set(preds)) >= 5, "the probe checkpoint should predict many classes"
    for c, row in enumerate(report["per_class"]):
        tp = sum(t == c and p == c for t, p in zip(labels, preds))
        n_true, n_pred = labels.count(c), preds.count(c)
        tn = sum(t != c and p != c for t, p in zip(labels, preds))
        assert row["name"] == CLASS_NAMES[c] and row["images"] == n_true
        assert row["accuracy"] == pytest.approx((tp + tn) / N_TEST, abs=1e-12)
        assert row["recall"] == (pytest.approx(tp / n_true, abs=1e-12) if n_true else None)
        assert row["precision"] == (pytest.approx(tp / n_pred, abs=1e-12) if n_pred else None)
        assert f"{CLASS_NAMES[c]:<11} {n_true:>6}" in printed
    for name in ("confusion.png", "mistakes.png"):
        assert (out / name).read_bytes()[:8] == PNG


def test_confusion_matrix_sums_and_diagonal():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)                           # (N,)
    logits = rng.normal(size=(500, 10))                         # (N, C)
    logits[np.arange(500), labels] += rng.uniform(0, 3, 500)   # right more often than chance
    ev = Evaluation(labels, logits)
    M = ev.confusion
    assert M.sum() == 500 and (M.sum(axis=1) == np.bincount(labels, minlength=10)).all()
    assert (M.sum(axis=0) == np.bincount(logits.argmax(1), minlength=10)).all()
    assert ev.accuracy == np.trace(M) / 500 == np.mean(logits.argmax(1) == labels)
    rows = ev.per_class()
    assert sum(r["recall"] * r["images"] for r in rows) == pytest.approx(np.trace(M))
    mistakes = ev.mistakes()
    assert len(mistakes) == 500 - np.trace(M) and (ev.preds[mistakes] != labels[mistakes]).all()
    assert (np.diff(ev.confidence[mistakes]) <= 0).all()       # the most confident first


def _assert_same_predictions(logits, expected, what):
    """float32 both sides, sums in another order: logits agree to ~1e-5 of their size; predictions exactly
    wherever the top-2 margin is larger than that (checked, so a near-tie cannot hide a wrong answer)."""
    err = (logits - expected).abs().max().item()
    assert err <= 1e-4 * expected.abs().max().item(), (what, err)
    top2 = expected.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 10 * err
    assert clear.sum() >= len(clear) - 1, (what, "too many near-ties to compare")
    assert torch.equal(logits.argmax(1)[clear], expected.argmax(1)[clear]), what


def test_numpy_backend_gives_torchs_predictions(probe, real_data_dir):
    ckpt = load(probe)
    test = load_split(real_data_dir, "test").subset(6)
    ref = predict_dataset(make_predictor(ckpt, "torch"), test, 6, progress=False)               # (6, 10)
    assert torch.equal(ref.argmax(1), _plain_torch_predictions(probe, test.images).argmax(1))
    logits = predict_dataset(make_predictor(ckpt, "numpy"), test, 3, progress=False)           # two batches
    _assert_same_predictions(logits, ref, "numpy")


def test_triton_predictor_holds_the_checkpoint(probe):
    """On a CPU the full 224x224 AlexNet through the Triton interpreter takes minutes per image (conv1 alone
    ~20 s of CPU on the development machine), so here: the triton predictor is our kernels with exactly the
    checkpoint's weights; the GPU test below compares its predictions with torch's."""
    from triton_kernels.modules import TritonConv2d, TritonMaxPool2d

    ckpt = load(probe)
    learner = make_predictor(ckpt, "triton")
    kinds = [type(m) for m in learner.net]
    assert kinds.count(TritonConv2d) == 5 and kinds.count(TritonMaxPool2d) == 3
    state = learner.model_state_dict()
    assert list(state) == list(ckpt.state) and all(torch.equal(state[k], ckpt.state[k]) for k in state)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the interpreter: minutes per image)")
def test_gpu_triton_backend_gives_torchs_predictions(probe, real_data_dir):
    ckpt = load(probe)
    test = load_split(real_data_dir, "test").subset(64).to("cuda")
    flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False   # exact fp32 on both sides
    try:
        ref = predict_dataset(make_predictor(ckpt, "torch", "cuda"), test, 32, progress=False)
        logits = predict_dataset(make_predictor(ckpt, "triton", "cuda"), test, 32, progress=False)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
    _assert_same_predictions(logits, ref, "triton")


def test_train_leaves_its_pictures(tmp_path):
    from torch_model.config import TrainConfig, resolve_config
    from torch_model.train import fit

    data = write_fake_fashion_mnist(tmp_path / "fm", n_train=8, n_test=10)
    out = tmp_path / "run"
    result = fit(resolve_config(TrainConfig(epochs=1, batch_size=8, limit_train=8, data_dir=str(data), out=str(out),
                                            progress=False, pictures=True)))
    assert result.status == "completed"
    for name in ("confusion.png", "mistakes.png", "filters.png"):
        assert (out / name).read_bytes()[:8] == PNG, name
    report = json.loads((out / "evaluation.json").read_text())
    assert report["images"] == 10 and report["accuracy"] == pytest.approx(result.test_acc, abs=1e-12)
    # and the run's own checkpoints load in evaluate: last.pt (learner state) and best.pt (weights)
    for name in ("best.pt", "last.pt"):
        ckpt = load(out / name)
        assert ckpt.resize == 224 and ckpt.seed == 0 and ckpt.epoch == 1
    # the command line makes them unless told not to (fit's own default is off: tests and benchmarks call it)
    from torch_model.cli import build_parser
    from torch_model.train import config_from_args

    for flags, wanted in (([], True), (["--no-pictures"], False)):
        args = build_parser("train").parse_args(["--data-dir", str(data), "--out", str(tmp_path / "r"), *flags])
        assert config_from_args(args).pictures is wanted


# ----------------------------------------------------------------------------------------------- bad input

def _expanded(shape, value=0.0):
    """A tensor of `shape` whose storage is one element: a checkpoint of AlexNet's shapes in a few bytes."""
    return torch.full((1,), value).expand(*shape)


def _fake_state(**override):
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in alexnet(init=False).state_dict().items()}
    shapes.update(override)
    return {k: _expanded(s) for k, s in shapes.items()}


def _one_line_error(capsys, argv, *needles):
    assert alexnet_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"alexnet {argv[0]}: error: "), err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.mark.parametrize("command", ["evaluate", "visualize", "export"])
def test_bad_checkpoints_one_line_exit_2(command, tmp_path, capsys):
    extra = ["--out", str(tmp_path / "w.npz")] if command == "export" else ["--out", str(tmp_path / "o")]
    cases = {
        "missing.pt": (None, "no such file"),
        "corrupt.pt": (b"\x00garbage, not a zip", "not a readable checkpoint"),
        "list.pt": ([1, 2, 3], "holds a list"),
        "noweights.pt": (dict(epoch=3, history=[]), "no model weights inside"),
        "classes.pt": (dict(model=_fake_state(**{"20.weight": (1000, 4096), "20.bias": (1000,)})),
                       "a 1000-class model; Fashion-MNIST has 10"),
        "paper.pt": (dict(model=_fake_state(**{"0.weight": (96, 3, 11, 11)})),
                     "0.weight has shape (96, 3, 11, 11), the d2l AlexNet's is (96, 1, 11, 11)"),
        "nan.pt": (dict(learner=dict(model={**_fake_state(), "14.bias": _expanded((4096,), float("nan"))})),
                   "14.bias holds NaN"),
        "resize.pt": (dict(model=_fake_state(), config=dict(resize=64)), "resize 64"),
        # an image folder's run with 10 classes: its weights fit, its inputs and class names are not Fashion-MNIST's
        "photos.pt": (dict(model=_fake_state(), config=dict(dataset="imagefolder", data_dir="photos", resize=224,
                                                             mean=[0.4], std=[0.2])),
                      "trained on --dataset imagefolder --data-dir photos, not Fashion-MNIST"),
        "pixels.pt": (dict(model=_fake_state(), config=dict(pixels="raw")), "--pixels 'raw', none of"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            torch.save(content, path)
        _one_line_error(capsys, [command, "--checkpoint", str(path), *extra], str(path), message)
    _one_line_error(capsys, [command, "--checkpoint", str(tmp_path), *extra], "is a folder")


def test_bad_flags_one_line_exit_2(probe, tmp_path, capsys):
    _one_line_error(capsys, ["evaluate", "--checkpoint", str(probe), "--limit-test", "0"], "--limit-test must be >= 1")
    (tmp_path / "file").write_text("x")
    _one_line_error(capsys, ["evaluate", "--checkpoint", str(probe), "--out", str(tmp_path / "file"),
                             "--limit-test", "1", "--no-progress"], "is a file")
    _one_line_error(capsys, ["evaluate", "--checkpoint", str(probe), "--data-dir", str(tmp_path / "file")],
                    "--data-dir", "is a file, not a directory")


def test_a_bare_state_dict_is_evaluated_with_a_note_on_its_pixels(tmp_path, capsys):
    """No run config inside or beside it: the pixels are assumed, and said so (a paper network trained on
    mean-subtracted pixels would be fed wrongly without anyone knowing)."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in alexnet(init=False, variant="paper").state_dict().items()}
    torch.save({k: _expanded(s, 0.01) for k, s in shapes.items()}, tmp_path / "bare.pt")
    assert alexnet_main(["evaluate", "--checkpoint", str(tmp_path / "bare.pt"), "--limit-test", "1",
                         "--no-progress", "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    assert (f"note: {tmp_path / 'bare.pt'} records no run config (a bare state_dict): assuming its paper AlexNet "
            f"was fed a 227x227 input, each grey image repeated to 3 channels, pixels in [0, 1]; a --pixels "
            f"mean-subtracted run (the paper variant's default) was fed raw 0..255 pixels") in printed


def test_evaluation_json_has_no_nan():
    ev = Evaluation(np.array([0, 1]), np.array([[1.0] + [0.0] * 9, [1.0] + [0.0] * 9]))  # class 1 never predicted
    report = ev.to_json()
    assert report["per_class"][1]["precision"] is None and report["per_class"][1]["recall"] == 0
    assert not any(isinstance(v, float) and math.isnan(v) for row in report["per_class"] for v in row.values())
    json.dumps(report, allow_nan=False)


# ----------------------------------------------------------------------------------------------- the paper variant

@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    """A freshly built paper AlexNet saved as `alexnet train --variant paper` saves best.pt (its init, 10 classes)."""
    torch.manual_seed(0)
    net = alexnet(10, variant="paper")
    run_dir = tmp_path_factory.mktemp("paper")
    config = dict(variant="paper", resize=227, seed=0, backend="torch")
    torch.save(dict(epoch=1, test_acc=0.1, model=net.state_dict(), config=config), run_dir / "best.pt")
    return run_dir / "best.pt"


def test_paper_variant_evaluate_visualize_export(paper_run, real_data_dir, tmp_path, capsys):
    """A paper-variant run's checkpoint: 3x227x227 input (the grey image repeated), its own keys, every command."""
    from numpy_ref import walkthrough

    ckpt = load(paper_run)
    assert (ckpt.variant, ckpt.resize, ckpt.channels) == ("paper", 227, 3)
    test = load_split(real_data_dir, "test").subset(2)
    with torch.no_grad():
        x = to_input(test.images, 227).expand(-1, 3, -1, -1)                     # (2, 3, 227, 227)
        net = alexnet(10, variant="paper", init=False).eval()
        net.load_state_dict(torch.load(paper_run, weights_only=True)["model"])
        expected = net(x)                                                        # (2, 10)
    for backend in ("torch", "numpy"):
        logits = predict_dataset(make_predictor(ckpt, backend), test, 2, ckpt.resize, False, channels=3)
        _assert_same_predictions(logits, expected, f"paper {backend}")

    out = tmp_path / "vis"
    assert alexnet_main(["visualize", "--checkpoint", str(paper_run), "--index", "9998", "--out", str(out)]) == 0
    assert "the paper AlexNet" in capsys.readouterr().out
    assert all((out / n).read_bytes()[:8] == PNG for n in ("filters.png", "feature_maps.png", "saliency.png"))

    npz = tmp_path / "paper.npz"
    assert alexnet_main(["export", "--checkpoint", str(paper_run), "--out", str(npz)]) == 0
    capsys.readouterr()
    assert walkthrough.main(["--weights", str(npz), "--index", "0", "--data-dir", str(real_data_dir)]) == 0
    printed = capsys.readouterr().out
    top = int(expected[0].argmax())
    assert "(trained, the paper AlexNet)" in printed and "(1, 3, 227, 227)" in printed
    assert f"top 3: {CLASS_NAMES[top]} {torch.softmax(expected[0], 0)[top].item():.1%}" in printed


def test_blocks_of_both_variants():
    import numpy_ref
    from torch_model.visualize import blocks

    assert blocks(numpy_ref.alexnet(init=False)) == [(2, "pool1"), (5, "pool2"), (7, "conv3+relu"),
                                                     (9, "conv4+relu"), (12, "pool5")]
    assert blocks(numpy_ref.alexnet(init=False, variant="paper")) == [(3, "pool1"), (7, "pool2"), (9, "conv3+relu"),
                                                                      (11, "conv4+relu"), (14, "pool5")]
