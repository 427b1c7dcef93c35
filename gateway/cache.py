"""The two-tier prediction cache: an in-process LRU in front of a shared Redis.

A hit in the LRU costs a dict lookup, so a repeated request never reaches the batcher.
Redis shares answers between workers and replicas; it is an optimisation, never a
dependency: when it is down or slow the cache answers from memory, treats the rest as
misses, and leaves Redis alone for a second before trying it again.

Redis round trips are shared, so they cost a request little: a miss's key is read at once
when no read is in flight, and the keys that miss meanwhile leave together as one MGET when
it returns; one writer task sends each burst of new entries as one script call. Under load
one round trip serves many requests; when idle, none waits for another's. Versions cheaper
to run than a round trip (`redis_min_cost_ms`, judged from the batcher's learned cost) skip
Redis altogether and keep to the LRU.

Keys are `model:version_token:hash(input)`. The version token is the resolved version plus
its load generation (`version_token("v1", 3) == "v1#3"`), so a reloaded or replaced version
never reads entries of the one before it, in memory or in Redis; `drop_model_version` frees
the memory at once, while old Redis entries become unreachable and expire by their TTL.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import logging
import math
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import orjson
import redis.asyncio as aioredis
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import DeadlineExceeded
from core.redis_breaker import RedisBreaker

T = TypeVar("T")
log = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]
_Read = tuple[bytes, asyncio.Future[Outputs | None], float]  # key, its waiter, when it queued

_SEP = ":"
_DIGEST_HEX = 32  # blake2b, 16 bytes, as hex
_ENTRY_OVERHEAD = 256  # dict slot, tuple, array headers: rough, so tiny entries still count
_MAGIC = b"RTC1"
# Plain numbers only (never object arrays from a shared store), looked up rather than parsed.
_SAFE_DTYPES = {d.str: d for d in map(np.dtype, "?bBhHiIlLqQefd")}
# One command for a burst of writes: a pipeline costs the client a packed command and a parsed
# reply per entry, several times the cost of the same SETs as one script call.
_WRITE_LUA = """
local ttl = ARGV[1]
for i, key in ipairs(KEYS) do
    redis.call('SET', key, ARGV[i + 1], 'EX', ttl)
end
return #KEYS
"""


class CacheSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTSERVE_CACHE_")

    enabled: bool = True
    """Off: every request runs the model (e.g. for models whose output is not a function of the input)."""
    max_entries: int = 10_000
    """Most entries in the in-process LRU of each worker."""
    max_bytes: int = 64 * 1024 * 1024
    """Most bytes (outputs plus a per-entry overhead) in the in-process LRU of each worker."""
    redis_ttl_s: int = 300
    """Lifetime of an entry in Redis; it also bounds how long entries of an unloaded version linger."""
    redis_timeout_ms: float = 20
    """Longest wait for one Redis read (queued or sent) or write; past it the cache answers without Redis."""
    redis_backoff_s: float = 1.0
    """After a Redis error, how long to leave Redis alone, so an outage costs no per-request timeouts."""
    max_pending_reads: int = 256
    """Redis reads in flight or queued per worker (queued ones leave as one MGET); past it a miss skips Redis."""
    max_pending_writes: int = 256
    """Redis writes waiting per worker (one writer batches them); more are skipped, so a slow Redis costs no memory."""
    redis_batch: int = 128
    """Most keys in one Redis read (MGET) or write (script call); the rest leave with the next."""
    redis_min_cost_ms: float = 0.5
    """Versions whose requests are expected to cost less than this keep to the in-process tier: running
    them again is cheaper than a Redis round trip and its client's CPU on the event loop. 0 shares all."""
    key_prefix: str = "rtserve:cache:"
    """Prefix of every Redis key of the cache."""


@dataclass(slots=True)
class CacheStats:
    """Counters the metrics layer reads; plain ints so the hot path pays nothing for them."""

    memory_hits: int = 0
    memory_misses: int = 0
    redis_hits: int = 0
    redis_misses: int = 0
    redis_errors: int = 0
    redis_bypassed: int = 0  # reads and writes not attempted: no Redis, or backing off after an error
    redis_not_worth: int = 0  # misses of versions cheaper to run than a Redis round trip
    redis_corrupt: int = 0
    redis_writes: int = 0
    writes_skipped: int = 0
    evictions: int = 0
    computes: int = 0
    coalesced: int = 0  # misses that joined a computation already in flight

    def by_tier(self) -> dict[str, tuple[int, int]]:
        """tier -> (hits, misses), as the metrics layer labels them."""
        return {"memory": (self.memory_hits, self.memory_misses), "redis": (self.redis_hits, self.redis_misses)}


def version_token(version: str, generation: int) -> str:
    """The version part of a key: a reload bumps the generation, so old entries are never read."""
    return f"{version}#{generation}"


def cache_key(model: str, version_token: str, arr: np.ndarray) -> bytes:
    """Key of one input: canonical bytes (dtype, shape, C-order data), never the request's JSON text."""
    if _SEP in model or _SEP in version_token:
        raise ValueError(f"model {model!r} and version token {version_token!r} must not contain {_SEP!r}")
    if arr.dtype.hasobject:
        raise TypeError("object arrays have no canonical bytes")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    h = hashlib.blake2b(digest_size=16)
    h.update(arr.dtype.str.encode())
    h.update(orjson.dumps(arr.shape))
    h.update(np.asarray(arr, order="C"))
    return f"{model}{_SEP}{version_token}{_SEP}{h.hexdigest()}".encode()


def encode_outputs(outputs: Outputs) -> bytes:
    """Magic, header length, orjson header [[name, dtype, shape], ...], then each array's raw bytes."""
    arrays = [np.asarray(a, order="C") for a in outputs.values()]
    header = orjson.dumps([[n, a.dtype.str, a.shape] for n, a in zip(outputs, arrays)])
    return b"".join([_MAGIC, len(header).to_bytes(4, "little"), header, *(a.tobytes() for a in arrays)])


def decode_outputs(raw: bytes) -> Outputs:
    """Inverse of `encode_outputs`; refuses anything but plain numeric arrays that exactly fill `raw`."""
    try:
        if raw[:4] != _MAGIC:
            raise ValueError("not a cache entry")
        offset = 8 + int.from_bytes(raw[4:8], "little")
        outputs: Outputs = {}
        for name, dtype_str, shape in orjson.loads(raw[8:offset]):
            dtype = _SAFE_DTYPES.get(dtype_str)
            if dtype is None or not all(isinstance(d, int) and d >= 0 for d in shape):
                raise ValueError(f"unsafe tensor {name!r}: {dtype_str} {shape}")
            count = math.prod(shape)
            end = offset + count * dtype.itemsize
            if end > len(raw):
                raise ValueError("truncated")
            arr = np.frombuffer(raw, dtype, count, offset) if count else np.empty(0, dtype)
            arr = arr.reshape(shape)
            arr.flags.writeable = False
            outputs[str(name)] = arr
            offset = end
        if offset != len(raw):
            raise ValueError("trailing bytes")
        return outputs
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"corrupt cache entry: {exc}") from None


def _frozen_copy(outputs: Outputs) -> tuple[Outputs, int] | None:
    """Private read-only copies (a batch slice would pin the whole batch); None if not cacheable."""
    frozen: Outputs = {}
    nbytes = _ENTRY_OVERHEAD
    for name, arr in outputs.items():
        if arr.dtype.hasobject:
            return None
        copy = np.array(arr, order="C")
        copy.flags.writeable = False
        frozen[name] = copy
        nbytes += copy.nbytes
    return frozen, nbytes


class PredictionCache:
    """One per worker and event loop (no locks: the loop serialises it).

    `redis` must return bytes (decode_responses=False); None means memory only. The cache uses
    at most two of its pool's connections: one for the read in flight, one for the writer.
    """

    def __init__(self, settings: CacheSettings, redis: aioredis.Redis | None = None) -> None:
        if redis is not None and redis.get_connection_kwargs().get("decode_responses"):
            raise ValueError("the cache's Redis client must not decode responses")
        self.settings = settings
        self.redis = redis
        self.stats = CacheStats()
        self._prefix = settings.key_prefix.encode()
        self._timeout = settings.redis_timeout_ms / 1000.0
        self._lru: OrderedDict[bytes, tuple[Outputs, int]] = OrderedDict()
        self._groups: dict[bytes, set[bytes]] = {}  # b"model:token:" -> its keys, for drop_model_version
        self._bytes = 0
        self._inflight: dict[bytes, asyncio.Task[tuple[Outputs, bool]]] = {}
        self._write_queue: deque[tuple[bytes, Outputs]] = deque()
        self._writing = 0  # entries in the write being sent
        self._writer: asyncio.Task[None] | None = None
        self._write_script = redis.register_script(_WRITE_LUA) if redis is not None else None
        self._read_queue: deque[_Read] = deque()
        self._reads = 0  # keys being read or queued for the next read
        self._reading = False  # a read in flight: a miss queues for the next one
        self._reader: asyncio.Task[None] | None = None
        self._breaker = RedisBreaker("prediction cache", settings.redis_backoff_s, "serving from memory only")

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def memory_bytes(self) -> int:
        return self._bytes

    @property
    def pending_writes(self) -> int:
        return len(self._write_queue) + self._writing

    async def get(self, key: bytes) -> Outputs | None:
        """The LRU, then Redis; a Redis hit is promoted into the LRU."""
        if not self.settings.enabled:
            return None
        entry = self._lru.get(key)
        if entry is not None:
            self._lru.move_to_end(key)
            self.stats.memory_hits += 1
            return dict(entry[0])
        self.stats.memory_misses += 1
        outputs = await self._redis_get(key)
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
        as its own task, and each caller waits for it until its own `deadline` (loop time), so
        one caller's deadline or departure never fails the others. If it raises, every waiter gets
        the error and nothing is cached. `shared` False keeps the key out of Redis (see `worth_sharing`).
        """
        if not self.settings.enabled:
            self.stats.computes += 1
            return await _until(deadline, compute()), False
        entry = self._lru.get(key)
        if entry is not None:
            self._lru.move_to_end(key)
            self.stats.memory_hits += 1
            return dict(entry[0]), True
        self.stats.memory_misses += 1
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fill(key, compute, shared))
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._filled, key))
        else:
            self.stats.coalesced += 1
        outputs, hit = await _until(deadline, asyncio.shield(task))
        return dict(outputs), hit

    def drop_model_version(self, model: str, version: str) -> int:
        """Free the LRU entries of every generation of `version` (or of one exact token); returns how many."""
        base = f"{model}{_SEP}{version}".encode()
        exact, generations = base + _SEP.encode(), base + b"#"
        removed = 0
        for group in [g for g in self._groups if g == exact or g.startswith(generations)]:
            for key in self._groups.pop(group):
                _, nbytes = self._lru.pop(key)
                self._bytes -= nbytes
                removed += 1
        return removed

    async def flush(self) -> None:
        """Wait for the Redis writes in flight (shutdown, tests)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.gather(self._writer, return_exceptions=True)

    # -- memory tier

    def _store(self, key: bytes, outputs: Outputs, shared: bool) -> Outputs:
        frozen = _frozen_copy(outputs)
        if frozen is None:
            return outputs
        self._remember(key, *frozen)
        if shared:
            self._schedule_write(key, frozen[0])
        return frozen[0]

    def _remember(self, key: bytes, outputs: Outputs, nbytes: int) -> None:
        nbytes += len(key)
        if nbytes > self.settings.max_bytes:
            return
        old = self._lru.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        else:
            self._groups.setdefault(key[:-_DIGEST_HEX], set()).add(key)
        self._lru[key] = (outputs, nbytes)
        self._bytes += nbytes
        while len(self._lru) > self.settings.max_entries or self._bytes > self.settings.max_bytes:
            old_key, (_, old_bytes) = self._lru.popitem(last=False)
            self._bytes -= old_bytes
            group = old_key[:-_DIGEST_HEX]
            keys = self._groups[group]
            keys.discard(old_key)
            if not keys:
                del self._groups[group]
            self.stats.evictions += 1

    async def _fill(self, key: bytes, compute: Callable[[], Awaitable[Outputs]], shared: bool) -> tuple[Outputs, bool]:
        if shared:
            outputs = await self._redis_get(key)
            if outputs is not None:
                return outputs, True
        elif self.redis is not None:
            self.stats.redis_not_worth += 1
        self.stats.computes += 1
        return self._store(key, await compute(), shared), False

    def _filled(self, key: bytes, task: asyncio.Task) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]

    # -- Redis tier

    async def _redis_get(self, key: bytes) -> Outputs | None:
        """Read now if no read is in flight; else wait for the next read, which takes every key queued meanwhile."""
        if self._reads >= self.settings.max_pending_reads:
            self.stats.redis_bypassed += 1
            return None
        if not self._redis_usable():
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
            self._redis_failed(exc, len(keys))  # every waiter computes; the breaker sees one failure
            # The keys queued meanwhile were let in before the failure: they skip Redis like later ones.
            self.stats.redis_bypassed += len(self._read_queue)
            self._answer(list(self._read_queue), itertools.repeat(None))
            self._read_queue.clear()
            return [None] * len(keys)
        self._breaker.succeeded(sent_while_down)
        return [self._redis_entry(key, raw) for key, raw in zip(keys, values)]

    def _answer(self, batch: list[_Read], answers: Iterable[Outputs | None]) -> None:
        self._reads -= len(batch)
        for (_, waiter, _), outputs in zip(batch, answers):
            if not waiter.done():  # a caller of `get` may have gone away
                waiter.set_result(outputs)

    def _redis_entry(self, key: bytes, raw: bytes | None) -> Outputs | None:
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
        self._remember(key, outputs, _ENTRY_OVERHEAD + sum(a.nbytes for a in outputs.values()))
        return outputs

    def _schedule_write(self, key: bytes, outputs: Outputs) -> None:
        """Queue for the one writer task: one connection, and a burst leaves as one script call."""
        if self.pending_writes >= self.settings.max_pending_writes:
            self.stats.writes_skipped += 1
            return
        if not self._redis_usable():
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
                self._redis_failed(exc)
                self.stats.writes_skipped += len(batch) + len(self._write_queue)
                self._write_queue.clear()
            else:
                self._breaker.succeeded(sent_while_down)
                self.stats.redis_writes += len(batch)
            finally:
                self._writing = 0

    def _redis_usable(self) -> bool:
        if self.redis is None:
            return False
        if not self._breaker.attempt():
            self.stats.redis_bypassed += 1
            return False
        return True

    def _redis_failed(self, exc: Exception, calls: int = 1) -> None:
        self.stats.redis_errors += calls
        self._breaker.failed(exc, self.settings.redis_timeout_ms)


async def _until(deadline: float | None, work: Awaitable[T]) -> T:
    """`work`'s result, or 504 once the loop time passes `deadline`."""
    if deadline is None:
        return await work
    try:
        async with asyncio.timeout_at(deadline):
            return await work
    except TimeoutError:
        raise DeadlineExceeded("request deadline passed while its result was computed") from None
