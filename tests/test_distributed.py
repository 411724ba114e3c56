"""torch_model.distributed: the sharding of each epoch's seeded permutation, the one-process identities, and
2-process gloo runs (tests/dist_worker.py, started as torchrun starts workers): DDP's gradients equal one
process's over the same global batch, evaluation counts summed, a dead or silent rank reported within the timeout."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from torch_model import data
from torch_model import distributed
from torch_model.data import FashionMNIST, batches

WORKER = Path(__file__).with_name("dist_worker.py")


# ----------------------------------------------------------------------------------------------- one process

@pytest.mark.parametrize("n, batch_size, world", [(11, 4, 2), (10, 5, 3), (3, 4, 4), (128, 128, 8), (7, 1, 2)])
def test_shards_partition_the_single_process_batches(n, batch_size, world):
    # labels 0..n-1: the single process's batches (data.batches, shuffled) name the indices they hold
    ds = FashionMNIST(torch.zeros(n, 28, 28, dtype=torch.uint8), torch.arange(n), "train")
    single = [y.tolist() for _, y in batches(ds, batch_size, resize=None, shuffle=True, seed=1003)]
    per_rank = [list(data.local_batches(n, batch_size, 1003, True, rank, world)) for rank in range(world)]
    assert all(len(r) == len(single) for r in per_rank)                    # every rank steps as often
    for k, whole in enumerate(single):
        sizes = [len(per_rank[r][k][1]) for r in range(world)]
        assert all(per_rank[r][k][0] == len(whole) for r in range(world))  # the global batch size, on each
        assert sum(sizes) == len(whole) and max(sizes) - min(sizes) <= 1
        assert [i for r in range(world) for i in per_rank[r][k][1].tolist()] == whole


def test_epoch_order_and_shard_range():
    assert data.epoch_order(5, 0, shuffle=False).tolist() == [0, 1, 2, 3, 4]
    assert data.epoch_order(50, 3, True).tolist() == data.epoch_order(50, 3, True).tolist()
    assert data.epoch_order(50, 3, True).tolist() != data.epoch_order(50, 4, True).tolist()
    for n, world in ((23, 2), (5, 3), (2, 4), (0, 2)):
        ranges = [data.shard_range(n, r, world) for r in range(world)]
        assert [i for r in ranges for i in r] == list(range(n))
    with pytest.raises(ValueError, match="rank"):
        data.shard(torch.arange(4), 2, 2)
    with pytest.raises(ValueError, match="batch_size"):
        next(data.local_batches(4, 0, 0, False))


def test_one_process_context_is_the_identity(monkeypatch):
    for var in distributed.TORCHRUN_VARS:
        monkeypatch.delenv(var, raising=False)
    ctx = distributed.setup("cpu")
    assert not ctx.enabled and ctx.is_main and ctx.world_size == 1 and str(ctx) == "one process"
    assert distributed.sum_over_ranks(ctx, 3, 4.5) == (3, 4.5)
    assert distributed.broadcast_object(ctx, {"a": 1}) == {"a": 1}
    assert distributed.all_gather_object(ctx, 7) == [7]
    distributed.check_same_everywhere(ctx, 1, "x"), distributed.barrier(ctx), distributed.teardown(ctx)
    with pytest.raises(ValueError, match="--dist-timeout"):
        distributed.setup("cpu", timeout_s=0)


def test_torchrun_environment_checks(monkeypatch):
    monkeypatch.setenv("RANK", "0"), monkeypatch.setenv("WORLD_SIZE", "1"), monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        distributed.setup("cpu")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1"), monkeypatch.setenv("MASTER_PORT", "1")
    with pytest.raises(ValueError, match="cuda:LOCAL_RANK"):
        distributed.setup("cuda:1")


def test_which_errors_mean_a_lost_rank():
    assert distributed._is_comm_failure(RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer"))
    assert distributed._is_comm_failure(RuntimeError("Timed out waiting 3000ms for recv operation to complete"))
    assert not distributed._is_comm_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not distributed._is_comm_failure(ValueError("gloo"))
    ctx = distributed.DistContext(rank=1, world_size=2, backend="gloo", timeout_s=7)
    with pytest.raises(distributed.RankFailure, match=r"^rank 1 of 2: summing failed: .* within --dist-timeout 7 s .*"
                                            r"Connection closed by peer$"):
        with distributed.collective(ctx, "summing"):
            raise RuntimeError("Connection closed by peer\n  more lines")
    with pytest.raises(RuntimeError, match="shapes"):                       # not translated
        with distributed.collective(ctx, "summing"):
            raise RuntimeError("shapes cannot be multiplied")


# ----------------------------------------------------------------------------------------------- two processes

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(scenario: str, timeout_s: float = 60) -> list[subprocess.Popen]:
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1", PYTHONPATH=str(WORKER.parent.parent))
        procs.append(subprocess.Popen([sys.executable, str(WORKER), scenario, str(timeout_s)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def _finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        return proc.communicate(timeout=timeout)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_two_gloo_processes_match_one():
    procs = _spawn("check")
    outs = [_finish(p, 120) for p in procs]
    for rank, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0 and f"ok check rank {rank}" in out, f"rank {rank} (exit {p.returncode}):\n{out}"


@pytest.mark.parametrize("scenario", ["die", "hang"])
def test_a_lost_rank_stops_the_other_with_one_line(scenario):
    timeout_s = 3.0
    procs = _spawn(scenario, timeout_s)
    t0 = time.perf_counter()
    out = _finish(procs[0], 600)                             # a hang guard only: the timeout under test is 3 s
    waited = time.perf_counter() - t0
    if scenario == "hang":
        procs[1].kill()                                      # the silent one (torchrun would stop it likewise)
    _finish(procs[1], 30)
    assert procs[0].returncode == 3, out
    lines = [line for line in out.splitlines() if line.startswith("RankFailure:")]
    assert len(lines) == 1 and "rank 0 of 2: summing the epoch's counts failed" in lines[0], out
    assert f"within --dist-timeout {timeout_s:g} s" in lines[0]
    if scenario == "hang":
        assert "Timed out" in lines[0] and waited >= timeout_s, out


def test_fashion_source_is_data_batches_on_one_process_and_shards_them_on_two(fake_data):
    from torch_model.data import load_fashion_mnist

    train, test = load_fashion_mnist(fake_data)                        # 20 train, 10 test images
    one = data.FashionMNISTSource(train, test, resize=32, channels=1, batch_size=6)
    for (X, y), (X0, y0) in zip(one.train_batches(1003), batches(train, 6, 32, shuffle=True, seed=1003),
                                strict=True):
        torch.testing.assert_close(X, X0, rtol=0, atol=0), torch.testing.assert_close(y, y0, rtol=0, atol=0)
    assert torch.cat([y for _, y in one.test_batches()]).tolist() == test.labels.tolist()
    ranks = [data.FashionMNISTSource(train, test, 32, 3, 6, rank, 2) for rank in range(2)]
    for k, (X0, y0) in enumerate(batches(train, 6, 32, shuffle=True, seed=1003)):
        parts = [list(r.train_batches(1003))[k] for r in ranks]
        X = torch.cat([p[0] for p in parts])                           # (6, 3, 32, 32): grey repeated
        assert X.shape[1] == 3
        torch.testing.assert_close(X[:, 2:3], X0, rtol=0, atol=0)
        assert torch.cat([p[1] for p in parts]).tolist() == y0.tolist()
    assert one.take_skipped() == [] and len(one) == 20 and one.classes[0] == "t-shirt"


def test_accuracy_counts_readable_images(fake_data):
    from torch_model.data import load_fashion_mnist
    from torch_model.learners import accuracy

    class Oracle:   # predicts label 3 for every image
        def eval(self):
            pass

        def predict(self, X):
            return torch.nn.functional.one_hot(torch.full((len(X),), 3), 10).float()

    train, test = load_fashion_mnist(fake_data)                       # test labels 0..9
    source = data.FashionMNISTSource(train, test, resize=28, channels=1, batch_size=4)
    assert accuracy(Oracle(), source, distributed.DistContext()) == pytest.approx(1 / 10)


# ----------------------------------------------------------------------------------------------- the CLI under torchrun

def _torchrun(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node 2 -m torch_model train ARGS` on the CPU (gloo), this checkout first."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(WORKER.parent.parent))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "torch_model", "train", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def test_torchrun_trains_and_resumes_into_one_folder(fake_data, tmp_path):
    out = tmp_path / "run"
    common = ["--no-progress"]
    first = _torchrun("--data-dir", str(fake_data), "--limit-train", "4", "--limit-test", "4", "--batch-size", "4",
                      "--epochs", "1", "--out", str(out), "--device", "cpu", "--amp", "none", *common)
    assert first.returncode == 0, first.stdout + first.stderr
    # rank 0 alone logs: each line once
    assert first.stdout.count("torchrun: 2 processes (gloo); --batch-size 4 is the global batch") == 1, first.stdout
    assert first.stdout.count("epoch 1/1: loss") == 1
    second = _torchrun("--resume", "--out", str(out), "--epochs", "2", *common)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count("resuming ") == 1 and second.stdout.count("epoch 2/2: loss") == 1, second.stdout
    rows = (out / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["epoch", "1", "2"]
    assert all(r.split(",")[5] == "4" for r in rows[1:])                 # examples: both shards counted
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and len(last["rng_ranks"]) == 2 and last["config"]["epochs"] == 2
    # one folder, the pictures written once (rank 0), no lock left, no stray files
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.json", "confusion.png", "curves.png",
                                                     "evaluation.json", "filters.png", "last.pt", "metrics.csv",
                                                     "mistakes.png"]
    # the same two epochs without the interruption: the same numbers (each rank's RNG stream came back)
    whole = _torchrun("--data-dir", str(fake_data), "--limit-train", "4", "--limit-test", "4", "--batch-size", "4",
                      "--epochs", "2", "--out", str(tmp_path / "whole"), "--device", "cpu", "--amp", "none", *common)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    def numbers(folder):   # loss, train acc, test acc, examples per epoch
        return [[r.split(",")[i] for i in (1, 2, 3, 5)] for r in (folder / "metrics.csv").read_text().splitlines()[1:]]
    assert numbers(out) == numbers(tmp_path / "whole")


def test_torchrun_refuses_the_numpy_backend_in_one_line(fake_data, tmp_path):
    result = _torchrun("--data-dir", str(fake_data), "--backend", "numpy", "--device", "cpu", "--limit-train", "4",
                       "--out", str(tmp_path / "run"), "--no-progress", timeout=600)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("alexnet train: error:")]
    assert lines == ["alexnet train: error: --backend numpy cannot run under torchrun: DistributedDataParallel needs "
                     "the torch or triton backend (run the numpy backend as one process: alexnet train --backend "
                     "numpy)"], result.stderr
    assert not (tmp_path / "run").exists()


def test_rng_restore_for_the_same_or_another_process_count():
    def draws():
        return torch.rand(3).tolist()

    ctx = distributed.DistContext()                         # one process (rank 0 of 1)
    torch.manual_seed(5)
    saved = [distributed.rank_rng_state(ctx)]
    expected = draws()
    torch.manual_seed(6)
    assert distributed.restore_rng(ctx, {"rng_ranks": saved, "rng": saved[0]}, seed=0, epoch=1) is None
    assert draws() == expected                              # the same count: exactly where it was
    two = [saved[0], distributed.rank_rng_state(ctx)]       # saved by 2 processes, resumed on 1
    note = distributed.restore_rng(ctx, {"rng_ranks": two, "rng": two[0]}, seed=0, epoch=1)
    assert "saved by 2 process(es) and resumes on 1" in note and draws() == expected   # rank 0 keeps its stream
    rank1 = distributed.DistContext(rank=1, world_size=3)
    distributed.restore_rng(rank1, {"rng": saved[0]}, seed=0, epoch=1)   # one process's run resumed on 3: reseeded
    first = draws()
    distributed.restore_rng(rank1, {"rng": saved[0]}, seed=0, epoch=1)
    assert draws() == first != expected


def test_backend_and_workers_defaults(monkeypatch):
    from types import SimpleNamespace

    from torch_model.imagefolder import default_workers

    cfg = SimpleNamespace(backend="numpy")
    assert distributed.check_can_distribute(distributed.DistContext(), cfg) is cfg   # one process: any backend
    with pytest.raises(ValueError, match="--backend numpy cannot run under torchrun"):
        distributed.check_can_distribute(distributed.DistContext(rank=0, world_size=2, backend="gloo"), cfg)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert default_workers() == 8                            # 15 free CPUs, capped at 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_workers() == 3                            # 16 / 4 processes, one CPU left to each
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert default_workers() == 1


def test_bench_train_ddp_figure(tmp_path):
    """`alexnet bench train --impls torch,ddp`: the DDP step beside the plain one (one process group of one,
    closed afterwards), both recorded."""
    import torch.distributed as dist

    from torch_model.bench.common import read_rows
    from torch_model.cli import main

    assert main(["bench", "train", "--impls", "torch,ddp", "--steps", "1", "--batch", "1", "--device", "cpu",
                 "--out-dir", str(tmp_path), "--no-progress"]) == 0
    (path,) = tmp_path.glob("*.jsonl")
    entries = {e["impl"]: e for e in read_rows(path)}
    assert set(entries) == {"torch", "ddp"} and entries["ddp"]["img_per_s"] > 0
    assert entries["ddp"]["first_loss"] == pytest.approx(entries["torch"]["first_loss"], rel=1e-5)  # same model, data
    assert not dist.is_initialized()


def test_train_reports_a_lost_rank_in_one_line_and_exits_at_once(monkeypatch, capsys):
    from torch_model import train
    from torch_model.cli import main

    def lost(cfg, ctx=None):
        raise distributed.RankFailure("rank 1 of 2: the training step's all-reduce failed: another process died")

    def exit_now(status):     # the real one is os._exit: the test process must survive it
        raise SystemExit(status)

    # rank 0 of a torchrun pair whose peer is lost during fit (the collectives themselves are the 2-process tests')
    monkeypatch.setattr(distributed, "setup",
                        lambda device, timeout_s: distributed.DistContext(0, 2, 0, "gloo", timeout_s))
    monkeypatch.setattr(distributed, "from_main", lambda ctx, fn, *args, what="": fn(*args))
    monkeypatch.setattr(train, "fit", lost)
    monkeypatch.setattr(distributed, "exit_now", exit_now)
    with pytest.raises(SystemExit) as info:
        main(["train", "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 1
    assert err == ["alexnet train: error: rank 1 of 2: the training step's all-reduce failed: another process died"]
