"""`alexnet train` tried as a new user would: --resume as recorded, the NaN stop's message, a full disk,
a checkpoint of the wrong structure, two runs on one folder, file modes, no empty folders, limits past the data."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from torch_model import checkpoint, cli, train
from torch_model.files import WriteError, atomic_write
from torch_model.checkpoint import CheckpointWriteError, read
from torch_model.config import TrainConfig, resolve_config
from torch_model.train import fit


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "torch_model", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


class _Ran:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _main(capsys, *args):
    """`alexnet ARGS` in this process (no interpreter start-up): its exit status and what it printed."""
    capsys.readouterr()
    status = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return _Ran(status, out, err)


def _one_line_error(p, *fragments):
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and p.stderr.strip().count("\n") == 0, p.stderr
    for fragment in fragments:
        assert str(fragment) in p.stderr, (fragment, p.stderr)


def _tiny(out, data, **kw):
    base = dict(epochs=2, batch_size=16, limit_train=16, limit_test=10, out=str(out), data_dir=str(data),
                progress=False, seed=1, lr=0.02)
    base.update(kw)
    return resolve_config(TrainConfig(**base))


def _stat(path: Path):
    return path.read_bytes(), path.stat().st_mtime_ns


# ----------------------------------------------------------------------------------------------- resume as recorded

def test_resume_continues_the_recorded_run(tmp_path, fake_data, capsys):
    """`--resume --out R` alone continues R as its last.pt records it; a given flag must agree; --epochs extends; a
    lower --epochs is refused; a finished run is left as it is."""
    out = tmp_path / "R"

    def interrupt(epoch, row, learner):
        raise KeyboardInterrupt
    cut = fit(_tiny(out, fake_data, limit_train=100000, amp="none"), on_epoch_end=interrupt)
    assert cut.status == "interrupted" and cut.config.limit_train == 20      # clamped to the 20 fake images
    recorded = json.loads((out / "config.json").read_text())
    assert (recorded["batch_size"], recorded["seed"], recorded["lr"], recorded["epochs"]) == (16, 1, 0.02, 2)

    # the resumed config is the recorded one, not the CLI's defaults (batch 128, seed 0, the quick preset's epochs)
    args = cli.build_parser("train").parse_args(["--resume", "--out", str(out)])
    cfg = train.config_from_args(args)
    assert {k: v for k, v in vars(cfg).items() if k not in ("resume", "progress")} == \
        {k: v for k, v in recorded.items() if k not in ("resume", "progress")}

    before = _stat(out / "config.json")
    p = _main(capsys, "train", "--resume", "--out", out, "--lr", "0.5", "--seed", "1")      # a given flag must agree
    _one_line_error(p, "--lr 0.5 (recorded 0.02)", out / "last.pt")                          # the run's one record
    assert "--seed" not in p.stderr and _stat(out / "config.json") == before

    p = _main(capsys, "train", "--resume", "--out", out, "--no-progress")
    assert p.returncode == 0, p.stderr
    assert "epoch 2/2:" in p.stdout and "epoch 1/2" not in p.stdout and "20 train / 10 test images" in p.stdout
    assert read(out / "last.pt")["epoch"] == 2
    assert len((out / "metrics.csv").read_text().splitlines()) == 3

    finished = [_stat(out / name) for name in ("config.json", "last.pt", "metrics.csv")]
    p = _main(capsys, "train", "--resume", "--out", out)
    assert p.returncode == 0 and "nothing to do" in p.stdout and "epoch" not in p.stdout.split("nothing to do")[0]
    assert [_stat(out / name) for name in ("config.json", "last.pt", "metrics.csv")] == finished

    with pytest.raises(ValueError, match=r"--epochs 1: the run in .* has already trained 2 epoch"):
        fit(_tiny(out, fake_data, epochs=1, limit_train=20, amp="none", resume=True))

    p = _main(capsys, "train", "--resume", "--out", out, "--epochs", "3", "--no-progress")   # extend the run
    assert p.returncode == 0, p.stderr
    assert "epoch 3/3:" in p.stdout and read(out / "last.pt")["epoch"] == 3
    assert json.loads((out / "config.json").read_text())["epochs"] == 3

    # `cp R/best.pt R/last.pt`, then --resume: one line naming the file and what is missing; nothing overwritten
    shutil.copyfile(out / "best.pt", out / "last.pt")
    files = {p.name: _stat(p) for p in out.iterdir()}
    p = _main(capsys, "train", "--resume", "--out", out, "--epochs", "4")
    _one_line_error(p, out / "last.pt", "'learner'", "best.pt")
    assert {p.name: _stat(p) for p in out.iterdir()} == files


def test_resume_refuses_a_checkpoint_of_another_structure(tmp_path, fake_data):
    out = tmp_path / "R"
    out.mkdir()
    cfg = _tiny(out, fake_data, amp="none")
    checkpoint.write_config(out, asdict(cfg))
    for obj, expected in (([1, 2, 3], "a list"),
                          ({"weights": torch.zeros(2)}, "'epoch', 'learner', 'rng', 'config', 'history'")):
        torch.save(obj, out / "last.pt")
        with pytest.raises(ValueError, match="last.pt: not a") as info:
            fit(_tiny(out, fake_data, amp="none", resume=True))
        assert expected in str(info.value)
    # the right keys but not this model's state: named, before anything is written
    torch.save(dict(epoch=1, learner={"optimizer": {}}, rng={}, config=json.loads((out / "config.json").read_text()),
                    history=[{"test_acc": 0.1}]), out / "last.pt")
    files = {p.name: _stat(p) for p in out.iterdir()}
    with pytest.raises(ValueError, match=r"last\.pt: does not fit the torch backend's model and optimizer "
                                         r"\(no 'model'"):
        fit(_tiny(out, fake_data, amp="none", resume=True))
    assert {p.name: _stat(p) for p in out.iterdir()} == files


# ----------------------------------------------------------------------------------------------- NaN, full disk

def test_nan_in_the_first_epoch_says_no_checkpoint_exists(tmp_path, fake_data, capsys):
    out = tmp_path / "R"
    result = fit(_tiny(out, fake_data, epochs=1, limit_train=20, batch_size=4, lr=1e6, amp="none"))
    assert result.status == "nan" and result.history == []
    said = capsys.readouterr().out.splitlines()[-1]
    assert said.startswith("stopped: loss became") and "no epoch was completed, so there is no checkpoint" in said
    assert said.endswith(f"{out} holds config.json") and "last.pt" not in said
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]


def test_a_failed_checkpoint_write_keeps_the_last_one_and_the_metrics(tmp_path, fake_data, monkeypatch):
    """torch.save on a full disk (the second epoch's last.pt): the error names the file and the epoch's numbers,
    the first epoch's last.pt is intact and metrics.csv says what it holds, no temporary file or lock is left."""
    out = tmp_path / "R"
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if obj.get("epoch") == 2 and "learner" in obj:
            f.write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)
    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(CheckpointWriteError) as info:
        fit(_tiny(out, fake_data, amp="none"))
    message = str(info.value)
    assert message.startswith(f"{out / 'last.pt'}: cannot write it (No space left on device)") and "\n" not in message
    assert "epoch 2 (loss " in message and "is not saved and" in message and "still holds epoch 1" in message
    assert read(out / "last.pt")["epoch"] == 1
    assert len((out / "metrics.csv").read_text().splitlines()) == 2       # the record is the checkpoint's
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.json", "curves.png", "last.pt", "metrics.csv"]


@contextmanager
def _tmpfs(path: Path, options: str):
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_small_or_read_only_filesystem(tmp_path, fake_data, monkeypatch, capsys):
    """A real 200 KB tmpfs: the CLI refuses at once (free-space check) and makes no folder; with the check out of the
    way the real torch.save fails, and the run says which file and the epoch's numbers, exit 2. A read-only one: the error names
    config.json, not a temporary file."""
    with _tmpfs(tmp_path / "small", "size=200k") as small:
        p = _main(capsys, "train", "--data-dir", fake_data, "--out", small / "R", "--limit-train", 16,
                  "--batch-size", 16)
        _one_line_error(p, f"{small / 'R'}: ", "MiB free on its filesystem", "needs about")
        assert list(small.iterdir()) == []

        monkeypatch.setattr(train, "check_free_space", lambda folder, needed: None)
        status = cli.main(["train", "--data-dir", str(fake_data), "--out", str(small / "R"), "--limit-train", "16",
                           "--limit-test", "10", "--batch-size", "16", "--amp", "none", "--no-progress"])
        err = capsys.readouterr().err
        assert status == 2 and err.count("\n") == 1, err
        assert err.startswith(f"alexnet train: error: {small / 'R' / 'best.pt'}: cannot write it (No space left")
        assert "epoch 1 (loss " in err and "is not saved and no checkpoint was saved" in err
        assert sorted(p.name for p in (small / "R").iterdir()) == ["config.json"]
    with _tmpfs(tmp_path / "ro", "size=100k,ro") as ro:
        p = _main(capsys, "train", "--data-dir", fake_data, "--out", ro, "--limit-train", 16, "--no-checkpoint")
        _one_line_error(p, f"{ro / 'config.json'}: cannot write it (Read-only file system)")
        assert ".config.json" not in p.stderr


def test_atomic_write_names_the_file_and_honours_the_umask(tmp_path, monkeypatch):
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.txt", lambda f: f.write("x"), mode="w")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640          # mkstemp alone gives 0o600

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".b.txt.x1y2z3"))
    monkeypatch.setattr("tempfile.mkstemp", refuse)
    with pytest.raises(WriteError, match=r"b\.txt: cannot write it \(Permission denied\)$") as info:
        atomic_write(tmp_path / "b.txt", lambda f: f.write(b"x"))
    assert ".b.txt" not in str(info.value)


# ----------------------------------------------------------------------------------------------- one folder, one run

def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_folder_in_use_is_refused_and_a_stale_lock_taken_over(tmp_path, fake_data, capsys, monkeypatch):
    out = tmp_path / "R"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(f"{sleeper.pid}\n")
        with monkeypatch.context() as m:            # refused before any data is read
            m.setattr(train, "load_fashion_mnist", lambda *a: pytest.fail("loaded the data of a refused run"))
            with pytest.raises(ValueError, match=rf"--out {out} is in use by another run \(pid {sleeper.pid}"):
                fit(_tiny(out, fake_data, epochs=1, amp="none"))
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        sleeper.kill()
        sleeper.wait()
    dead = _dead_pid()
    (out / ".lock").write_text(f"{dead}\n")
    result = fit(_tiny(out, fake_data, epochs=1, amp="none"))
    assert result.status == "completed"
    assert f"note: taking over the stale lock {out / '.lock'} of pid {dead}" in capsys.readouterr().out
    assert not (out / ".lock").exists()                                   # released at the end


def test_default_out_is_unique_within_one_second(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: fmt.replace("%Y%m%d-%H%M%S", "20260101-120000"))
    folders = [checkpoint.make_run_folder(None, "torch") for _ in range(3)]
    assert [str(f) for f, created in folders] == [
        "runs/20260101-120000-torch", "runs/20260101-120000-torch-2", "runs/20260101-120000-torch-3"]
    assert all(created for _, created in folders)


# ------------------------------------------------------------------------------------------ refused before the folder

def test_refusals_leave_no_folder(tmp_path, fake_data, capsys):
    out = tmp_path / "R"
    p = _main(capsys, "train", "--backend", "numpy", "--amp", "bf16", "--data-dir", fake_data, "--out", out)
    _one_line_error(p, "--amp bf16")
    p = _main(capsys, "train", "--backend", "triton", "--amp", "bf16", "--device", "cpu", "--data-dir", fake_data,
             "--out", out)
    _one_line_error(p, "--backend triton --amp bf16", "torch.bfloat16", "interpreter")
    (fake_data / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    p = _main(capsys, "train", "--data-dir", fake_data, "--out", out)
    _one_line_error(p, fake_data / "t10k-labels-idx1-ubyte.gz")
    assert not out.exists()


# ----------------------------------------------------------------------------------------------- one line each

@pytest.mark.parametrize("flags, fragment", [
    (["--seed", str(2**64)], "--seed must be an integer from 0 to"),
    (["--seed", "-1"], "--seed must be an integer from 0 to"),
    (["--out", ""], "--out is empty"),
    (["--std", "0"], "--std '0': every channel's std must be > 0"),
])
def test_bad_flags_are_one_line_naming_the_flag(flags, fragment, fake_data, tmp_path, capsys):
    args = ["train", "--data-dir", fake_data, "--limit-train", 16, *flags]
    if "--out" not in flags:
        args += ["--out", tmp_path / "R"]
    if "--std" in flags:
        args += ["--dataset", "imagefolder", "--mean", "0.5"]
    try:
        p = _main(capsys, *args)
    except SystemExit as exc:                         # argparse's own refusal: status 2, its one-line usage error
        p = _Ran(exc.code, "", capsys.readouterr().err.strip().splitlines()[-1])
    _one_line_error(p, fragment)
    assert not (tmp_path / "R").exists()


def test_out_inside_a_file_or_where_nothing_can_be_made(fake_data, tmp_path, capsys):
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    p = _main(capsys, "train", "--data-dir", fake_data, "--limit-train", 16, "--out", afile / "R")
    _one_line_error(p, f"--out {afile / 'R'}: {afile} is a file, not a folder")
    p = _main(capsys, "train", "--data-dir", fake_data, "--limit-train", 16, "--limit-test", 10, "--batch-size", 16,
              "--amp", "none", "--no-progress", "--out", "/proc/alexnet-run")
    _one_line_error(p, "--out /proc/alexnet-run: cannot make the folder")
    assert afile.read_text() == "x"


def test_a_zero_image_test_set_fails_before_training(tmp_path, capsys):
    from conftest import write_fake_fashion_mnist

    data = write_fake_fashion_mnist(tmp_path / "fm", n_train=20, n_test=0)
    p = _main(capsys, "train", "--data-dir", data, "--out", tmp_path / "R", "--no-progress")
    _one_line_error(p, "Fashion-MNIST: the test set holds no images")
    assert "epoch 1" not in p.stdout and not (tmp_path / "R").exists()


def test_a_random_file_as_last_pt_is_one_line(tmp_path, fake_data, capsys):
    out = tmp_path / "R"
    assert cli.main(["train", "--data-dir", str(fake_data), "--out", str(out), "--limit-train", "16", "--limit-test",
                     "10", "--batch-size", "16", "--epochs", "1", "--amp", "none", "--no-progress",
                     "--no-pictures"]) == 0
    (out / "last.pt").write_bytes(os.urandom(1 << 20))
    p = _main(capsys, "train", "--resume", "--out", out, "--epochs", 2)
    _one_line_error(p, f"{out / 'last.pt'}: not a readable checkpoint")
    assert "weights_only" not in p.stderr


def test_free_space_is_asked_for_both_checkpoints(tmp_path):
    from torch_model.learners import make_learner

    learner = make_learner("torch", 0.01, torch.device("cpu"))
    weights = sum(t.numel() * t.element_size() for t in learner.model_state_dict().values())
    assert checkpoint.checkpoint_bytes(learner, 0.0) >= 2 * weights                # last.pt and best.pt
    assert checkpoint.checkpoint_bytes(learner, 0.9) >= 3 * weights                # + last.pt's momentum buffers


def test_the_numpy_backend_header_does_not_suggest_bf16():
    from torch_model.device import cpu_default_amp

    amp, channels_last, why = cpu_default_amp(torch.device("cpu"), "numpy")
    assert (amp, channels_last) == ("none", False) and "bf16" not in why


def test_pictures_that_could_not_be_written_are_named_and_drawn_on_resume(tmp_path, fake_data, monkeypatch, capsys):
    from torch_model import plots

    out = tmp_path / "R"
    real = plots.atomic_write

    def full_disk(path, write, mode="wb"):
        if Path(path).name == "mistakes.png":
            raise WriteError(path, OSError(errno.ENOSPC, "No space left on device"))
        return real(path, write, mode)
    monkeypatch.setattr(plots, "atomic_write", full_disk)
    result = fit(_tiny(out, fake_data, epochs=1, amp="none", pictures=True))
    said = capsys.readouterr().out
    assert result.status == "completed"
    assert "mistakes.png: cannot write it (No space left on device); not written: mistakes.png, evaluation.json, " \
           "filters.png" in said, said
    monkeypatch.setattr(plots, "atomic_write", real)
    assert cli.main(["train", "--resume", "--out", str(out), "--no-progress"]) == 0
    assert all((out / name).exists() for name in checkpoint.PICTURES)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_during_a_save_waits_until_it_is_whole(sig):
    """Ctrl-C or `kill PID` (inside sigterm_stops, as `alexnet train` runs) arriving while an epoch is saved: the save
    goes on to its end, then the run stops (KeyboardInterrupt); a signal the process ignores stays ignored; the
    SIGTERM handler is given back after the run."""
    signum = getattr(signal, sig)
    saved = {s: signal.getsignal(s) for s in checkpoint.STOP_SIGNALS}
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with checkpoint.sigterm_stops():
            done = []
            with pytest.raises(KeyboardInterrupt):
                with checkpoint.stops_deferred():
                    signal.pthread_kill(threading.get_ident(), signum)   # to this thread: handled at its next
                    time.sleep(0)                                         # call, here
                    done.append("the rest of the save")
            assert done == ["the rest of the save"]
            assert signal.getsignal(signum) is signal.default_int_handler
            signal.signal(signum, signal.SIG_IGN)
            with checkpoint.stops_deferred():
                signal.pthread_kill(threading.get_ident(), signum)
                time.sleep(0)
            assert signal.getsignal(signum) is signal.SIG_IGN
            signal.signal(signum, signal.default_int_handler)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
