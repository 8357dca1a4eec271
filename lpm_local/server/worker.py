"""One model, one reply at a time: a single generation thread fed by a bounded queue.

A CPU backbone generating two replies at once would only make both slow; so requests wait
their turn. The wait is bounded: when ``max_waiting`` requests are already queued, a new one is
refused at once with 429 (retry later) instead of piling up; once the server is shutting down,
with 503. A job whose client left (``cancel`` set) is skipped if it has not started, and stops
within one token if it has.

The generation thread hands events to the request's asyncio task through ``Job``: the thread
appends to a deque and wakes the task with ``call_soon_threadsafe``; nothing is lost if the task
is between waits.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from lpm_local.server.errors import ApiError

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5

# Event kinds a job delivers, in order: "start" once, "chunk"s, then "done" or "error".
Event = tuple[str, Any]


class Job:
    """One request's work and the channel its events come back on."""

    def __init__(self, work: Callable[[Job], Any], loop: asyncio.AbstractEventLoop):
        self.work = work
        self.cancel = threading.Event()  # the client left, or the server is stopping
        self._loop = loop
        self._events: collections.deque[Event] = collections.deque()
        self._ready = asyncio.Event()  # created on the loop's thread, set only from it
        self.finished = False
        self.checked_at = 0.0  # monotonic time the client connection was last checked

    # -- the generation thread's side -------------------------------------------------------

    def put(self, kind: str, payload: Any = None) -> None:
        self._events.append((kind, payload))
        try:
            self._loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:  # the loop is closed: the server is gone, nobody is listening
            pass

    # -- the request's side -----------------------------------------------------------------

    async def next_event(self, timeout: float) -> Event | None:
        """The next event, or None if none came within ``timeout`` seconds."""
        if not self._events:
            self._ready.clear()
            if not self._events:  # re-check: an event may have landed before the clear
                try:
                    await asyncio.wait_for(self._ready.wait(), timeout)
                except TimeoutError:
                    return None
        return self._events.popleft() if self._events else None


class GenerationQueue:
    """The single generation thread and the requests waiting for it."""

    def __init__(self, max_waiting: int = 32):
        if max_waiting < 1:
            raise ValueError(f"max_waiting must be >= 1, got {max_waiting}")
        self.max_waiting = max_waiting
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_waiting)
        self._closed = threading.Event()
        self._running: Job | None = None
        self._thread = threading.Thread(target=self._loop, name="lpm-serve-generate", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def submit(self, work: Callable[[Job], Any], loop: asyncio.AbstractEventLoop) -> Job:
        """Queue ``work(job)``; its return value arrives as the "done" event.

        Raises ``ApiError`` 429 when the queue is full, 503 when the server is stopping."""
        if self._closed.is_set():
            raise ApiError(503, "the server is shutting down", code="shutting_down")
        job = Job(work, loop)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise ApiError(
                429,
                f"{self.max_waiting} requests are already waiting for the model; retry shortly",
                code="queue_full",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ) from None
        return job

    def shutdown(self) -> None:
        """Stop taking work and cancel what runs (safe from a signal handler: never blocks)."""
        self._closed.set()
        running = self._running
        if running is not None:
            running.cancel.set()

    def close(self, timeout: float | None = 30.0) -> None:
        """``shutdown``, refuse everything still waiting (503), and join the thread."""
        self.shutdown()
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.put("error", ApiError(503, "the server is shutting down", code="shutting_down"))
        try:
            self._queue.put_nowait(None)  # wakes the thread if it waits for work
        except queue.Full:
            pass
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=0.5)
            except queue.Empty:
                if self._closed.is_set():
                    return
                continue
            if job is None:
                return
            if self._closed.is_set():
                job.put("error", ApiError(503, "the server is shutting down", code="shutting_down"))
                continue
            if job.cancel.is_set():  # the client left while it waited
                job.put("error", ApiError(499, "the client closed the request"))
                continue
            self._running = job
            try:
                job.put("done", job.work(job))
            except ApiError as error:
                job.put("error", error)
            except Exception as exc:  # a bug: reported to this client, the server carries on
                log.exception("generation failed")
                job.put("error", ApiError(500, f"generation failed: {type(exc).__name__}: {exc}"))
            finally:
                self._running = None
                job.finished = True
