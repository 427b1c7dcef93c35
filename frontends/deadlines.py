"""Time limits on requests (whole request, body read) with one timer per worker, not one per request.

`asyncio.timeout` arms an event-loop timer for every request and cancels it again: a timer object,
a libuv timer start and stop, and a context manager, twice a request (body read, whole request).
These limits are seconds long and need no millisecond precision, so a request here only registers
its deadline in a dict; one sweep every `RESOLUTION_S` cancels the tasks whose deadline has passed.
A limit fires at most `RESOLUTION_S` late.

    limit = deadlines.start(5.0)
    try:
        ...  # awaits
    except asyncio.CancelledError:
        if deadlines.expired(limit):  # this limit cancelled the task; the cancellation is taken back
            raise RequestTimeout(...) from None
        raise
    finally:
        deadlines.stop(limit)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

RESOLUTION_S = 0.05


@dataclass(slots=True, eq=False)
class Limit:
    task: asyncio.Task
    at: float
    """Loop time after which the task is cancelled."""
    cancelling: int
    """The task's pending cancellations when the limit started (nested limits and other cancellers)."""
    expired: bool = False


class Deadlines:
    """The limits of one event loop; the sweep runs only while some limit is open."""

    def __init__(self) -> None:
        self._open: dict[Limit, None] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self, seconds: float) -> Limit:
        """A limit of `seconds` on the current task, from now."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a time limit needs a task to cancel")
        if loop is not self._loop:  # a new loop (tests run several): limits of the old one are moot
            self._open.clear()
            self._loop, self._timer = loop, None
        limit = Limit(task, loop.time() + seconds, task.cancelling())
        self._open[limit] = None
        if self._timer is None:
            self._timer = loop.call_later(RESOLUTION_S, self._sweep)
        return limit

    def stop(self, limit: Limit) -> None:
        self._open.pop(limit, None)

    @staticmethod
    def expired(limit: Limit) -> bool:
        """After a CancelledError: whether `limit` caused it. If so, the cancellation is taken back and the
        caller raises its own error instead; if something else cancelled the task too, it stays cancelled."""
        return limit.expired and limit.task.uncancel() <= limit.cancelling

    def _sweep(self) -> None:
        loop = self._loop
        now = loop.time()
        for limit in [limit for limit in self._open if limit.at <= now]:
            del self._open[limit]
            limit.expired = True
            limit.task.cancel()
        self._timer = loop.call_later(RESOLUTION_S, self._sweep) if self._open else None


deadlines = Deadlines()
"""The process's limits: one event loop serves a worker's requests."""
