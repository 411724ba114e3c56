"""Writing files so that a crash (or a full disk) never leaves half of one: `atomic_write`, used by training and the
benchmarks. A failed write raises WriteError naming the file the user knows (not the temporary one) and leaves the
file's earlier version untouched."""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Callable


class WriteError(OSError):
    """Writing `path` failed (disk full, no permission, ...); str() is one line naming `path`."""

    def __init__(self, path: Path, cause: BaseException):
        errno = getattr(cause, "errno", None)
        reason = getattr(cause, "strerror", None) or str(cause)
        super().__init__(errno, reason)
        self.path = Path(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: cannot write it ({self.reason})"


class _Recorder:
    """The file object handed to a writer, remembering the first OSError its write() raised: torch.save reports
    a full disk as RuntimeError('... unexpected pos ...') and loses the errno on the way."""

    def __init__(self, f: io.IOBase):
        self._f = f
        self.error: OSError | None = None

    def write(self, data):
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[io.IOBase], None], mode: str = "wb") -> None:
    """Write to a temporary file in the same folder, then rename over `path`: a crash never leaves half a file.
    The file gets the mode open() would give it (0666 less the umask), not mkstemp's 0600."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise WriteError(path, exc) from exc
    recorder = None
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, mode) as f:
            recorder = _Recorder(f)
            write(recorder)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        cause = exc if isinstance(exc, OSError) else (recorder.error if recorder is not None else None)
        if cause is not None and not isinstance(exc, WriteError):
            raise WriteError(path, cause) from exc
        raise
