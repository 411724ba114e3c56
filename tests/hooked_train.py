"""`alexnet ARGS` with one hook at a named instant, for tests that kill or interrupt a run at an exact point.

    python tests/hooked_train.py AT DO train ...

AT names the instant:
    step:N          before the N-th training step of this process (1-based, counted over all epochs)
    before:FILE:K   before the K-th write of FILE (metrics.csv, last.pt, best.pt, curves.png, evaluation.json, ...)
    mid:FILE:K      inside the K-th write of FILE, after its first bytes reached the temporary file
    after:FILE:K    after the K-th write of FILE is in place
DO is what happens there:
    kill            print `HOOK AT`, then SIGKILL this process (no handler, no cleanup: a power cut)
    pause           print `HOOK AT paused`, then wait for a signal: SIGUSR1 goes on, SIGINT is a Ctrl-C there

The line is printed (flushed) before the action, so a test acts on a state the program reports having reached,
never after a line that may come late.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from torch_model import checkpoint, cli, evaluate, files, learners, plots, visualize

_go_on = []


def act(at: str, do: str) -> None:
    if do == "kill":
        print(f"HOOK {at}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    signal.signal(signal.SIGUSR1, lambda signum, frame: _go_on.append(signum))
    print(f"HOOK {at} paused", flush=True)
    while not _go_on:
        signal.pause()                  # a SIGINT raises KeyboardInterrupt here, as it would mid-step
    _go_on.clear()


class _MidWrite:
    """The file handed to a writer: the hook fires right after its first write()."""

    def __init__(self, f, fire):
        self._f, self._fire = f, fire

    def write(self, data):
        n = self._f.write(data)
        self._f.flush()
        if self._fire is not None:
            fire, self._fire = self._fire, None
            fire()
        return n

    def __getattr__(self, name):
        return getattr(self._f, name)


def install(at: str, do: str) -> None:
    kind, _, rest = at.partition(":")
    if kind == "step":
        target, real_step, count = int(rest), learners.TorchLearner.step, [0]

        def step(self, X, y):
            count[0] += 1
            if count[0] == target:
                act(at, do)
            return real_step(self, X, y)
        learners.TorchLearner.step = step
        return
    name, _, k = rest.rpartition(":")
    target, count = int(k), [0]
    real_write = files.atomic_write

    def atomic_write(path, write, mode="wb"):
        if Path(path).name != name:
            return real_write(path, write, mode)
        count[0] += 1
        if count[0] != target:
            return real_write(path, write, mode)
        if kind == "before":
            act(at, do)
        if kind == "mid":
            return real_write(path, lambda f: write(_MidWrite(f, lambda: act(at, do))), mode)
        real_write(path, write, mode)
        if kind == "after":
            act(at, do)
    for module in (checkpoint, plots, evaluate, visualize):     # every module that writes a run's files
        if hasattr(module, "atomic_write"):
            module.atomic_write = atomic_write


if __name__ == "__main__":
    # Ctrl-C as in a terminal: a parent may have set SIGINT to "ignore" (pytest-xdist's workers do), and an ignored
    # disposition is inherited across exec, where Python then leaves it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    install(sys.argv[1], sys.argv[2])
    sys.exit(cli.main(sys.argv[3:]))
