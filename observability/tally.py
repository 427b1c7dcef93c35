"""Metric updates added up in memory and written to the multiprocess files once per event-loop turn.

Under load a worker answers dozens of requests in one loop turn (a batch completes them together),
and prometheus-client's multiprocess values take a lock and write a memory-mapped file on every
update: six writes a request cost about a tenth of the worker's CPU. Here each labelled value
collects its updates in a plain dict, and a callback at the end of the loop turn writes each
distinct value once. The callback runs before the loop next waits for I/O, so a scrape that any
worker reads after this worker's responses went out counts them. A request that arrives alone
still pays for its own writes (about fifteen, some 50 µs): holding them back longer would let a
scrape or a statistics read served by another worker miss responses already sent.

Only a thread running an event loop defers (one loop per worker uses it); any other thread (a
model loader, a thread pool, a test without a loop) writes at once.

Histograms are added up per bucket and written through the child's own `_sum` and `_buckets`
values (prometheus-client's histogram keeps one value per bucket, not cumulative, in multiprocess
mode); tests/observability/test_tally.py fails if that layout changes.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from threading import get_ident
from typing import Any


class _Observed:
    """One histogram child's observations since the last write: a sum and a count per bucket."""

    __slots__ = ("bounds", "child", "counts", "sum")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds = child._upper_bounds
        self.sum = 0.0
        self.counts = [0] * len(self.bounds)

    def add(self, amount: float) -> None:
        self.sum += amount
        self.counts[bisect_left(self.bounds, amount)] += 1

    def write(self) -> None:
        self.child._sum.inc(self.sum)
        for bucket, n in zip(self.child._buckets, self.counts, strict=True):
            if n:
                bucket.inc(n)


class Tally:
    """Counter increments, histogram observations and gauge settings, written once per loop turn."""

    __slots__ = ("_counts", "_gauges", "_loop", "_observed", "_thread")

    def __init__(self) -> None:
        self._counts: dict[Any, float] = {}
        self._observed: dict[Any, _Observed] = {}
        self._gauges: dict[Any, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # set while a write is due in that loop
        self._thread = 0  # the thread of `_loop`

    def inc(self, child: Any, amount: float = 1.0) -> None:
        if self._deferred():
            self._counts[child] = self._counts.get(child, 0.0) + amount
        else:
            child.inc(amount)

    def observe(self, child: Any, amount: float) -> None:
        if self._deferred():
            observed = self._observed.get(child)
            if observed is None:
                observed = self._observed[child] = _Observed(child)
            observed.add(amount)
        else:
            child.observe(amount)

    def set(self, child: Any, value: float) -> None:
        """A gauge's value; the last one set in a turn is written."""
        if self._deferred():
            self._gauges[child] = value
        else:
            child.set(value)

    def update(self, counts: tuple[tuple[Any, float], ...], observations: tuple[tuple[Any, float], ...],
               gauges: tuple[tuple[Any, float], ...] = ()) -> None:
        """Several updates behind one check of the loop: each request's own metrics (counters, latency
        histograms, a timestamp) in one call, as the per-update check costs as much as the update."""
        if not self._deferred():
            for child, amount in counts:
                child.inc(amount)
            for child, amount in observations:
                child.observe(amount)
            for child, value in gauges:
                child.set(value)
            return
        pending = self._counts
        for child, amount in counts:
            pending[child] = pending.get(child, 0.0) + amount
        observed = self._observed
        for child, amount in observations:
            each = observed.get(child)
            if each is None:
                each = observed[child] = _Observed(child)
            each.add(amount)
        for child, value in gauges:
            self._gauges[child] = value

    def observe_all(self, child: Any, amounts: list[float]) -> None:
        """Several observations of one histogram (a batch's queue waits) behind one check of the loop."""
        if not self._deferred():
            for amount in amounts:
                child.observe(amount)
            return
        observed = self._observed.get(child)
        if observed is None:
            observed = self._observed[child] = _Observed(child)
        for amount in amounts:
            observed.add(amount)

    def flush(self) -> None:
        """Write everything gathered so far (the end-of-turn callback; a reader of the metrics calls it first)."""
        self._loop = None
        counts, observed, gauges = self._counts, self._observed, self._gauges
        self._counts, self._observed, self._gauges = {}, {}, {}
        for child, amount in counts.items():
            child.inc(amount)
        for each in observed.values():
            each.write()
        for child, value in gauges.items():
            child.set(value)

    def _deferred(self) -> bool:
        """True on a running loop's thread, with a write scheduled at the end of this turn."""
        loop = self._loop
        # A thread runs one loop at a time, so this is the running loop: no get_running_loop (a getpid call).
        if self._thread == get_ident() and loop is not None and loop.is_running():
            return True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if loop is not self._loop:
            if self._loop is not None:  # a write was due in a loop that stopped before it ran
                self.flush()
            self._loop, self._thread = loop, get_ident()
            loop.call_soon(self.flush)
        return True
