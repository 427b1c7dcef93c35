"""The shared tier: Redis, reached through coalesced reads and batched writes, and left alone while it fails.

Redis round trips are shared, so they cost a request little: a miss's key is read at once
when no read is in flight, and the keys that miss meanwhile leave together as one MGET when
it returns; one writer task sends each burst of new entries as one script call. Under load
one round trip serves many requests; when idle, none waits for another's. A failure or a
timeout is a miss, never a failed request, and the breaker keeps later calls off Redis for
`redis_backoff_s`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable

import redis.asyncio as aioredis

from core.redis_breaker import RedisBreaker
from gateway.cache.settings import CacheSettings
from gateway.cache.stats import CacheStats
from gateway.cache.wire import Outputs, decode_outputs, encode_outputs

log = logging.getLogger(__name__)

_Read = tuple[bytes, asyncio.Future[Outputs | None], float]  # key, its waiter, when it queued
# One command for a burst of writes: a pipeline costs the client a packed command and a parsed
# reply per entry, several times the cost of the same SETs as one script call.
_WRITE_LUA = """
local ttl = ARGV[1]
for i, key in ipairs(KEYS) do
    redis.call('SET', key, ARGV[i + 1], 'EX', ttl)
end
return #KEYS
"""


class RedisTier:
    """One per cache; it uses at most two of the client's pool connections: the read in flight and the writer.

    `redis` must return bytes (decode_responses=False); None means no shared tier (every read
    misses and every write is dropped). A hit is handed to `promote` (the memory tier) as it
    is decoded, so the waiters of one MGET all find it in memory afterwards.
    """

    def __init__(
        self,
        settings: CacheSettings,
        redis: aioredis.Redis | None,
        stats: CacheStats,
        promote: Callable[[bytes, Outputs], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if redis is not None and redis.get_connection_kwargs().get("decode_responses"):
            raise ValueError("the cache's Redis client must not decode responses")
        self.settings = settings
        self.redis = redis
        self.stats = stats
        self._promote = promote
        self._prefix = settings.key_prefix.encode()
        self._timeout = settings.redis_timeout_ms / 1000.0
        self._write_queue: deque[tuple[bytes, Outputs]] = deque()
        self._writing = 0  # entries in the write being sent
        self._writer: asyncio.Task[None] | None = None
        self._write_script = redis.register_script(_WRITE_LUA) if redis is not None else None
        self._read_queue: deque[_Read] = deque()
        self._reads = 0  # keys being read or queued for the next read
        self._reading = False  # a read in flight: a miss queues for the next one
        self._reader: asyncio.Task[None] | None = None
        self._breaker = RedisBreaker("prediction cache", settings.redis_backoff_s, "serving from memory only", clock)

    @property
    def pending_writes(self) -> int:
        return len(self._write_queue) + self._writing

    async def flush(self) -> None:
        """Wait for the writes in flight (shutdown, tests)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.gather(self._writer, return_exceptions=True)

    async def get(self, key: bytes) -> Outputs | None:
        """Read now if no read is in flight; else wait for the next read, which takes every key queued meanwhile."""
        if self._reads >= self.settings.max_pending_reads:
            self.stats.redis_bypassed += 1
            return None
        if not self._usable():
            return None
        loop = asyncio.get_running_loop()
        self._reads += 1
        if self._reading:
            waiter = loop.create_future()
            self._read_queue.append((key, waiter, loop.time()))
            return await waiter
        self._reading = True
        try:
            return (await self._read([key], loop.time()))[0]
        finally:
            self._reads -= 1
            self._read_next()

    def _read_next(self) -> None:
        """After a read: the keys queued meanwhile leave together, from a task of their own."""
        if self._read_queue:
            self._reader = asyncio.get_running_loop().create_task(self._read_queued())
        else:
            self._reading = False

    async def _read_queued(self) -> None:
        queue = self._read_queue
        batch: list[_Read] = []
        try:
            while queue:
                batch = [queue.popleft() for _ in range(min(len(queue), self.settings.redis_batch))]
                self._answer(batch, await self._read([key for key, _, _ in batch], batch[0][2]))
                batch = []
        finally:  # also when cancelled (the loop is closing): no caller waits forever
            self._answer([*batch, *queue], itertools.repeat(None))
            queue.clear()
            self._reading = False

    async def _read(self, keys: list[bytes], since: float) -> list[Outputs | None]:
        """One GET or MGET, each entry decoded, counted and promoted; a failure is a miss for each."""
        sent_while_down = self._breaker.down
        try:
            # From the oldest key's arrival, so no request waits on Redis past the timeout.
            async with asyncio.timeout_at(since + self._timeout):
                if len(keys) == 1:
                    values = [await self.redis.get(self._prefix + keys[0])]
                else:
                    values = await self.redis.mget([self._prefix + key for key in keys])
        except Exception as exc:  # noqa: BLE001 - any Redis trouble is a miss, never a failed request
            self._failed(exc, len(keys))  # every waiter computes; the breaker sees one failure
            # The keys queued meanwhile were let in before the failure: they skip Redis like later ones.
            self.stats.redis_bypassed += len(self._read_queue)
            self._answer(list(self._read_queue), itertools.repeat(None))
            self._read_queue.clear()
            return [None] * len(keys)
        self._breaker.succeeded(sent_while_down)
        return [self._entry(key, raw) for key, raw in zip(keys, values)]

    def _answer(self, batch: list[_Read], answers: Iterable[Outputs | None]) -> None:
        self._reads -= len(batch)
        for (_, waiter, _), outputs in zip(batch, answers):
            if not waiter.done():  # a caller of `get` may have gone away
                waiter.set_result(outputs)

    def _entry(self, key: bytes, raw: bytes | None) -> Outputs | None:
        if raw is None:
            self.stats.redis_misses += 1
            return None
        try:
            outputs = decode_outputs(raw)
        except ValueError as exc:
            self.stats.redis_corrupt += 1
            log.warning("ignoring Redis cache entry %r: %s", self._prefix + key, exc)
            return None
        self.stats.redis_hits += 1
        self._promote(key, outputs)
        return outputs

    def schedule_write(self, key: bytes, outputs: Outputs) -> None:
        """Queue for the one writer task: one connection, and a burst leaves as one script call."""
        if self.pending_writes >= self.settings.max_pending_writes:
            self.stats.writes_skipped += 1
            return
        if not self._usable():
            return
        self._write_queue.append((key, outputs))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_all())

    async def _write_all(self) -> None:
        sent_while_down = self._breaker.down
        queue = self._write_queue
        while queue:
            batch = [queue.popleft() for _ in range(min(len(queue), self.settings.redis_batch))]
            self._writing = len(batch)
            try:
                keys = [self._prefix + key for key, _ in batch]
                values = [encode_outputs(outputs) for _, outputs in batch]
                async with asyncio.timeout(self._timeout):
                    await self._write_script(keys=keys, args=[self.settings.redis_ttl_s, *values])
            except Exception as exc:  # noqa: BLE001 - a lost write only costs a future miss
                self._failed(exc)
                self.stats.writes_skipped += len(batch) + len(self._write_queue)
                self._write_queue.clear()
            else:
                self._breaker.succeeded(sent_while_down)
                self.stats.redis_writes += len(batch)
            finally:
                self._writing = 0

    def _usable(self) -> bool:
        if self.redis is None:
            return False
        if not self._breaker.attempt():
            self.stats.redis_bypassed += 1
            return False
        return True

    def _failed(self, exc: Exception, calls: int = 1) -> None:
        self.stats.redis_errors += calls
        self._breaker.failed(exc, self.settings.redis_timeout_ms)
