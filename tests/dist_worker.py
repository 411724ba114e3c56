"""One rank of the 2-process gloo checks in test_distributed.py, started the way torchrun starts a worker
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT in the environment):

    python tests/dist_worker.py SCENARIO [TIMEOUT_S]

check  a small conv net (AlexNet's layer types at a tiny size; eval mode: no dropout) through
       DistributedLearner, as torch modules and through our Triton kernels (tritonize): each rank's shard of the
       same seeded global batch gives, after DDP's all-reduce, the gradients one process computes over the whole
       batch (uneven shards, and a rank with an empty shard); the shards of the epoch's permutation; evaluation counts
       summed over the ranks; ranks that disagree on the data refused on both; rank 0's decisions (and
       failures) reaching rank 1.
die    rank 1 exits before a collective: rank 0 must raise RankFailure at once.
hang   rank 1 stops answering: rank 0 must raise RankFailure after TIMEOUT_S.
Prints "ok SCENARIO rank R" on success; RankFailure is printed as one line with exit status 3.
"""
import datetime
import os
import sys
import time

import torch
from torch.distributed.distributed_c10d import _set_pg_timeout

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import assert_close_verbose  # noqa: E402
from torch_model import data  # noqa: E402
from torch_model import distributed  # noqa: E402


def small_alexnet():
    """AlexNet's layer types at a tiny size: 1x32x32 -> conv 11/4: 6x6 -> pool: 2x2 -> conv 3: 16x2x2 -> 10."""
    from torch import nn

    return nn.Sequential(nn.Conv2d(1, 8, 11, stride=4, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(16 * 2 * 2, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))


def compare_with_one_process(ctx: distributed.DistContext, backend: str) -> None:
    from torch_model.learners import DistributedLearner, TorchLearner

    torch.manual_seed(0)
    net = small_alexnet()
    ref = TorchLearner(small_alexnet(), lr=0.01, device=torch.device("cpu"))   # one process, torch's ops
    ref.net.load_state_dict(net.state_dict())
    if backend == "triton":
        from triton_kernels.modules import TritonConv2d, tritonize

        tritonize(net)                                   # same parameters, our kernels
        assert sum(isinstance(m, TritonConv2d) for m in net) == 2
    learner = DistributedLearner(TorchLearner(net, lr=0.01, device=torch.device("cpu")), ctx)
    g = torch.Generator().manual_seed(1)
    for global_n in (3, 1):                      # shards of 2 + 1 images, then 1 + 0 (rank 1 empty)
        X = torch.rand(global_n, 1, 32, 32, generator=g)                    # (B, 1, 32, 32)
        y = torch.randint(0, 10, (global_n,), generator=g)                  # (B,)
        mine = data.shard(torch.arange(global_n), ctx.rank, ctx.world_size)
        learner.eval(), ref.eval()              # dropout off: the same function on every rank and in the reference
        loss, logits = learner.step(X[mine], y[mine])
        ref_loss, ref_logits = ref.step(X, y)
        assert logits.shape == (len(mine), 10)
        total = distributed.sum_over_ranks(ctx, loss * len(mine))[0]
        assert abs(total / global_n - ref_loss) <= 1e-5 * abs(ref_loss), (backend, total / global_n, ref_loss)
        for (name, p), q in zip(net.named_parameters(), ref.net.parameters()):
            # float32 sums of up to a few thousand products per element, in another order (per rank, then
            # over the ranks; the Triton kernels' own order): errors ~ sqrt(K) * 2^-24 of the largest terms;
            # 1e-5 of the tensor's largest gradient is ample
            scale = q.grad.abs().max().item()
            what = f"{backend}: {name}.grad, batch {global_n}"
            assert_close_verbose(p.grad, q.grad, atol=1e-5 * scale, rtol=1e-5, what=what)
            assert_close_verbose(p, q, atol=1e-6, rtol=1e-5, what=f"{backend}: {name} after the step")


def check(ctx: distributed.DistContext) -> None:

    # the same permutation everywhere; the shards of each global batch partition it, in order
    batches = list(data.local_batches(11, 4, seed=7, shuffle=True, rank=ctx.rank, world_size=ctx.world_size))
    everyone = distributed.all_gather_object(ctx, [idx.tolist() for _, idx in batches])
    order = data.epoch_order(11, 7, True).tolist()
    assert [a + b for a, b in zip(*everyone)] == [order[s:s + 4] for s in range(0, 11, 4)], everyone

    # gradients: DDP over the shards == one process's torch model over the global batch, for the torch backend
    # and for the triton one (our conv/pool kernels, in the interpreter on a CPU), to float32 summation tolerance
    compare_with_one_process(ctx, "torch")
    compare_with_one_process(ctx, "triton")

    # evaluation: each rank counts on its shard; the sums are the whole set's
    labels = torch.arange(23) % 3
    mine = data.shard_range(23, ctx.rank, ctx.world_size)
    correct = int((labels[mine.start:mine.stop] == 1).sum())
    assert distributed.sum_over_ranks(ctx, correct, len(mine)) == (int((labels == 1).sum()), 23)

    # ranks that see different data: a ValueError on every rank, naming both values
    try:
        distributed.check_same_everywhere(ctx, 100 + ctx.rank, "the number of training images")
    except ValueError as exc:
        assert "rank 0: 100, rank 1: 101" in str(exc), exc
    else:
        raise AssertionError("check_same_everywhere accepted different values")
    distributed.check_same_everywhere(ctx, 5, "a shared value")

    # decisions made on rank 0 reach every rank; its failure is one error there and a quiet stop elsewhere
    assert distributed.from_main(ctx, lambda: {"rank": ctx.rank}) == {"rank": 0}
    try:
        distributed.from_main(ctx, lambda: int("x"))
    except distributed.RankZeroError as exc:
        assert ctx.rank == 1 and "rank 0 stopped the run: invalid literal" in str(exc), exc
    except ValueError:
        assert ctx.rank == 0
    else:
        raise AssertionError("from_main swallowed rank 0's error")


def main() -> int:
    scenario = sys.argv[1]
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    # Joining and the first barrier get a minute: on a busy machine one rank may start seconds after the other.
    # Only then does the timeout under test apply, to the collective the scenario is about.
    ctx = distributed.setup("cpu", timeout_s=max(timeout, 60.0))
    assert ctx.enabled and ctx.backend == "gloo" and ctx.world_size == 2
    try:
        if scenario == "check":
            check(ctx)
        else:
            distributed.barrier(ctx)                           # both alive so far
            _set_pg_timeout(datetime.timedelta(seconds=timeout))
            ctx.timeout_s = timeout
            if ctx.rank == 1:
                if scenario == "die":
                    os._exit(1)
                time.sleep(120)                      # "hang": the test kills this process
            t0 = time.perf_counter()
            distributed.sum_over_ranks(ctx, 1.0, what="summing the epoch's counts")
            raise AssertionError(f"rank 0 summed with a peer that is gone ({time.perf_counter() - t0:.1f} s)")
        distributed.barrier(ctx)
    except distributed.RankFailure as exc:
        print(f"RankFailure: {exc}", flush=True)
        distributed.exit_now(3)                                # as `alexnet train` does (with status 1)
    print(f"ok {scenario} rank {ctx.rank}", flush=True)
    distributed.exit_now(0)                                    # as `alexnet train` ends under torchrun


if __name__ == "__main__":
    sys.exit(main())
