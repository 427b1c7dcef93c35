"""The adaptive batcher: one per loaded model version.

A request becomes a future in a queue. A batch leaves when
- the model has a free worker and nothing is running (a lone request never waits), or
- the queue holds `max_batch_size` rows, or
- waiting longer would break the latency budget of the oldest request, given the learned
  cost of a batch of that size (only matters with more than one worker per version).
Everything is driven by callbacks on the event loop (enqueue, batch done, one timer), so
there is no polling. Scheduling runs once per loop turn, after the requests parsed in that
turn have been queued, so requests that arrive together share a batch.

A request of more rows than `max_batch_size` leaves as a batch of its own and runs as several model
calls of at most `max_batch_size` rows, whose outputs are joined: every model call, and so every
batch size the metrics and the statistics extension count, stays within 1..`max_batch_size`
whatever clients send.

Strings (BYTES inputs, object arrays) are never padded: numeric rows of different lengths are
right-padded with 0 to share a model call, but a 0 among strings would be a token the client never
sent. So a request whose strings have another row shape than the batch's first request waits for the
next batch, which it leads (strings of different lengths in one shape, such as one text per row,
share batches as any rows do).

The model call runs on the version's thread pool, except for batches expected to take less
than `inline_max_ms`: those run on the event loop itself, because handing a batch to a
thread and back (and the thread waiting for the GIL while the loop is busy) costs far more
than a model that fast.

A failed batch fails each of its requests; a request whose budget cannot be met is refused
at once (503), and one whose client deadline passes is answered 504 and dropped from the
queue.

Priorities follow Triton's schedule policy: one queue per level, 1 the highest; 0, or a level
past `priority_levels`, means `default_priority`. A batch takes first the requests that could not
wait for one more batch without breaking their own latency budget (oldest first, whatever their
level), then fills up level by level, each level in arrival order. So a high-priority request
overtakes a backlog of low ones, and a low one still leaves once its budget says it must.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from core.errors import BudgetExceeded, DeadlineExceeded, ModelFailed, QueueFull
from observability.tracing import DISABLED, Tracer
from runners.base import Runner
from runners.cost import BatchCost
from runners.rows import NamedRows, Rows
from runners.settings import BatchSettings

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from observability.metrics import BatchMetrics

Outputs = dict[str, np.ndarray]
Call = tuple[int, float, float]
"""One model call: (rows, seconds, seconds of those spent collating its inputs)."""


@dataclass(slots=True, eq=False)
class _Pending:
    rows: Rows
    future: asyncio.Future[Outputs]
    enqueued: float
    level: int = 0  # index into the batcher's queues: priority - 1
    deadline_timer: asyncio.TimerHandle | None = field(default=None)
    trace: Context | None = field(default=None)  # the request's span context, only when it is recorded
    enqueued_ns: int = 0  # wall clock for the queue_wait span, taken only when traced
    work: int = 0  # what the rows cost in the cost model's units (`Runner.work`): the rows, or their tokens


@dataclass(slots=True)
class BatchStats:
    """What this batcher has done, in plain ints so the hot path pays nothing for them: for tests and debugging
    (the metrics layer counts through `BatchMetrics`, observability/metrics.py)."""

    batches: int = 0
    rows: int = 0
    failed_batches: int = 0
    refused: int = 0
    expired: int = 0


class AdaptiveBatcher:
    def __init__(
        self, runner: Runner, settings: BatchSettings, metrics: BatchMetrics | None = None, tracer: Tracer = DISABLED
    ) -> None:
        self.runner = runner
        self.metrics = metrics
        self.tracer = tracer
        self.settings = settings
        self.max_batch_size = settings.max_batch_size
        self.budget = settings.max_latency_ms / 1000.0
        self.inline_budget = settings.inline_max_ms / 1000.0
        self.cost = BatchCost()
        self.stats = BatchStats()
        self._executor = ThreadPoolExecutor(settings.workers, thread_name_prefix=f"batch-{runner.tag}")
        self.priority_levels = settings.priority_levels
        self.default_priority = settings.default_priority
        self._queues: list[deque[_Pending]] = [deque() for _ in range(settings.priority_levels)]
        self._level_rows = [0] * settings.priority_levels
        # What the cost grows with besides rows: for a model of sequences or texts the cost model counts work
        # (rows times tokens, `Runner.work`); for fixed-size inputs work is the rows, and these add nothing.
        self._varies = runner.varies
        self._level_work = [0] * settings.priority_levels
        self._queued_work = 0
        self._row_work = 1.0  # work of a typical row, from recent requests
        self._queued = 0  # requests in the queues, expired ones included until a dispatch drops them
        self._queued_rows = 0
        self._running = 0
        self._inflight = 0  # requests queued or in a running batch
        self._running_until = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._kicked = False  # a scheduling pass is due this loop turn
        self._idle: asyncio.Event | None = None

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    @property
    def running(self) -> int:
        return self._running

    def level_rows(self, priority: int) -> int:
        """Rows waiting at `priority` (0: the default level)."""
        return self._level_rows[self.level_of(priority)]

    def level_of(self, priority: int) -> int:
        """The queue index of a request priority: Triton's rule, 0 or an unknown level is the default."""
        return (priority if 0 < priority <= self.priority_levels else self.default_priority) - 1

    def learn(self, timings: list[tuple[int, float]]) -> None:
        """Seed the cost model, e.g. with the warm-up's (work, seconds) timings."""
        for work, seconds in timings:
            self.cost.observe(work, seconds)

    def expected_cost(self, rows: Rows) -> float | None:
        """What running these rows alone is expected to take; None before anything was learned."""
        return self.cost.expected(self.runner.work(rows) if self._varies else len(rows))

    async def submit(self, rows: Rows, deadline: float | None = None, priority: int = 0) -> Outputs:
        """Run `rows` in some batch and return exactly their outputs.

        `deadline` is an absolute `loop.time()` after which the caller no longer wants the answer;
        `priority` is Triton's request priority (1 the highest, 0 the default level).
        """
        return await self.enqueue(rows, deadline, priority)

    def enqueue(self, rows: Rows, deadline: float | None = None, priority: int = 0) -> asyncio.Future[Outputs]:
        """`submit` without a coroutine around it: the future of `rows`' outputs, for callers that share it
        (the cache's single flight). Cancelling it drops the rows if their batch has not left yet."""
        loop = asyncio.get_running_loop()
        n = len(rows)
        level = self.level_of(priority)
        if self.metrics is not None:
            self.metrics.prioritized(level)
        if self._queued_rows + n > self.settings.max_queue_rows:
            self.stats.refused += 1
            raise QueueFull(f"{self.runner.tag}: queue is full", headers={"Retry-After": "1"})
        now = loop.time()
        if deadline is not None and deadline <= now:
            self.stats.expired += 1
            raise DeadlineExceeded(f"{self.runner.tag}: request deadline already passed")
        work = n
        if self._varies:
            work = self.runner.work(rows)
            row_work = work / n
            self._row_work = 0.9 * self._row_work + 0.1 * row_work if self.stats.batches else row_work
        if self._expected_latency(now, n, work, level) > self.budget:
            self.stats.refused += 1
            raise BudgetExceeded(
                f"{self.runner.tag}: cannot answer within {self.settings.max_latency_ms:g} ms", headers={"Retry-After": "1"}
            )
        pending = _Pending(rows, loop.create_future(), now, level, work=work)
        trace = self.tracer.current()
        if trace is not None:
            pending.trace, pending.enqueued_ns = trace, time.time_ns()
        if deadline is not None:
            pending.deadline_timer = loop.call_at(deadline, self._expire, pending)
        self._queues[level].append(pending)
        self._queued += 1
        self._queued_rows += n
        self._level_rows[level] += n
        self._queued_work += work
        self._level_work[level] += work
        self._inflight += 1
        if not self._kicked:
            self._kicked = True
            loop.call_soon(self._on_kick, loop)
        return pending.future

    async def drain(self) -> None:
        """Wait until nothing is queued or running (for unloading a version without failing requests)."""
        while self._queued or self._running:
            self._idle = self._idle or asyncio.Event()
            await self._idle.wait()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _expected_latency(self, now: float, n: int, work: int, level: int) -> float:
        """Queue wait plus own run time, from the learned cost of batches; only rows of the same or
        higher priority are ahead (lower ones that fall due later are bounded by their own budget)."""
        ahead = sum(self._level_rows[: level + 1])
        row_work = sum(self._level_work[: level + 1]) / ahead if ahead else work / n
        full_batches, rest = divmod(ahead, self.max_batch_size)
        busy = max(0.0, self._running_until - now) if self._running >= self.settings.workers else 0.0
        queued = full_batches * self.cost.estimate(self.max_batch_size * row_work) / self.settings.workers
        return busy + queued + self.cost.estimate(min(rest * row_work + work, max(self.max_batch_size * row_work, work)))

    def _expire(self, pending: _Pending) -> None:
        if not pending.future.done():
            self.stats.expired += 1
            pending.future.set_exception(DeadlineExceeded(f"{self.runner.tag}: request deadline passed in the queue"))

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._queued and self._running < self.settings.workers:
            now = loop.time()
            if self._running == 0 or self._queued_rows >= self.max_batch_size:
                self._dispatch(loop, now)
                continue
            oldest = min(q[0].enqueued for q in self._queues if q)
            row_work = self._queued_work / self._queued_rows if self._queued_rows else 1.0
            leave_at = oldest + self.budget - self.cost.estimate(min(self._queued_work, self.max_batch_size * row_work))
            if leave_at <= now:
                self._dispatch(loop, now)
                continue
            self._arm_timer(loop, leave_at)
            return

    def _on_kick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._kicked = False
        self._schedule(loop)

    def _arm_timer(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = loop.call_at(at, self._on_timer, loop)

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._schedule(loop)

    def _next(self, due_by: float) -> deque[_Pending] | None:
        """The queue whose head goes next: the oldest head enqueued by `due_by` (it cannot wait for
        another batch), else the highest level's head; None when every queue is empty."""
        due: deque[_Pending] | None = None
        first: deque[_Pending] | None = None
        for queue in self._queues:
            if queue:
                head = queue[0].enqueued
                if head <= due_by and (due is None or head < due[0].enqueued):
                    due = queue
                if first is None:
                    first = queue
        return due if due is not None else first

    def _dispatch(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        batch: list[_Pending] = []
        rows = 0
        # Waiting for the next batch means about two batches' time until done: past its budget, a request is due.
        due_by = now + 2 * self.cost.estimate(self.max_batch_size * self._row_work) - self.budget
        while (queue := self._next(due_by)) is not None:
            head = queue[0]
            n = len(head.rows)
            if batch and (rows + n > self.max_batch_size or not joins(batch[0].rows, head.rows)):
                break
            queue.popleft()
            self._queued -= 1
            self._queued_rows -= n
            self._level_rows[head.level] -= n
            self._queued_work -= head.work
            self._level_work[head.level] -= head.work
            if head.future.done():  # expired or the client went away
                self._inflight -= 1
                _stop_timer(head)
                continue
            batch.append(head)
            rows += n
        if not batch:
            self._notify_idle()
            return
        arrays = [p.rows for p in batch]
        # padded to its longest row, a batch of sequences runs rows times the longest row's work
        work = rows * max(p.work / len(p.rows) for p in batch) if self._varies else rows
        expected = self.cost.expected(work)
        if expected is not None and expected < self.inline_budget:
            self._complete(batch, rows, now, functools.partial(self._execute, arrays))
            return
        self._running += 1
        self._running_until = max(self._running_until, now + (expected or 0.0))
        work = loop.run_in_executor(self._executor, self._execute, arrays)
        work.add_done_callback(functools.partial(self._finish, loop, batch, rows, now))

    def _execute(self, arrays: list[Rows]) -> tuple[Outputs, list[Call], int, list[int]]:
        """(outputs, each model call, wall-clock start in ns, each call's work): one call per `max_batch_size` rows."""
        start_ns = time.time_ns()  # wall clock, for spans; perf_counter below for the cost model
        calls: list[Call] = []
        works: list[int] = []
        parts: list[Outputs] = []
        for chunk in _chunks(arrays, self.max_batch_size):
            start = time.perf_counter()
            collated = self.runner.collate(chunk)
            collated_at = time.perf_counter()
            parts.append(self.runner.run(collated))
            rows = sum(len(a) for a in chunk)
            calls.append((rows, time.perf_counter() - start, collated_at - start))
            works.append(self.runner.work(collated) if self._varies else rows)
        if len(parts) == 1:
            return parts[0], calls, start_ns, works
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, calls, start_ns, works

    def _finish(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Pending], rows: int, started: float, work: asyncio.Future
    ) -> None:
        self._running -= 1
        self._complete(batch, rows, started, work.result)
        self._schedule(loop)

    def _complete(
        self, batch: list[_Pending], rows: int, started: float,
        outcome: Callable[[], tuple[Outputs, list[Call], int, list[int]]],
    ) -> None:
        """Hand each request its rows of `outcome()` (the batch run now, or a finished thread's result), or its error."""
        self._inflight -= len(batch)
        self.stats.batches += 1
        self.stats.rows += rows
        try:
            outputs, calls, start_ns, works = outcome()
            bad = [k for k, v in outputs.items() if len(v) != rows]
            if bad:
                raise RuntimeError(f"outputs {bad} do not have one row per input row ({rows})")
        except BaseException as exc:  # noqa: BLE001 - every caller must hear about it
            self.stats.failed_batches += 1
            message = f"{self.runner.tag}: {type(exc).__name__}: {exc}"
            for p in batch:
                _stop_timer(p)
                if not p.future.done():
                    p.future.set_exception(ModelFailed(message))
        else:
            for (_, seconds, _), work in zip(calls, works):
                self.cost.observe(work, seconds)
            if self.tracer.enabled:
                self._trace(batch, rows, start_ns, sum(c[1] for c in calls))
            split_from = time.perf_counter()
            start = 0
            for p in batch:
                end = start + len(p.rows)
                _stop_timer(p)
                if not p.future.done():
                    p.future.set_result({k: v[start:end] for k, v in outputs.items()})
                start = end
            if self.metrics is not None:
                waits = [started - p.enqueued for p in batch]
                self.metrics.batch_done(calls, waits, time.perf_counter() - split_from)
        if self.metrics is not None:
            self.metrics.load(self._queued_rows, self._inflight)
        self._notify_idle()

    def _trace(self, batch: list[_Pending], rows: int, start_ns: int, seconds: float) -> None:
        """Each traced request gets its own queue_wait and batch_execution spans, under its request span."""
        end_ns = start_ns + int(seconds * 1e9)
        attributes = {"model": self.runner.tag, "batch_rows": rows, "batch_requests": len(batch)}
        for p in batch:
            if p.trace is not None:
                self.tracer.record("queue_wait", p.enqueued_ns, start_ns, attributes, parent=p.trace)
                self.tracer.record("batch_execution", start_ns, end_ns, attributes, parent=p.trace)

    def _notify_idle(self) -> None:
        if self._idle is not None and not self._queued and not self._running:
            self._idle.set()
            self._idle = None


def _chunks(arrays: list[Rows], limit: int) -> Iterator[list[Rows]]:
    """The batch's requests in model calls of at most `limit` rows. Only a batch of one request exceeds
    it (dispatch adds no request past it), so its calls are slices of one array, padded alike."""
    if sum(len(a) for a in arrays) <= limit:
        yield arrays
        return
    chunk: list[Rows] = []
    room = limit
    for a in arrays:
        while len(a):
            piece, a = a[:room], a[room:]
            chunk.append(piece)
            room -= len(piece)
            if room == 0:
                yield chunk
                chunk, room = [], limit
    if chunk:
        yield chunk


def joins(first: Rows, other: Rows) -> bool:
    """Whether two requests may share a model call: strings (object arrays) are never padded, so theirs need the
    same row shape; numbers of different lengths are padded alike."""
    if isinstance(first, NamedRows):
        return all(joins(a, other.arrays[k]) for k, a in first.arrays.items())
    return first.dtype != object or first.shape[1:] == other.shape[1:]


def _stop_timer(pending: _Pending) -> None:
    """A request's deadline timer is not needed once its batch has left."""
    if pending.deadline_timer is not None:
        pending.deadline_timer.cancel()
        pending.deadline_timer = None
