"""Training on several processes with torch.distributed: `torchrun --nproc-per-node N -m torch_model train ...`.

torchrun starts N copies of the command and gives each RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT in its
environment; `setup` joins them into one process group (NCCL between GPUs, gloo between CPUs) and everything else
here is what the training loop needs on top of DistributedDataParallel (DDP):

- the data: every rank draws the SAME seeded permutation of the epoch, cuts it into global batches of
  --batch-size, and takes its own contiguous shard of each (`data.local_batches`): the global batch means the same
  thing on any number of processes, and the ranks together see exactly the single process's batches;
- the step (`DistributedLearner`): each rank's cross-entropy SUM times world/N_global, so that DDP's averaging
  all-reduce leaves every rank holding the gradient of the mean loss over the whole global batch of N_global
  images, even when the shards are unequal (the last batch; skipped images). The learning rate is unchanged;
- evaluation: each rank counts on its shard, the counts are summed (`sum_over_ranks`);
- one writer: rank 0 (`ctx.is_main`) prints, draws the bar, writes metrics, pictures and checkpoints;
- failure: every collective has a timeout (--dist-timeout); a rank that died or stopped answering makes the
  others raise `RankFailure` with one line saying so, rather than hang (torchrun then stops the rest).

With no torchrun variables in the environment, `setup` returns a one-process context and every helper here is
the identity: one process trains exactly as it does without torchrun.
"""
from __future__ import annotations

import datetime
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, NoReturn

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = 300.0    # a collective waiting longer than this for another rank fails (checkpoints take seconds)
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class RankFailure(RuntimeError):
    """Another rank died or did not answer within the timeout; the message is one line for the command line."""


@dataclass
class DistContext:
    """Where this process stands: rank r of world_size (one process: 0 of 1, no process group)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None        # "gloo" | "nccl" | None (one process)
    timeout_s: float = DEFAULT_TIMEOUT_S
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def __str__(self) -> str:
        if not self.enabled:
            return "one process"
        return f"rank {self.rank} of {self.world_size} ({self.backend}, {self.device})"


def launched_by_torchrun() -> bool:
    return all(v in os.environ for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def setup(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext:
    """One process: DistContext() on resolve_device(device). Under torchrun: join the process group (NCCL when
    the device is CUDA, else gloo), each process on cuda:LOCAL_RANK (or the CPU)."""
    from torch_model.device import resolve_device

    if not (timeout_s > 0):
        raise ValueError(f"--dist-timeout must be > 0 seconds, got {timeout_s}")
    if not launched_by_torchrun():
        return DistContext(timeout_s=timeout_s, device=resolve_device(device))
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise ValueError(f"torchrun environment incomplete: {', '.join(missing)} not set")
    rank, world, local_rank = (int(os.environ[v]) for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if device.startswith("cuda:"):
        raise ValueError(f"--device {device} under torchrun: each process takes cuda:LOCAL_RANK; "
                         f"pass --device cuda (or auto)")
    base = resolve_device(device)
    if base.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) on this machine "
                             f"(--nproc-per-node must not exceed the GPUs)")
        base = torch.device("cuda", local_rank)
        torch.cuda.set_device(base)
    backend = "nccl" if base.type == "cuda" else "gloo"
    ctx = DistContext(rank, world, local_rank, backend, timeout_s, base)
    with collective(ctx, "joining the process group"):
        dist.init_process_group(backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=base if base.type == "cuda" else None)
    return ctx


def teardown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def exit_now(status: int) -> NoReturn:
    """End a torchrun process now, output flushed, without the process group's teardown or the interpreter's
    shutdown: once a peer has gone, the group's destructors may wait for it or abort the process (gloo: "terminate
    called without an active exception", exit status -6, even after a successful run when the peers leave in
    another order). Every file is closed by then: the training loop's own cleanup (metrics, curves, the run
    folder's lock) ran as the run ended or as the error came up through it."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _is_comm_failure(exc: BaseException) -> bool:
    """Errors that mean "another rank is gone or late": gloo's "Connection closed by peer" / "Timed out
    waiting", NCCL's errors, torch's DistError family."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        k in text for k in ("gloo", "nccl", "connection closed", "connection reset", "timed out", "timeout",
                            "socket", "broken pipe"))


@contextmanager
def collective(ctx: DistContext, what: str) -> Iterator[None]:
    try:
        yield
    except RankFailure:
        raise
    except Exception as exc:
        if not _is_comm_failure(exc):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RankFailure(f"rank {ctx.rank} of {ctx.world_size}: {what} failed: another process died or did not "
                          f"answer within --dist-timeout {ctx.timeout_s:g} s (see its output); {first[:300]}"
                          ) from exc


# ----------------------------------------------------------------------------------------------- collectives

def sum_over_ranks(ctx: DistContext, *values: float, what: str = "summing counts") -> tuple[float, ...]:
    """Each value summed over all ranks (float64 on the CPU for gloo, on the GPU for NCCL); the identity for one
    process. Evaluation counts: sum_over_ranks(ctx, correct, seen)."""
    if not ctx.enabled:
        return tuple(values)
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)   # (len(values),)
    with collective(ctx, what):
        dist.all_reduce(t)
    return tuple(t.tolist())


def broadcast_object(ctx: DistContext, obj: Any, what: str = "broadcasting from rank 0") -> Any:
    """Rank 0's obj on every rank (pickled; tensors inside come back on the CPU if sent from the CPU)."""
    if not ctx.enabled:
        return obj
    box = [obj if ctx.is_main else None]
    with collective(ctx, what):
        dist.broadcast_object_list(box, src=0, device=ctx.device if ctx.backend == "nccl" else None)
    return box[0]


def all_gather_object(ctx: DistContext, obj: Any, what: str = "gathering from every rank") -> list:
    if not ctx.enabled:
        return [obj]
    out: list = [None] * ctx.world_size
    with collective(ctx, what):
        dist.all_gather_object(out, obj)
    return out


class RankZeroError(ValueError):
    """Raised on ranks 1.. when rank 0 failed in work it does for everyone (`from_main`): rank 0 reports the
    error; the others stop without repeating it."""


def from_main(ctx: DistContext, fn, *args, what: str = "waiting for rank 0"):
    """fn(*args) on rank 0 only, its result (or failure) sent to every rank: decisions that must be the same
    everywhere (the run's settings, the image list, the checkpoint to resume from) are made once, and a ValueError
    there is one line from rank 0 rather than one per process."""
    if not ctx.enabled:
        return fn(*args)
    if ctx.is_main:
        try:
            result = fn(*args)
        except Exception as exc:
            broadcast_object(ctx, ("error", str(exc)), what=what)
            raise
        broadcast_object(ctx, ("ok", result), what=what)
        return result
    kind, value = broadcast_object(ctx, None, what=what)
    if kind == "error":
        raise RankZeroError(f"rank 0 stopped the run: {value}")
    return value


def check_same_everywhere(ctx: DistContext, value: Any, what: str) -> None:
    """Raise ValueError on every rank when ranks disagree on `value` (e.g. the number of images each one found)."""
    values = all_gather_object(ctx, value, what=f"comparing {what}")
    if any(v != values[0] for v in values):
        shown = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
        raise ValueError(f"the ranks disagree on {what} ({shown}); every machine must see the same data")


def barrier(ctx: DistContext, what: str = "waiting for every rank") -> None:
    if ctx.enabled:
        with collective(ctx, what):
            dist.barrier()


def check_can_distribute(ctx: DistContext, cfg):
    """cfg (a TrainConfig) if its backend can run here; under torchrun only torch and triton can."""
    backend = cfg.backend
    if ctx.enabled and backend not in ("torch", "triton"):
        raise ValueError(f"--backend {backend} cannot run under torchrun: DistributedDataParallel needs the torch or "
                         f"triton backend (run the numpy backend as one process: alexnet train --backend numpy)")
    return cfg


def seed_rank(ctx: DistContext, seed: int) -> None:
    """Give ranks 1.. their own RNG stream (dropout masks), rank 0 keeping the single process's: call after the
    model is built (the weights are the same everywhere: DDP broadcasts rank 0's anyway)."""
    if ctx.rank > 0:
        torch.manual_seed(seed * 1_000_003 + ctx.rank)
        if ctx.device.type == "cuda":
            torch.cuda.manual_seed(seed * 1_000_003 + ctx.rank)     # this rank's GPU only


def rank_rng_state(ctx: DistContext) -> dict:
    """This rank's RNG states: the CPU's and its own GPU's (never every GPU's: that would open a CUDA context on
    each GPU of the machine from each process)."""
    state = {"torch": torch.get_rng_state()}
    if ctx.device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(ctx.device)
    return state


def set_rank_rng_state(ctx: DistContext, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if ctx.device.type == "cuda" and "cuda_device" in state:
        torch.cuda.set_rng_state(state["cuda_device"], ctx.device)


def gather_rng_states(ctx: DistContext) -> list[dict]:
    """Every rank's RNG states, in rank order (for last.pt: a resume on as many processes continues each
    rank's dropout stream exactly)."""
    return all_gather_object(ctx, rank_rng_state(ctx), what="gathering every rank's RNG state for last.pt")


def restore_rng(ctx: DistContext, checkpoint: dict, seed: int, epoch: int) -> str | None:
    """Put this rank's RNG where the checkpoint left it. Saved by as many processes: each rank's own state. Saved
    by another number of processes: rank 0 takes the saved single-process state, ranks 1.. a fresh stream
    seeded by (seed, epoch, rank); the data order is the same either way, only dropout draws differ.
    Returns a note for the log when the process count changed."""
    states = checkpoint.get("rng_ranks")
    if states is not None and len(states) == ctx.world_size:
        set_rank_rng_state(ctx, states[ctx.rank])
        return None
    torch.set_rng_state((states[0] if states else checkpoint["rng"])["torch"])
    if ctx.rank > 0:
        torch.manual_seed((seed * 1_000_003 + ctx.rank) * 1000 + epoch)
    if ctx.device.type == "cuda":
        torch.cuda.manual_seed((seed * 1_000_003 + ctx.rank) * 1000 + epoch)
    saved = len(states) if states else 1
    return (f"note: the run was saved by {saved} process(es) and resumes on {ctx.world_size}: the same batches, "
            f"but the dropout draws of each process restart from a seeded stream")
