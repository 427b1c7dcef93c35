"""The cache a request sees: memory, then Redis, then one computation shared by identical misses.

Each caller waits for a shared computation until its own deadline, so one caller's deadline
or departure never fails the others; once every caller has left, the computation is cancelled,
which drops its rows from the batcher's queue if their batch has not left yet. Versions cheaper to run than a Redis round trip
(`redis_min_cost_ms`, judged from the batcher's learned cost) skip Redis and keep to memory.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis

from core.errors import DeadlineExceeded
from gateway.cache.lru import ByteLru, frozen_copy, size_of
from gateway.cache.redis_tier import RedisTier
from gateway.cache.settings import CacheSettings
from gateway.cache.stats import CacheStats
from gateway.cache.wire import Outputs

T = TypeVar("T")


class _Flight(list[asyncio.Future]):
    """One shared computation's waiters, a future each (a caller that leaves cancels only its own), and
    the computation, cancelled when the last waiter leaves before it is done."""

    __slots__ = ("work",)

    def __init__(self) -> None:
        super().__init__()
        self.work: asyncio.Future | None = None


class PredictionCache:
    """One per worker and event loop (no locks: the loop serialises it).

    `redis` must return bytes (decode_responses=False); None means memory only. The cache uses
    at most two of its pool's connections: one for the read in flight, one for the writer.
    `clock` paces the back-off after a Redis failure.
    """

    def __init__(
        self, settings: CacheSettings, redis: aioredis.Redis | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.stats = CacheStats()
        self._lru = ByteLru(settings.max_entries, settings.max_bytes)
        self._redis = RedisTier(settings, redis, self.stats, self._promote, clock)
        self._inflight: dict[bytes, _Flight] = {}

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def memory_bytes(self) -> int:
        return self._lru.nbytes

    @property
    def pending_writes(self) -> int:
        return self._redis.pending_writes

    async def get(self, key: bytes) -> Outputs | None:
        """The LRU, then Redis; a Redis hit is promoted into the LRU."""
        if not self.settings.enabled:
            return None
        outputs = self._lru.get(key)
        if outputs is not None:
            self.stats.memory_hits += 1
            return dict(outputs)
        self.stats.memory_misses += 1
        outputs = await self._redis.get(key)
        return dict(outputs) if outputs is not None else None

    async def put(self, key: bytes, outputs: Outputs, shared: bool = True) -> None:
        """Into the LRU now, into Redis in the background when `shared` (the client never waits for Redis)."""
        if self.settings.enabled:
            self._store(key, outputs, shared)

    def worth_sharing(self, expected_seconds: float | None) -> bool:
        """Whether a request expected to cost this much (None: not known yet) should go through Redis."""
        return expected_seconds is None or expected_seconds * 1000.0 >= self.settings.redis_min_cost_ms

    async def get_or_compute(
        self, key: bytes, compute: Callable[[], Awaitable[Outputs]], shared: bool = True, deadline: float | None = None
    ) -> tuple[Outputs, bool]:
        """Cached outputs, or `compute()`'s; concurrent identical misses share one computation.

        The bool is True when no computation was needed (memory or Redis). The computation runs
        on its own (a batcher's future as it is, a coroutine as a task), and each caller waits for
        it until its own `deadline` (loop time), so one caller's deadline or departure never fails
        the others. If it raises, every waiter gets the error and nothing is cached. `shared` False
        keeps the key out of Redis (see `worth_sharing`); such a miss needs no task of its own.
        """
        if not self.settings.enabled:
            self.stats.computes += 1
            return await _until(deadline, compute()), False
        outputs = self._lru.get(key)
        if outputs is not None:
            self.stats.memory_hits += 1
            return dict(outputs), True
        self.stats.memory_misses += 1
        flight = self._inflight.get(key)
        if flight is None:
            flight = self._start(key, compute, shared)
        else:
            self.stats.coalesced += 1
        waiter = asyncio.get_running_loop().create_future()
        flight.append(waiter)
        try:
            outputs, hit = await (waiter if deadline is None else _until(deadline, waiter))
        except BaseException:
            self._left(key, flight)
            raise
        return dict(outputs), hit

    def _left(self, key: bytes, flight: _Flight) -> None:
        """A waiter left early (its deadline, a disconnect): when none is left, nobody wants the computation."""
        work = flight.work
        if work is None or work.done() or not all(w.done() for w in flight):
            return
        if self._inflight.get(key) is flight:  # a caller arriving now starts afresh, never joins a cancelled flight
            del self._inflight[key]
        work.cancel()

    def _start(self, key: bytes, compute: Callable[[], Awaitable[Outputs]], shared: bool) -> _Flight:
        """The shared computation of a miss, registered until it ends: a Redis read first when `shared`,
        else `compute()` at once (a batcher's future needs no task), its outputs kept in memory."""
        flight = _Flight()
        self._inflight[key] = flight
        if shared:
            work = asyncio.get_running_loop().create_task(self._fill(key, compute))
            work.add_done_callback(functools.partial(self._land, key, flight))
        else:
            if self._redis.redis is not None:
                self.stats.redis_not_worth += 1
            self.stats.computes += 1
            work = asyncio.ensure_future(compute())
            work.add_done_callback(functools.partial(self._computed, key, flight))
        flight.work = work
        return flight

    def drop_model_version(self, model: str, version: str) -> int:
        """Free the LRU entries of every generation of `version` (or of one exact token); returns how many."""
        return self._lru.drop_model_version(model, version)

    async def flush(self) -> None:
        """Wait for the Redis writes in flight (shutdown, tests)."""
        await self._redis.flush()

    def _store(self, key: bytes, outputs: Outputs, shared: bool) -> Outputs:
        frozen = frozen_copy(outputs)
        if frozen is None:
            return outputs
        self.stats.evictions += self._lru.put(key, *frozen)
        if shared:
            self._redis.schedule_write(key, frozen[0])
        return frozen[0]

    def _promote(self, key: bytes, outputs: Outputs) -> None:
        """A Redis hit, decoded into read-only arrays already: kept in memory as it is."""
        self.stats.evictions += self._lru.put(key, outputs, size_of(outputs))

    async def _fill(self, key: bytes, compute: Callable[[], Awaitable[Outputs]]) -> tuple[Outputs, bool]:
        outputs = await self._redis.get(key)
        if outputs is not None:
            return outputs, True
        self.stats.computes += 1
        return self._store(key, await compute(), True), False

    def _computed(self, key: bytes, flight: _Flight, computed: asyncio.Future[Outputs]) -> None:
        """A memory-only miss is done: kept in memory, and its waiters get the kept copy (or its error)."""
        failed = computed.cancelled() or computed.exception() is not None
        self._land(key, flight, computed, None if failed else (self._store(key, computed.result(), False), False))

    def _land(self, key: bytes, flight: _Flight, done: asyncio.Future, result: tuple[Outputs, bool] | None = None) -> None:
        """The computation `done` is over: no longer shared, and each waiter still waiting gets its outcome
        (`result`, else `done`'s own)."""
        if self._inflight.get(key) is flight:
            del self._inflight[key]
        for waiter in flight:
            if waiter.done():  # its caller left (deadline, disconnect): the others still get the answer
                continue
            if done.cancelled():
                waiter.cancel()
            elif (exc := done.exception()) is not None:
                waiter.set_exception(exc)
            else:
                waiter.set_result(result if result is not None else done.result())


async def _until(deadline: float | None, work: Awaitable[T]) -> T:
    """`work`'s result, or 504 once the loop time passes `deadline`."""
    if deadline is None:
        return await work
    try:
        async with asyncio.timeout_at(deadline):
            return await work
    except TimeoutError:
        raise DeadlineExceeded("request deadline passed while its result was computed") from None
