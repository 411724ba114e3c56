"""A run killed with -9 at any instant of its life resumes (`alexnet train --resume --out R`, nothing else) to the
metrics of the run nobody interrupted, with no stray file; a new run never overwrites a user's files.

Each run is stopped by tests/hooked_train.py at a named instant (a step, or before / inside / after the write of a
file), never after a delay, so the tests hold on a machine whose cores are busy."""
import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_fake_fashion_mnist
from torch_model import cli

HOOKED = Path(__file__).with_name("hooked_train.py")
REPO = Path(__file__).resolve().parents[1]
COMPARED = ("epoch", "loss", "train_acc", "test_acc", "examples")
# 2 epochs of 2 steps: every kind of instant, in order of the run's life (a kill in epoch 2 before its save leaves
# the files of after:metrics.csv:1; the Ctrl-C test below stops the run there)
INSTANTS = ["step:1", "mid:best.pt:1", "after:best.pt:1", "mid:last.pt:1", "after:last.pt:1", "after:metrics.csv:1",
            "after:last.pt:2", "mid:evaluation.json:1", "before:curves.png:1"]


def _args(out: Path, data: Path) -> list[str]:
    return ["train", "--data-dir", str(data), "--out", str(out), "--limit-train", "32", "--limit-test", "10",
            "--batch-size", "16", "--epochs", "2", "--amp", "none", "--seed", "1", "--no-progress"]


def hooked(at: str, do: str, args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, str(HOOKED), at, do, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def wait_for_line(proc: subprocess.Popen, line: str) -> None:
    """Read the process's output until it reports `line` (it is then waiting there, or dead)."""
    for got in proc.stdout:
        if got.strip() == line:
            return
    raise AssertionError(f"never printed {line!r}; exit {proc.wait()}: {proc.stderr.read()}")


def metrics(out: Path) -> list[dict]:
    with open(out / "metrics.csv") as f:
        return [{k: row[k] for k in COMPARED} for row in csv.DictReader(f)]


def files(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir())


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("fm"), n_train=32, n_test=10)


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "R"
    assert cli.main(_args(out, data)) == 0
    return out


@pytest.mark.slow
@pytest.mark.parametrize("at", INSTANTS)
def test_killed_at_any_instant_resumes_to_the_same_metrics(at, data, uninterrupted, tmp_path, capsys):
    out = tmp_path / "R"
    proc = hooked(at, "kill", _args(out, data))
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL and f"HOOK {at}" in stdout, (proc.returncode, stdout, stderr)
    if at.startswith("mid:"):                         # the half-written temporary file is really there
        assert any(name.startswith(f".{at.split(':')[1]}.") for name in files(out)), files(out)
    assert cli.main(["train", "--resume", "--out", str(out)]) == 0, capsys.readouterr().err
    assert metrics(out) == metrics(uninterrupted)
    assert files(out) == files(uninterrupted) == ["best.pt", "config.json", "confusion.png", "curves.png",
                                                  "evaluation.json", "filters.png", "last.pt", "metrics.csv",
                                                  "mistakes.png"]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_kill_mid_epoch_then_resume(sig, data, uninterrupted, tmp_path, capsys):
    """A real Ctrl-C (SIGINT) or `kill PID` (SIGTERM) at the first step of epoch 2 (the process says it is there):
    exit 130 with a one-line hint, epoch 1 kept and its curves drawn; --resume finishes the run with the
    uninterrupted metrics."""
    out = tmp_path / "R"
    proc = hooked("step:3", "pause", _args(out, data))
    try:
        wait_for_line(proc, "HOOK step:3 paused")
        proc.send_signal(getattr(signal, sig))
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and f"alexnet train --resume --out {out}" in stdout
    assert len(metrics(out)) == 1 and (out / "curves.png").is_file()
    assert cli.main(["train", "--resume", "--out", str(out), "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "epoch 2/2:" in said and "epoch 1/2:" not in said
    assert metrics(out) == metrics(uninterrupted)


def test_two_runs_on_one_folder_at_once(data, tmp_path, capsys):
    """The second run is refused while the first holds the folder (paused at its first step), names the first's pid,
    and the first then finishes as if nothing happened."""
    out = tmp_path / "R"
    first = hooked("step:1", "pause", _args(out, data))
    try:
        wait_for_line(first, "HOOK step:1 paused")
        assert (out / ".lock").read_text().split() == [str(first.pid)]
        assert cli.main(_args(out, data)) == 2
        err = capsys.readouterr().err
        assert f"--out {out} is in use by another run (pid {first.pid}" in err and err.count("\n") == 1, err
        first.send_signal(signal.SIGUSR1)
        stdout, stderr = first.communicate(timeout=600)
    finally:
        first.kill()
    assert first.returncode == 0, stderr
    assert len(metrics(out)) == 2 and not (out / ".lock").exists()


@pytest.mark.parametrize("user_files", [["config.json", "metrics.csv"], ["curves.png"], ["evaluation.json"]])
def test_a_new_run_never_overwrites_files_it_would_write(user_files, data, tmp_path, capsys):
    out = tmp_path / "R"
    out.mkdir()
    for name in user_files:
        (out / name).write_text("the user's own\n")
    assert cli.main(_args(out, data)) == 2
    err = capsys.readouterr().err
    assert f"--out {out} already holds {', '.join(user_files)}" in err and "--resume" in err, err
    assert all((out / name).read_text() == "the user's own\n" for name in user_files)
    assert files(out) == sorted(user_files)


def test_a_second_no_checkpoint_run_into_one_folder_is_refused(data, tmp_path, capsys):
    out = tmp_path / "R"
    args = _args(out, data) + ["--no-checkpoint", "--epochs", "1", "--no-pictures"]
    assert cli.main(args) == 0
    before = {name: (out / name).read_bytes() for name in files(out)}
    assert cli.main(args) == 2
    assert "already holds config.json, metrics.csv, curves.png" in capsys.readouterr().err
    assert {name: (out / name).read_bytes() for name in files(out)} == before
    assert cli.main(["train", "--resume", "--out", str(out)]) == 2       # nothing to continue: no checkpoint
    err = capsys.readouterr().err
    assert "metrics.csv records 1 epoch(s) but no checkpoint holds them" in err, err


def test_stale_temporary_files_are_cleared_when_a_run_opens_its_folder(data, tmp_path, capsys):
    out = tmp_path / "R"
    assert cli.main(_args(out, data) + ["--epochs", "1", "--no-pictures"]) == 0
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = [".last.pt.abc123", ".best.pt.x", ".metrics.csv.q", f".lock.{dead}"]
    for name in stale:
        (out / name).write_bytes(b"partial")
    (out / "notes.txt").write_text("the user's\n")                    # not the run's: kept
    assert cli.main(["train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress"]) == 0
    assert not any((out / name).exists() for name in stale) and (out / "notes.txt").exists()
