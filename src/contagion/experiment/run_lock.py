"""The one-writer lock of a run directory (``RUN_DIR/run.lock``), so two runs never write one store."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from contagion.errors import UserError
from contagion.experiment.rundir import RunDir

LOCK_FILE = RunDir.LOCK
"""The writer's lock file in a run directory (left in place; only the lock on it matters)."""


class RunLock:
    """The one-writer lock of a run directory: ``fcntl.flock`` on ``RUN_DIR/run.lock``.

    Advisory and held by an open file, so the kernel releases it when the process ends in any way.
    """

    def __init__(self, run_dir: Path, fd: int) -> None:
        self.run_dir = run_dir
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, run_dir: Path, *, note_pid: bool = True) -> RunLock:
        """Take the lock, or raise a UserError naming the process that holds it."""
        path = Path(run_dir) / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise UserError(f"cannot create the lock file {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = cls._holder(fd)
            os.close(fd)
            raise UserError(
                f"another `contagion run`{f' (pid {holder})' if holder else ''} is writing to {run_dir} "
                f"(it holds {path}); wait for it to finish, or give this run another --out"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise UserError(f"cannot lock {path}: {exc.strerror or exc}") from None
        if note_pid:
            with contextlib.suppress(OSError):  # the pid is only a hint for the message above
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(Path(run_dir), fd)

    @staticmethod
    def _holder(fd: int) -> str | None:
        try:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            return None
        return text if text.isdigit() else None

    @staticmethod
    def held(run_dir: Path) -> bool:
        """Whether some process holds the lock now (checks without keeping it)."""
        path = Path(run_dir) / LOCK_FILE
        if not path.is_file():
            return False
        try:
            lock = RunLock.acquire(run_dir, note_pid=False)  # the holder's pid stays in the file
        except UserError:
            return True
        lock.release()
        return False

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
