"""The seed model, `alexnet summary`, the training loop (resume, NaN stop) and the CLI's error handling."""
import json
import math
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

from torch_model import alexnet, num_parameters
from torch_model.summary import layer_summary
from torch_model.checkpoint import read
from torch_model.config import TrainConfig, resolve_config
from torch_model.train import fit

SEED_KEYS = [f"{i}.{p}" for i in (0, 3, 6, 8, 10, 14, 17, 20) for p in ("weight", "bias")]
# the seed's comment column: output shapes for one 1x1x224x224 image, layer by layer
SEED_SHAPES = [
    [1, 96, 54, 54], [1, 96, 54, 54], [1, 96, 26, 26],
    [1, 256, 26, 26], [1, 256, 26, 26], [1, 256, 12, 12],
    [1, 384, 12, 12], [1, 384, 12, 12], [1, 384, 12, 12], [1, 384, 12, 12],
    [1, 256, 12, 12], [1, 256, 12, 12], [1, 256, 5, 5], [1, 6400],
    [1, 4096], [1, 4096], [1, 4096], [1, 4096], [1, 4096], [1, 4096], [1, 10],
]


def test_seed_model_structure():
    net = alexnet()
    assert len(net) == 21
    assert num_parameters(net) == 46_764_746
    assert list(net.state_dict()) == SEED_KEYS
    assert [m.__class__.__name__ for m in net] == (
        ["Conv2d", "ReLU", "MaxPool2d"] * 2 + ["Conv2d", "ReLU"] * 3 + ["MaxPool2d", "Flatten"]
        + ["Linear", "ReLU", "Dropout"] * 2 + ["Linear"])
    assert (net[0].kernel_size, net[0].stride, net[0].padding) == ((11, 11), (4, 4), (1, 1))
    assert (net[3].kernel_size, net[3].padding) == ((5, 5), (2, 2))
    assert all(net[i].kernel_size == 3 and net[i].stride == 2 for i in (2, 5, 12))
    assert all(net[i].p == 0.5 for i in (16, 19))


def test_xavier_init():
    torch.manual_seed(0)
    net = alexnet()
    for i in (0, 3, 14, 20):
        w = net[i].weight
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert w.abs().max() <= bound
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)   # uniform(-b, b) has std b/sqrt(3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="backend"):
        alexnet(backend="cudnn")
    with pytest.raises(ValueError, match="num_classes"):
        alexnet(num_classes=0)


def test_summary_matches_seed_comments():
    rows = layer_summary()
    assert [list(r.shape) for r in rows] == SEED_SHAPES
    assert sum(r.params for r in rows) == 46_764_746
    conv1 = rows[0]
    assert conv1.flops == 2 * 96 * 54 * 54 * 1 * 11 * 11 + 96 * 54 * 54


def test_sgd_steps_lower_the_loss(real_data_dir):
    from torch_model.learners import make_learner
    from torch_model.data import batches, load_split

    ds = load_split(real_data_dir, "train").subset(16)
    X, y = next(batches(ds, 16))                              # (16, 1, 224, 224), a fixed batch
    torch.manual_seed(0)
    learner = make_learner("torch", lr=0.01, device=torch.device("cpu"))

    def eval_loss():
        learner.eval()
        return nn.functional.cross_entropy(learner.predict(X), y).item()

    before = eval_loss()
    learner.train()
    for _ in range(8):
        learner.step(X, y)
    after = eval_loss()
    assert after < before - 0.01, (before, after)


def _tiny(tmp_path, name, **kw):
    base = dict(epochs=2, batch_size=16, limit_train=32, limit_test=16, out=str(tmp_path / name),
                progress=False, seed=3)
    base.update(kw)
    return resolve_config(TrainConfig(**base))


def _strip_times(history):
    return [{k: v for k, v in h.items() if k in ("epoch", "loss", "train_acc", "test_acc", "examples")}
            for h in history]


def test_resume_equals_uninterrupted(tmp_path, real_data_dir):
    full = fit(_tiny(tmp_path, "full"))
    assert full.status == "completed" and len(full.history) == 2

    def interrupt(epoch, row, learner):
        raise KeyboardInterrupt            # Ctrl-C right after epoch 1 was saved
    cut = fit(_tiny(tmp_path, "cut"), on_epoch_end=interrupt)
    assert cut.status == "interrupted" and len(cut.history) == 1
    assert (tmp_path / "cut" / "curves.png").is_file()
    resumed = fit(_tiny(tmp_path, "cut", resume=True))
    assert _strip_times(resumed.history) == _strip_times(full.history)
    a = read(tmp_path / "full" / "last.pt")["learner"]["model"]
    b = read(tmp_path / "cut" / "last.pt")["learner"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "cut" / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,loss,train_acc,test_acc,examples_per_sec") and len(lines) == 3
    best = read(tmp_path / "full" / "best.pt")
    assert list(best["model"]) == SEED_KEYS


def test_resume_refuses_changed_settings_and_overwrite(tmp_path, real_data_dir):
    fit(_tiny(tmp_path, "run", epochs=1))
    with pytest.raises(ValueError, match="already holds a run"):
        fit(_tiny(tmp_path, "run", epochs=1))
    with pytest.raises(ValueError, match=r"lr: 0\.01 -> 0\.1"):
        fit(_tiny(tmp_path, "run", epochs=2, lr=0.1, resume=True))
    with pytest.raises(ValueError, match="last.pt not found"):
        fit(_tiny(tmp_path, "none", resume=True))


def test_fit_trains_only_a_settled_config(tmp_path):
    """The settings are decided once (config_from_args / resolve_config), never again inside fit: an unsettled
    TrainConfig is refused, naming what is undecided, before any folder is made."""
    with pytest.raises(ValueError, match=r"not settled \(lr, resize, backend, amp, channels_last, momentum, "
                                         r"weight_decay, pixels undecided\)"):
        fit(TrainConfig(epochs=1, out=str(tmp_path / "run"), progress=False))
    assert not (tmp_path / "run").exists()
    settled = resolve_config(TrainConfig(device="cpu"))
    assert resolve_config(settled) == settled                  # settling a settled config changes nothing


def test_a_resumed_record_that_cannot_run_here_names_its_file(tmp_path):
    """resume_config settles the recorded settings like a new run's; a bad one is the record's, not a flag's."""
    from dataclasses import asdict

    from torch_model.config import resume_config

    record = {**asdict(resolve_config(TrainConfig(device="cpu"))), "amp": "fp16"}
    (tmp_path / "config.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=rf"the run recorded in {re.escape(str(tmp_path / 'config.json'))} cannot "
                                         r"run here: --amp must be one of"):
        resume_config(tmp_path, {})


def test_a_resumed_run_runs_where_the_flags_say_not_where_it_was_recorded(tmp_path):
    """The process context (distributed.setup) comes from --device and --dist-timeout before the record is read, so
    a resume checks the run for that device: a run recorded on cuda continues on this machine's `auto`."""
    from dataclasses import asdict

    from torch_model.config import resume_config

    record = {**asdict(resolve_config(TrainConfig(device="cpu"))), "device": "cuda:3", "dist_timeout": 7.0}
    (tmp_path / "config.json").write_text(json.dumps(record))
    resumed = resume_config(tmp_path, {})
    assert (resumed.device, resumed.dist_timeout) == ("auto", 300.0)
    assert {k: v for k, v in asdict(resumed).items() if k not in ("device", "dist_timeout", "resume", "out")} == \
        {k: v for k, v in record.items() if k not in ("device", "dist_timeout", "resume", "out")}
    given = resume_config(tmp_path, {"device": "cpu", "dist_timeout": 9.0})
    assert (given.device, given.dist_timeout) == ("cpu", 9.0)

def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, real_data_dir, capsys):
    def poison(epoch, row, learner):
        with torch.no_grad():
            learner.net[20].weight.fill_(float("nan"))     # epoch 2's first loss is NaN

    result = fit(_tiny(tmp_path, "nan", epochs=3), on_epoch_end=poison)
    assert result.status == "nan" and len(result.history) == 1
    assert "loss became nan at epoch 2, step 1" in capsys.readouterr().out
    saved = read(tmp_path / "nan" / "last.pt")
    assert saved["epoch"] == 1 and torch.isfinite(saved["learner"]["model"]["20.weight"]).all()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "torch_model", *args], capture_output=True, text=True, timeout=600)


def test_cli_missing_data_dir(tmp_path):
    p = _cli("train", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"))
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr
    assert "nowhere: no such directory" in p.stderr and "dataset-fashion-mnist" in p.stderr


def test_cli_corrupt_file(tmp_path, fake_data):
    bad = fake_data / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    p = _cli("train", "--data-dir", str(fake_data), "--out", str(tmp_path / "run"))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.startswith("alexnet train: error: ") and str(bad) in p.stderr
    assert p.stderr.strip().count("\n") == 0


def test_cli_bad_flag_values(tmp_path):
    p = _cli("train", "--resize", "64", "--out", str(tmp_path / "run"))
    assert p.returncode == 2 and "--resize 64" in p.stderr and "Traceback" not in p.stderr
    p = _cli("train", "--epochs", "0", "--out", str(tmp_path / "run"))
    assert p.returncode == 2 and "--epochs must be >= 1" in p.stderr


def test_cli_summary():
    p = _cli("summary")
    assert p.returncode == 0, p.stderr
    assert "[1, 96, 54, 54]" in p.stdout and "[1, 6400]" in p.stdout and "46,764,746" in p.stdout


def test_no_checkpoint_run_writes_metrics_only(tmp_path, real_data_dir):
    result = fit(_tiny(tmp_path, "nock", epochs=1, checkpoint=False))
    assert result.status == "completed" and len(result.history) == 1
    files = sorted(p.name for p in (tmp_path / "nock").iterdir())
    assert files == ["config.json", "curves.png", "metrics.csv"]


def test_channels_last_learner_matches_nchw():
    from torch_model.learners import make_learner

    X = torch.rand(4, 1, 224, 224)                          # (4, 1, 224, 224)
    y = torch.tensor([0, 3, 7, 9])
    results = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        learner = make_learner("torch", lr=0.01, device=torch.device("cpu"), channels_last=channels_last)
        learner.eval()                                      # no dropout: the two runs see the same network
        loss, logits = learner.step(X, y)
        results.append((loss, logits, learner.model_state_dict()["0.weight"]))
        w3 = learner.net[3].weight                          # (256, 96, 5, 5): NHWC strides only when asked
        assert (w3.is_contiguous(memory_format=torch.channels_last) and not w3.is_contiguous()) == channels_last
    (l0, z0, w0), (l1, z1, w1) = results
    assert l0 == pytest.approx(l1, rel=1e-5)
    torch.testing.assert_close(z1, z0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w1, w0, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="--channels-last"):
        make_learner("numpy", lr=0.01, device=torch.device("cpu"), channels_last=True)


def test_resize_range_is_what_the_model_accepts():
    from torch_model.model import check_resize, final_feature_size

    net = alexnet(init=False).eval()
    with torch.no_grad():
        for r in (192, 193, 224, 225):
            fits = final_feature_size(r) == 5
            if fits:
                check_resize(r)
                assert net(torch.rand(1, 1, r, r)).shape == (1, 10)
            else:
                with pytest.raises(ValueError, match=rf"--resize {r}: the d2l AlexNet takes 193..224"):
                    check_resize(r)
                with pytest.raises(RuntimeError):
                    net(torch.rand(1, 1, r, r))
    assert final_feature_size(224) == 5 and [final_feature_size(r) == 5 for r in (192, 193, 224, 225)] == \
        [False, True, True, False]
