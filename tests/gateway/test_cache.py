"""The prediction cache against a real Redis: the shared one, and our own that we stop mid-test."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
import uuid
from collections.abc import AsyncIterator

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis

from frontends.oip_codec import to_array
from gateway.cache import CacheSettings, PredictionCache, cache_key, version_token
from gateway.cache.wire import decode_outputs, encode_outputs
from runners.rows import NamedRows
from tests.helpers import FakeClock

SHARED_REDIS = "redis://127.0.0.1:6379/0"
# For tests not about time: a Redis call on a loaded machine may take far longer than the default 20 ms.
PATIENT_MS = 1000


def outputs_for(value: float, n: int = 4) -> dict[str, np.ndarray]:
    return {"probabilities": np.full((1, n), value, np.float32), "label": np.array([int(value)], np.int64)}


def key(i: int, model: str = "digits", token: str = "v1#1") -> bytes:
    return cache_key(model, token, np.array([[float(i)]], np.float32))


def read_calls(admin: redis.Redis) -> dict[str, tuple[int, int]]:
    """GET and MGET as Redis counted them: command -> (calls, calls refused), from INFO commandstats."""
    stats = admin.info("commandstats")
    return {
        command: (entry.get("calls", 0), entry.get("rejected_calls", 0))
        for command in ("get", "mget")
        for entry in [stats.get(f"cmdstat_{command}", {})]
    }


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name, arr in a.items():
        assert arr.dtype == b[name].dtype and arr.shape == b[name].shape
        np.testing.assert_array_equal(arr, b[name])


class Computations:
    """A compute callable that counts its calls and can be held until the test releases it."""

    def __init__(self, result: dict[str, np.ndarray] | None = None, error: Exception | None = None) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.result = result or outputs_for(7.0)
        self.error = error

    async def __call__(self) -> dict[str, np.ndarray]:
        self.calls += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def prefix() -> str:
    return f"rtserve-test:cache:{uuid.uuid4().hex}:"


@pytest.fixture
async def shared_redis(prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(SHARED_REDIS)
    try:
        yield client
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


# -- keys and serialization


def test_keys_are_canonical_input_bytes_not_json_text():
    as_floats = to_array([[1.0, 2.0, 3.0]], "FP32", "x")
    as_ints = to_array([[1, 2, 3]], "FP32", "x")
    assert cache_key("digits", "v1#3", as_floats) == cache_key("digits", "v1#3", as_ints)
    strided = np.array([[1.0, 0.0, 2.0, 0.0, 3.0, 0.0]], np.float32)[:, ::2]
    assert cache_key("digits", "v1#3", strided) == cache_key("digits", "v1#3", as_floats)
    square = np.arange(9, dtype=np.float32).reshape(3, 3)
    assert cache_key("digits", "v1#3", square.T) == cache_key("digits", "v1#3", np.ascontiguousarray(square.T))
    assert cache_key("digits", "v1#3", square.T) != cache_key("digits", "v1#3", square)
    big_endian = as_floats.astype(">f4")
    assert cache_key("digits", "v1#3", big_endian) == cache_key("digits", "v1#3", as_floats)

    base = cache_key("digits", "v1#3", as_floats)
    assert len({
        base,
        cache_key("digits", "v1#4", as_floats),  # a new generation of the same version
        cache_key("digits", "v2#3", as_floats),
        cache_key("iris", "v1#3", as_floats),
        cache_key("digits", "v1#3", as_floats.reshape(3, 1)),
        cache_key("digits", "v1#3", as_floats.astype(np.float64)),
        cache_key("digits", "v1#3", as_floats + 1),
    }) == 7
    assert version_token("v1", 3) == "v1#3"
    with pytest.raises(ValueError):
        cache_key("digits:v1", "3", as_floats)  # would be ambiguous with ("digits", "v1:3")
    with pytest.raises(TypeError):
        cache_key("digits", "v1#3", np.array([{"a": 1}], object))


def test_keys_of_strings_and_of_several_inputs():
    def strings(*items: str) -> np.ndarray:
        arr = np.empty(len(items), object)
        arr[:] = items
        return arr

    text = cache_key("topics", "v1#1", strings("ab", "c"))
    assert text == cache_key("topics", "v1#1", strings("ab", "c"))
    assert text == cache_key("topics", "v1#1", np.array([b"ab", b"c"], object))  # the same UTF-8 bytes
    assert len({text, cache_key("topics", "v1#1", strings("a", "bc")), cache_key("topics", "v1#1", strings("abc")),
                cache_key("topics", "v1#1", strings("ab", "c").reshape(1, 2))}) == 4
    x, scale = np.ones((2, 4), np.float32), np.ones((2, 1), np.float32)
    both = cache_key("two", "v1#1", NamedRows({"x": x, "scale": scale}))
    assert both == cache_key("two", "v1#1", NamedRows({"x": x.copy(), "scale": scale.copy()}))
    assert len({both, cache_key("two", "v1#1", NamedRows({"x": x, "scale": scale * 2})),
                cache_key("two", "v1#1", NamedRows({"y": x, "scale": scale}))}) == 3


def test_redis_format_round_trips_and_refuses_anything_else():
    outputs = {
        "p": np.arange(6, dtype=np.float16).reshape(2, 3),
        "flag": np.array(True),
        "empty": np.zeros((0, 4), np.int64),
        "strided": np.arange(12.0).reshape(3, 4)[:, ::2],
    }
    decoded = decode_outputs(encode_outputs(outputs))
    assert_same(decoded, outputs)
    assert not any(a.flags.writeable for a in decoded.values())

    blob = encode_outputs(outputs)
    for bad in (b"", b"garbage", blob[:-1], blob + b"\0", blob.replace(b"<f2", b"|O8"), b"RTC1\xff\xff\xff\xff[]"):
        with pytest.raises(ValueError):
            decode_outputs(bad)


def test_redis_format_keeps_strings_as_strings_only():
    labels = np.empty((2,), object)
    labels[:] = ["sport", "tech"]
    decoded = decode_outputs(encode_outputs({"label": labels, "p": np.ones((2, 3), np.float32)}))
    assert decoded["label"].dtype == object and decoded["label"].tolist() == ["sport", "tech"]
    assert not decoded["label"].flags.writeable
    blob = encode_outputs({"label": labels})
    for bad in (blob.replace(b'"tech"', b'12345 '), blob.replace(b'["sport","tech"]', b'["sport"]        '),
                blob.replace(b'"BYTES"', b'"|O8"  ')):
        with pytest.raises(ValueError):
            decode_outputs(bad)


# -- memory tier


async def test_lru_is_bounded_by_entries_and_evicts_least_recently_used():
    cache = PredictionCache(CacheSettings(max_entries=3))
    for i in range(3):
        await cache.put(key(i), outputs_for(i))
    assert await cache.get(key(0)) is not None  # 0 is now the most recently used
    await cache.put(key(3), outputs_for(3))
    assert len(cache) == 3
    assert await cache.get(key(1)) is None
    for i in (0, 2, 3):
        assert_same(await cache.get(key(i)), outputs_for(i))
    assert cache.stats.evictions == 1


async def test_lru_is_bounded_by_bytes():
    big = {"y": np.zeros(1000, np.float64)}  # 8,000 bytes plus overhead: two fit in 20,000, three do not
    cache = PredictionCache(CacheSettings(max_bytes=20_000))
    await cache.put(key(0), big)
    await cache.put(key(1), big)
    await cache.get(key(0))
    await cache.put(key(2), big)
    assert len(cache) == 2 and cache.memory_bytes <= 20_000
    assert await cache.get(key(1)) is None
    assert await cache.get(key(0)) is not None and await cache.get(key(2)) is not None

    await cache.put(key(3), {"y": np.zeros(5000, np.float64)})  # larger than the whole budget: not kept
    assert await cache.get(key(3)) is None and len(cache) == 2


async def test_cached_arrays_are_read_only_and_private():
    cache = PredictionCache(CacheSettings())
    batch = np.arange(8, dtype=np.float32).reshape(4, 2)
    mine = {"y": batch[1:2]}  # a slice of a batch, as the batcher hands out
    await cache.put(key(0), mine)
    mine["y"][0, 0] = -1.0  # the caller's array stays its own
    got = await cache.get(key(0))
    assert got["y"].tolist() == [[2.0, 3.0]]
    assert not got["y"].flags.writeable and got["y"].base is not batch
    with pytest.raises(ValueError):
        got["y"][0, 0] = 99.0
    got["extra"] = np.zeros(1)  # the returned dict is the caller's too
    assert set(await cache.get(key(0))) == {"y"}


async def test_drop_model_version_removes_only_that_version():
    cache = PredictionCache(CacheSettings())
    entries = [("digits", "v1#1"), ("digits", "v1#2"), ("digits", "v2#1"), ("digits", "v10#1"), ("iris", "v1#1")]
    for i, (model, token) in enumerate(entries):
        await cache.put(key(i, model, token), outputs_for(i))
    before = cache.memory_bytes
    assert cache.drop_model_version("digits", "v1") == 2
    assert len(cache) == 3 and cache.memory_bytes < before
    assert [await cache.get(key(i, m, t)) is not None for i, (m, t) in enumerate(entries)] == [False, False, True, True, True]
    assert cache.drop_model_version("digits", "v2#1") == 1  # one exact generation
    assert cache.drop_model_version("digits", "v1") == 0


async def test_disabled_cache_always_computes():
    cache = PredictionCache(CacheSettings(enabled=False))
    compute = Computations()
    compute.release.set()
    await cache.put(key(0), outputs_for(1))
    assert await cache.get(key(0)) is None
    assert (await cache.get_or_compute(key(0), compute))[1] is False
    assert (await cache.get_or_compute(key(0), compute))[1] is False
    assert compute.calls == 2 and len(cache) == 0


# -- single flight


async def test_concurrent_identical_misses_share_one_computation():
    cache = PredictionCache(CacheSettings())
    compute = Computations()
    waiters = [asyncio.create_task(cache.get_or_compute(key(0), compute)) for _ in range(20)]
    await asyncio.sleep(0.01)
    assert compute.calls == 1 and not any(w.done() for w in waiters)
    compute.release.set()
    results = await asyncio.gather(*waiters)
    assert compute.calls == 1
    for outputs, hit in results:
        assert hit is False
        assert_same(outputs, compute.result)
    assert cache.stats.coalesced == 19
    outputs, hit = await cache.get_or_compute(key(0), compute)
    assert hit is True and compute.calls == 1


async def test_a_failed_computation_reaches_every_waiter_and_caches_nothing():
    cache = PredictionCache(CacheSettings())
    compute = Computations(error=RuntimeError("model exploded"))
    waiters = [asyncio.create_task(cache.get_or_compute(key(0), compute)) for _ in range(20)]
    await asyncio.sleep(0.01)
    compute.release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert compute.calls == 1
    assert all(isinstance(r, RuntimeError) and str(r) == "model exploded" for r in results)
    assert len(cache) == 0 and await cache.get(key(0)) is None

    compute.error = None
    assert (await cache.get_or_compute(key(0), compute))[1] is False
    assert compute.calls == 2


async def test_a_cancelled_caller_does_not_fail_the_others():
    cache = PredictionCache(CacheSettings())
    compute = Computations()
    first = asyncio.create_task(cache.get_or_compute(key(0), compute))
    await asyncio.sleep(0)
    second = asyncio.create_task(cache.get_or_compute(key(0), compute))
    await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.sleep(0)
    compute.release.set()
    outputs, hit = await second
    assert_same(outputs, compute.result)
    assert hit is False and first.cancelled()
    assert compute.calls == 1 and len(cache) == 1


# -- Redis tier


async def test_workers_share_entries_through_redis(shared_redis, prefix):
    settings = CacheSettings(key_prefix=prefix, redis_timeout_ms=PATIENT_MS, redis_ttl_s=120)
    first, second = PredictionCache(settings, shared_redis), PredictionCache(settings, shared_redis)
    compute = Computations()
    compute.release.set()
    outputs, hit = await first.get_or_compute(key(0), compute)
    assert hit is False and compute.calls == 1
    await first.flush()
    assert 0 < await shared_redis.ttl(prefix.encode() + key(0)) <= 120

    outputs, hit = await second.get_or_compute(key(0), compute)
    assert hit is True and compute.calls == 1
    assert_same(outputs, compute.result)
    assert not any(a.flags.writeable for a in outputs.values())
    assert (second.stats.memory_misses, second.stats.redis_hits) == (1, 1)
    assert await second.get(key(0)) is not None  # promoted into its LRU
    assert second.stats.memory_hits == 1 and second.stats.redis_hits == 1
    assert await second.get(key(1)) is None and second.stats.redis_misses == 1
    assert second.stats.by_tier() == {"memory": (1, 2), "redis": (1, 1)}


async def test_versions_not_worth_sharing_stay_in_memory(shared_redis, prefix):
    cache = PredictionCache(CacheSettings(key_prefix=prefix, redis_timeout_ms=PATIENT_MS, redis_min_cost_ms=0.5), shared_redis)
    assert cache.worth_sharing(None) and cache.worth_sharing(0.0005) and not cache.worth_sharing(0.0001)
    compute = Computations()
    compute.release.set()
    await cache.get_or_compute(key(0), compute, shared=False)
    await cache.put(key(1), outputs_for(1), shared=False)
    await cache.flush()
    assert not [k async for k in shared_redis.scan_iter(match=f"{prefix}*")]
    assert cache.stats.redis_not_worth == 1 and cache.stats.redis_misses == 0
    assert (await cache.get_or_compute(key(0), compute, shared=False))[1] is True  # still cached in memory
    assert compute.calls == 1


async def test_a_corrupt_redis_entry_is_a_miss(shared_redis, prefix):
    cache = PredictionCache(CacheSettings(key_prefix=prefix, redis_timeout_ms=PATIENT_MS), shared_redis)
    await shared_redis.set(prefix.encode() + key(0), b"not a cache entry", ex=60)
    assert await cache.get(key(0)) is None
    assert cache.stats.redis_corrupt == 1 and cache.stats.redis_errors == 0


async def test_pending_redis_writes_are_bounded(shared_redis, prefix):
    cache = PredictionCache(CacheSettings(key_prefix=prefix, redis_timeout_ms=PATIENT_MS, max_pending_writes=4), shared_redis)
    for i in range(10):  # no await in between: none of the writes can have finished
        await cache.put(key(i), outputs_for(i))
    assert cache.pending_writes == 4 and cache.stats.writes_skipped == 6
    await cache.flush()
    assert cache.pending_writes == 0 and cache.stats.redis_writes == 4
    assert len([k async for k in shared_redis.scan_iter(match=f"{prefix}*")]) == 4
    assert len(cache) == 10


async def test_redis_traffic_never_exhausts_a_small_shared_pool(prefix, shared_redis):
    client = aioredis.Redis.from_url(SHARED_REDIS, max_connections=3)
    cache = PredictionCache(CacheSettings(key_prefix=prefix, redis_timeout_ms=PATIENT_MS, max_pending_reads=2), client)
    try:
        for i in range(100):  # one writer, pipelined: a single connection however large the burst
            await cache.put(key(i), outputs_for(i))
        await cache.flush()
        assert cache.stats.redis_writes == 100

        cold = PredictionCache(CacheSettings(key_prefix=prefix, redis_timeout_ms=PATIENT_MS, max_pending_reads=2), client)
        results = await asyncio.gather(*(cold.get(key(i)) for i in range(5)))
        assert [r is not None for r in results] == [True, True, False, False, False]  # two reads pending at most
        assert (cold.stats.redis_hits, cold.stats.redis_bypassed) == (2, 3)
        assert cache.stats.redis_errors == cold.stats.redis_errors == 0
    finally:
        await client.aclose()


async def test_concurrent_misses_share_a_few_round_trips(own_redis, prefix):
    """200 misses at once cost three reads (one at once, then two MGETs of at most 128); each gets its own value."""
    client = aioredis.Redis.from_url(own_redis.url)
    admin = redis.Redis(port=own_redis.port)
    settings = CacheSettings(key_prefix=prefix, redis_timeout_ms=PATIENT_MS)
    try:
        writer = PredictionCache(settings, client)
        for i in range(0, 200, 2):  # even keys are in Redis, odd ones nowhere
            await writer.put(key(i), outputs_for(i))
        await writer.flush()
        assert writer.stats.redis_writes == 100

        cache = PredictionCache(settings, client)
        computed = {}

        def compute(i: int) -> Computations:
            computed[i] = Computations(outputs_for(1000 + i))
            computed[i].release.set()
            return computed[i]

        before = read_calls(admin)
        results = await asyncio.gather(*(cache.get_or_compute(key(i), compute(i)) for i in range(200)))
        after = read_calls(admin)
        assert (after["get"][0] - before["get"][0], after["mget"][0] - before["mget"][0]) == (1, 2)
        for i, (outputs, hit) in enumerate(results):
            assert hit is (i % 2 == 0), i
            assert_same(outputs, outputs_for(i if hit else 1000 + i))
            assert computed[i].calls == (0 if hit else 1)
        assert (cache.stats.redis_hits, cache.stats.redis_misses, cache.stats.computes) == (100, 100, 100)
        assert cache.stats.redis_errors == cache.stats.redis_bypassed == 0

        results = await asyncio.gather(*(cache.get(key(i)) for i in range(200, 210)))  # plain gets share them too
        assert results == [None] * 10 and read_calls(admin)["mget"][0] - after["mget"][0] == 1
        assert_same(await cache.get(key(0)), outputs_for(0))  # promoted: no read at all
        assert read_calls(admin)["get"][0] - after["get"][0] == 1
    finally:
        admin.close()
        await client.aclose()


async def test_a_failed_batched_read_is_one_failure_and_a_miss_for_each_key(own_redis, prefix, caplog):
    """An MGET that Redis refuses: its keys all compute, the breaker counts one failure and logs it once,
    and the keys queued behind it skip Redis like the misses that follow."""
    caplog.set_level(logging.WARNING, logger="core.redis_breaker")
    admin = redis.Redis(port=own_redis.port)
    admin.execute_command("ACL", "SETUSER", "cache", "on", ">secret", "~*", "+@all", "-mget")  # GET works, MGET fails
    client = aioredis.Redis.from_url(f"redis://cache:secret@127.0.0.1:{own_redis.port}/0")
    settings = CacheSettings(key_prefix=prefix, redis_timeout_ms=PATIENT_MS, redis_batch=4, redis_backoff_s=5.0)
    cache = PredictionCache(settings, client)
    try:
        before = read_calls(admin)
        assert await asyncio.gather(*(cache.get(key(i)) for i in range(11))) == [None] * 11
        after = read_calls(admin)
        assert after["get"][0] - before["get"][0] == 1  # the first key, alone and at once
        assert after["mget"][1] - before["mget"][1] == 1  # the next four, refused in one call
        assert cache.stats.redis_misses == 1
        assert cache.stats.redis_errors == 4 and cache.stats.redis_bypassed == 6  # the last six never left
        outages = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(outages) == 1 and "NoPermissionError" in outages[0]

        assert await cache.get(key(99)) is None  # backing off: not tried
        assert cache.stats.redis_bypassed == 7 and read_calls(admin) == after
    finally:
        admin.close()
        await client.aclose()


async def test_reads_queued_behind_a_slow_redis_wait_no_longer_than_the_timeout(own_redis, prefix):
    client = aioredis.Redis.from_url(own_redis.url)
    admin = redis.Redis(port=own_redis.port)
    cache = PredictionCache(CacheSettings(key_prefix=prefix, redis_timeout_ms=50, redis_backoff_s=5.0), client)
    try:
        await client.ping()  # connected before the 50 ms matter
        assert await cache.get(key(0)) is None
        admin.execute_command("CLIENT", "PAUSE", 1000, "ALL")
        start = time.perf_counter()
        assert await asyncio.gather(*(cache.get(key(i)) for i in range(1, 21))) == [None] * 20
        assert time.perf_counter() - start < 0.25
        assert (cache.stats.redis_errors, cache.stats.redis_bypassed) == (1, 19)  # the read in flight timed out
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()
        await client.aclose()


def _other_process(prefix: str, results: multiprocessing.Queue) -> None:
    """A second worker process: reads what the parent wrote, then writes its own entry."""

    async def main() -> None:
        client = aioredis.Redis.from_url(SHARED_REDIS)
        cache = PredictionCache(CacheSettings(key_prefix=prefix, redis_timeout_ms=PATIENT_MS), client)
        got = await cache.get(key(0))
        computed = Computations(outputs_for(42.0))
        computed.release.set()
        _, hit = await cache.get_or_compute(key(1), computed)
        await cache.flush()
        await client.aclose()
        results.put((None if got is None else {k: v.tolist() for k, v in got.items()}, cache.stats.redis_hits, hit))

    asyncio.run(main())


async def test_processes_share_entries_through_redis(shared_redis, prefix):
    cache = PredictionCache(CacheSettings(key_prefix=prefix, redis_timeout_ms=PATIENT_MS), shared_redis)
    await cache.put(key(0), outputs_for(5.0))
    await cache.flush()
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    child = ctx.Process(target=_other_process, args=(prefix, results))
    child.start()
    try:
        got, child_redis_hits, child_hit = await asyncio.to_thread(results.get, timeout=20)
    finally:
        child.join(timeout=10)
    assert child.exitcode == 0
    assert got == {k: v.tolist() for k, v in outputs_for(5.0).items()} and child_redis_hits == 1
    assert child_hit is False
    assert_same(await cache.get(key(1)), outputs_for(42.0))
    assert cache.stats.redis_hits == 1


async def test_redis_outage_is_bypassed_then_recovered(own_redis, prefix, caplog):
    """The back-off runs on a clock the test steps, so no step waits for it to pass."""
    caplog.set_level(logging.WARNING, logger="core.redis_breaker")
    client = aioredis.Redis.from_url(own_redis.url)
    await client.ping()  # connected before the timeout matters
    clock = FakeClock()
    settings = CacheSettings(key_prefix=prefix, redis_backoff_s=1.0, redis_timeout_ms=PATIENT_MS)  # a stopped Redis refuses at once
    cache = PredictionCache(settings, client, clock=clock)
    try:
        await cache.put(key(0), outputs_for(1.0))
        await cache.flush()
        assert cache.stats.redis_writes == 1

        own_redis.stop()
        compute = Computations()
        compute.release.set()
        slowest = 0.0
        for i in range(50):
            start = time.perf_counter()
            assert_same(await cache.get(key(0)), outputs_for(1.0))  # memory still answers
            assert await cache.get(key(100 + i)) is None
            _, hit = await cache.get_or_compute(key(200 + i), compute)
            await cache.put(key(300 + i), outputs_for(2.0))
            slowest = max(slowest, time.perf_counter() - start)
            assert hit is False
        await cache.flush()
        assert slowest < 0.2, f"a call took {slowest * 1000:.0f} ms during the outage"
        assert compute.calls == 50
        assert cache.stats.redis_errors == 1  # one failed try, then bypassing for the back-off
        assert cache.stats.redis_bypassed >= 149
        assert_same(await cache.get(key(300)), outputs_for(2.0))
        outages = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(outages) == 1 and outages[0].levelno == logging.WARNING

        clock.advance(1.05)  # back-off over, still down: one caller probes, the others keep bypassing
        start = time.perf_counter()
        assert await asyncio.gather(*(cache.get(key(500 + i)) for i in range(10))) == [None] * 10
        assert time.perf_counter() - start < 0.2
        assert cache.stats.redis_errors == 2
        assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1

        own_redis.start()  # same port, empty
        assert await cache.get(key(998)) is None and cache.stats.redis_errors == 2  # still backing off: not tried
        clock.advance(1.05)
        assert await cache.get(key(999)) is None
        assert cache.stats.redis_misses >= 1
        recovered = [r.getMessage() for r in caplog.records if "recovered" in r.getMessage()]
        assert len(recovered) == 1 and recovered[0].startswith("prediction cache: Redis answers again")
        await cache.put(key(1000), outputs_for(3.0))
        await cache.flush()
        assert await client.exists(prefix.encode() + key(1000)) == 1
    finally:
        await client.aclose()


async def test_a_slow_redis_times_out_quickly(own_redis, prefix, caplog):
    caplog.set_level(logging.WARNING, logger="core.redis_breaker")
    client = aioredis.Redis.from_url(own_redis.url)
    admin = redis.Redis(port=own_redis.port)
    clock = FakeClock()
    cache = PredictionCache(CacheSettings(key_prefix=prefix, redis_timeout_ms=20, redis_backoff_s=0.3), client, clock=clock)
    try:
        await client.ping()  # connected before the 20 ms matter
        assert await cache.get(key(0)) is None  # plain miss
        admin.execute_command("CLIENT", "PAUSE", 500, "ALL")
        start = time.perf_counter()
        assert await cache.get(key(0)) is None
        assert time.perf_counter() - start < 0.1
        assert cache.stats.redis_errors == 1
        assert any("no answer within" in r.getMessage() for r in caplog.records)
        admin.execute_command("CLIENT", "UNPAUSE")
        clock.advance(0.35)  # the back-off is over
        await cache.put(key(1), outputs_for(1.0))
        await cache.flush()
        assert cache.stats.redis_writes == 1 and await client.exists(prefix.encode() + key(1)) == 1
    finally:
        admin.close()
        await client.aclose()
