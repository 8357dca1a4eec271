"""One interactive instance per data dir.

Two TUIs on one database would each schedule refits and interleave a chat's turns; SQLite would
keep the file consistent, but the user would see two diverging views of one memory. The first
instance holds an exclusive ``flock`` on ``lpm.lock``; a second one fails at once with a message
naming the data dir and the holder's pid.

``flock`` rather than ``fcntl`` locks: a flock belongs to the open file description, so the kernel
drops it when the process dies (no stale lock after kill -9), and it is independent of the POSIX
locks SQLite takes on the database file.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from lpm_local import locations
from lpm_local.errors import AlreadyRunning


class InstanceLock:
    """``with InstanceLock():`` holds the data dir for this process, or raises ``AlreadyRunning``.

    The lock is not re-entrant: a second ``InstanceLock`` on the same path fails even in the
    same process, so a test can play the second instance without a second process.
    """

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else locations.lock_path()
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> InstanceLock:
        """Take the lock without waiting; ``AlreadyRunning`` if another instance holds it."""
        if self._fd is not None:
            return self
        locations.ensure_private_dir(self.path.parent)
        locations.create_private_file(self.path)
        fd = os.open(self.path, os.O_RDWR)
        try:
            # LOCK_NB: the second instance must answer at once, never hang behind the first.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise AlreadyRunning(
                f"lpm is already running for {self.path.parent} (pid {holder}). Close it first, "
                "or use LPM_HOME to run a separate profile store."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # The pid is only for the message a second instance prints; the flock is the lock.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Let another instance start. The file stays: deleting it could let two instances
        lock two different files of the same name."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> InstanceLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    """The holder's pid as written in the lock file, or "unknown" (it may be mid-write)."""
    text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    return text if text.isdigit() else "unknown"
