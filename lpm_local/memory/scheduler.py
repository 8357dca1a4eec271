"""Running refits: one at a time per profile, across processes, in the background.

- ``ProfileLock``: an exclusive ``flock`` on ``<data dir>/refit-<profile id>.lock`` (0600). A
  flock belongs to the open file description, so the kernel drops it when its holder dies (no
  stale lock after kill -9), two opens in one process exclude each other too, and it is
  independent of SQLite's POSIX locks on the database. The holder's pid is written in it so a
  refused caller can say who holds it.
- ``locked_refit``: take the lock, mark refit rows a dead holder left 'running' as failed, run.
- ``RefitScheduler``: one daemon thread per profile that runs requested refits one after the
  other; requests made while one runs are coalesced into one follow-up.

Sharing the model with the chat: the refit thread takes gradients (w.r.t. the slots only; the
backbone and projector have ``requires_grad=False``) while the chat thread generates under
``no_grad``. Grad mode is thread-local in torch (a thread starts with grad enabled whatever its
parent does; tested), and the frozen eval-mode modules keep no state between forwards, so the two
can run at once. To keep the chat fast, the runtime pauses the refit between optimiser steps
while a turn is in flight.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from lpm_local import locations
from lpm_local.errors import LpmError
from lpm_local.storage.store import Store

log = logging.getLogger(__name__)


class RefitBusy(LpmError):
    """Another refit of this profile is running (in this process or another)."""


def lock_path(profile_id: int) -> Path:
    return locations.data_dir() / f"refit-{int(profile_id)}.lock"


class ProfileLock:
    """``with ProfileLock(pid):`` holds the profile's refit lock or raises ``RefitBusy``."""

    def __init__(self, profile_id: int, path: Path | None = None):
        self.profile_id = profile_id
        self.path = Path(path) if path is not None else lock_path(profile_id)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> ProfileLock:
        if self._fd is not None:
            raise RuntimeError("ProfileLock is not re-entrant")
        locations.ensure_private_dir(self.path.parent)
        locations.create_private_file(self.path)
        fd = os.open(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f" (process {holder})" if holder else ""
            raise RefitBusy(
                f"a refit of this profile is already running{who}; wait for it, "
                "or cancel it where it runs"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.ftruncate(fd, 0)
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> ProfileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def refit_running_elsewhere(profile_id: int) -> int | None:
    """The pid holding the profile's refit lock, or None (a probe: takes and drops the lock)."""
    try:
        with ProfileLock(profile_id):
            return None
    except RefitBusy:
        fd = os.open(lock_path(profile_id), os.O_RDONLY)
        try:
            return _read_pid(fd) or -1
        finally:
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def recover_interrupted(store: Store, profile_id: int) -> int:
    """Mark refit rows left 'running' as failed; only call holding the profile's lock (then no
    live refit can own them). Returns how many were found."""
    stale = [r for r in store.list_refits(profile_id) if r.status == "running"]
    for record in stale:
        store.finish_refit(
            record.id,
            "failed",
            detail='{"note": "interrupted: the process ended during the refit"}',
        )
    return len(stale)


def locked_refit(store: Store, profile_id: int, job: Callable[[], object]) -> object:
    """Run ``job()`` holding the profile's refit lock (``RefitBusy`` if another holds it)."""
    with ProfileLock(profile_id):
        recover_interrupted(store, profile_id)
        return job()


class RefitScheduler:
    """A background thread that runs ``job(reason, cancel)`` for each (coalesced) request."""

    def __init__(self, name: str, job: Callable[[str, threading.Event], object]):
        self._job = job
        self._cond = threading.Condition()
        self._pending: str | None = None
        self._running = False
        self._closed = False
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lpm-refit-{name}", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._running

    @property
    def pending(self) -> str | None:
        return self._pending

    def request(self, reason: str) -> None:
        """Ask for a refit; one already waiting keeps its place (the latest reason wins)."""
        with self._cond:
            if self._closed:
                return
            self._pending = reason
            self._cond.notify_all()

    def cancel(self) -> None:
        """Stop the running refit (within one optimiser step) and drop the waiting request."""
        with self._cond:
            self._pending = None
            if self._running:
                self._cancel.set()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing runs or waits; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._running and self._pending is None, timeout)

    def close(self, timeout: float | None = 60.0) -> None:
        """Cancel, then join the thread (a refit stops within one step)."""
        with self._cond:
            self._closed = True
            self._pending = None
            self._cancel.set()
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._pending is not None)
                if self._closed:
                    return
                reason, self._pending = self._pending, None
                self._running = True
                self._cancel.clear()
            try:
                self._job(reason, self._cancel)
            except BaseException:  # the thread must outlive any job; jobs report their own
                log.exception("refit job failed")
            finally:
                with self._cond:
                    self._running = False
                    self._cond.notify_all()
