"""Rate limits against the real Redis on 127.0.0.1:6379 (keys under a per-test prefix),
in-process, across two worker processes, and through a Redis outage on a Redis of our own;
leased blocks on a Redis of our own too, where `INFO commandstats` counts only our calls."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis as redis_sync
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from redis.asyncio import Redis

from core.errors import RateLimited, Unavailable
from gateway.ratelimit import GCRA_LUA, RateLimiter, RateLimitSettings, gcra
from tests.helpers import OwnRedis

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


@pytest.fixture
def prefix() -> str:
    return f"rtserve:test:rl:{uuid.uuid4().hex}:"


@pytest.fixture
async def redis(prefix: str) -> AsyncIterator[Redis]:
    client = Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=1.0)
    try:
        yield client
    finally:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture(params=["redis", "local"])
def limiter_for(request: pytest.FixtureRequest, prefix: str, redis: Redis):
    """Build a limiter on either backend; the same behaviour is expected of both."""

    def make(**overrides) -> RateLimiter:
        # A long Redis timeout: these tests are about the limits, not about a slow Redis.
        settings = RateLimitSettings(enabled=True, key_prefix=prefix, redis_timeout_ms=2000, **overrides)
        return RateLimiter(settings, redis if request.param == "redis" else None)

    return make


async def test_burst_then_refusal_with_headers(limiter_for) -> None:
    limiter = limiter_for(rate=0.5, burst=3)  # one request per 2 s, 3 at once
    first = await limiter.check("t1")
    assert first.allowed
    assert first.headers() == {"RateLimit-Limit": "3", "RateLimit-Remaining": "2", "RateLimit-Reset": "2"}
    assert [(await limiter.check("t1")).remaining for _ in range(2)] == [1, 0]

    refused = await limiter.check("t1")
    assert not refused.allowed
    assert 1.9 < refused.retry_after_s <= 2.0
    assert refused.headers() == {
        "RateLimit-Limit": "3",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "6",
        "Retry-After": "2",
    }
    with pytest.raises(RateLimited) as raised:
        await limiter.enforce("t1")
    assert raised.value.status == 429
    assert raised.value.headers["Retry-After"] == "2"
    assert (await limiter.enforce("t2")).allowed  # tenants have separate buckets
    assert limiter.stats.allowed["default"] == 4
    assert limiter.stats.limited["default"] == 2


async def test_refills_at_the_configured_rate(limiter_for) -> None:
    rate, burst = 20.0, 5
    limiter = limiter_for(rate=rate, burst=burst)
    start = time.monotonic()
    assert all([(await limiter.check("t")).allowed for _ in range(burst)])
    refused = await limiter.check("t")
    assert not refused.allowed and 0 < refused.retry_after_s <= 1 / rate

    refilled = 0
    while time.monotonic() - start < 0.6:
        refilled += (await limiter.check("t")).allowed
        await asyncio.sleep(0.002)
    expected = rate * (time.monotonic() - start)
    assert expected - 2 <= refilled <= expected + 1


async def test_named_tenants_get_their_tier(limiter_for) -> None:
    limiter = limiter_for(rate=1, burst=2, tiers={"gold": {"rate": 1, "burst": 8}}, tenants={"acme": "gold"})
    acme = [await limiter.check("acme") for _ in range(9)]
    other = [await limiter.check("other") for _ in range(3)]
    assert [d.allowed for d in acme] == [True] * 8 + [False]
    assert [d.allowed for d in other] == [True, True, False]
    assert acme[0].headers()["RateLimit-Limit"] == "8" and other[0].headers()["RateLimit-Limit"] == "2"
    assert limiter.tier_of("acme") == "gold" and limiter.tier_of("other") == "default"
    assert limiter.stats.limited == {"gold": 1, "default": 1}


def test_tiers_and_tenants_come_from_env_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTSERVE_RATELIMIT_ENABLED", "true")
    monkeypatch.setenv("RTSERVE_RATELIMIT_TIERS", '{"gold": {"rate": 5000, "burst": 10000}}')
    monkeypatch.setenv("RTSERVE_RATELIMIT_TENANTS", '{"acme": "gold", "solo": "default"}')
    monkeypatch.setenv("RTSERVE_RATELIMIT_FAIL_OPEN", "false")
    settings = RateLimitSettings()
    assert settings.enabled and not settings.fail_open
    assert settings.tiers["gold"].rate == 5000 and settings.tiers["gold"].burst == 10000
    assert settings.tenants == {"acme": "gold", "solo": "default"}

    monkeypatch.setenv("RTSERVE_RATELIMIT_TENANTS", '{"acme": "platinum"}')
    with pytest.raises(ValidationError, match="platinum"):
        RateLimitSettings()
    with pytest.raises(ValidationError, match="reserved"):
        RateLimitSettings(tenants={}, tiers={"default": {"rate": 1, "burst": 1}})


async def test_disabled_limiter_allows_everything_and_sends_no_headers() -> None:
    limiter = RateLimiter(RateLimitSettings(enabled=False, rate=1, burst=1), None)
    decisions = [await limiter.enforce("t") for _ in range(5)]
    assert all(d.allowed and d.headers() == {} for d in decisions)


async def test_in_process_state_forgets_idle_tenants() -> None:
    limiter = RateLimiter(RateLimitSettings(enabled=True, rate=1000, burst=1), None)  # bucket full after 1 ms
    for i in range(4096):
        await limiter.check(f"tenant-{i}")
    await asyncio.sleep(0.01)
    await limiter.check("one-more")
    assert len(limiter.local) < 100


@given(
    interval=st.integers(1, 1000),
    burst=st.integers(1, 20),
    gaps=st.lists(st.integers(0, 3000), min_size=1, max_size=60),
)
def test_gcra_never_exceeds_burst_plus_rate_over_any_window(interval: int, burst: int, gaps: list[int]) -> None:
    now, tat, passed = 0, 0, []
    for gap in gaps:
        now += gap
        allowed, new_tat, remaining, reset, retry = gcra(tat, now, interval, burst)
        if allowed:
            tat = new_tat
            passed.append(now)
            assert 0 <= remaining < burst and reset == tat - now and retry == 0
            # `remaining` is exact: that many more pass right now, and then one is refused.
            probe = tat
            for _ in range(remaining):
                ok, probe, *_ = gcra(probe, now, interval, burst)
                assert ok
            assert not gcra(probe, now, interval, burst)[0]
        else:
            # `retry_after` is exact: one tick earlier is still refused, at it the request passes.
            assert retry > 0 and remaining == 0
            assert not gcra(tat, now + retry - 1, interval, burst)[0]
            assert gcra(tat, now + retry, interval, burst)[0]
    for i, t0 in enumerate(passed):
        for j in range(i, len(passed)):
            assert j - i + 1 <= burst + (passed[j] - t0) // interval


def test_conforming_traffic_is_never_refused() -> None:
    tat = 0
    for now in range(0, 100_000, 100):  # exactly at the rate
        allowed, tat, *_ = gcra(tat, now, 100, 1)
        assert allowed


@given(
    interval=st.integers(1, 1000),
    burst=st.integers(1, 40),
    ahead=st.integers(-2000, 45_000),
    n=st.integers(1, 50),
)
def test_a_grant_of_n_is_n_single_steps_at_once(interval: int, burst: int, ahead: int, n: int) -> None:
    now = 1_000_000
    tat = now + ahead  # beyond interval * burst only after a tier's burst was lowered
    granted, new_tat, remaining, reset, retry = gcra(tat, now, interval, burst, n)
    probe, steps = tat, 0
    while steps < n:
        ok, after, *_ = gcra(probe, now, interval, burst)
        if not ok:
            break
        probe, steps = after, steps + 1
    assert granted == steps  # as many as fit, up to n
    if granted:
        assert (new_tat, reset, retry) == (probe, probe - now, 0)
        assert remaining == gcra(tat, now, interval, burst, 10**9)[0] - granted  # what an unbounded ask would add
    else:
        assert (new_tat, remaining, reset, retry) == gcra(tat, now, interval, burst)[1:]  # the single refusal


async def test_script_grants_what_fits_then_refuses(redis: Redis, prefix: str) -> None:
    script = redis.register_script(GCRA_LUA)
    key, second = prefix + "t", 1_000_000  # interval 1 s in microseconds, burst 10
    assert await script(keys=[key], args=[second, 10, 7]) == [7, 3, 7 * second, 0]
    granted, remaining, reset, retry = await script(keys=[key], args=[second, 10, 10])
    assert (granted, remaining, retry) == (3, 0, 0)  # asked 10 with 3 left: 3
    assert 9.9 * second < reset <= 10 * second
    granted, remaining, reset, retry = await script(keys=[key], args=[second, 10, 5])
    assert (granted, remaining) == (0, 0) and 0.9 * second < retry <= second
    assert 9.9 * second < reset <= 10 * second  # a refusal debits nothing


@pytest.fixture(scope="module")
def sync_redis() -> redis_sync.Redis:
    client = redis_sync.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=2.0)
    yield client
    client.close()


# One step: microseconds since the last (0 at the first), interval in microseconds, burst, tokens asked for.
_steps = st.lists(
    st.tuples(st.integers(0, 3_000_000), st.integers(1, 1_000_000), st.integers(1, 2000), st.integers(1, 100)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.integers(0, 2**52), steps=_steps)
def test_the_lua_script_and_the_python_step_agree(sync_redis: redis_sync.Redis, start: int, steps: list) -> None:
    """The script on a real Redis (EVALSHA, with `now` passed in) and `gcra` give the same answers, step by step.

    Interval and burst may change between steps, as when a tier is reconfigured. Redis expires
    the key in real time, which the steps' clock does not follow, so each step starts both from
    the TAT Redis holds, read in the same transaction as the script call.
    """
    script = sync_redis.register_script(GCRA_LUA)
    key = f"rtserve:test:rl:lua:{uuid.uuid4().hex}"
    now, tat = start, None
    try:
        for gap, interval, burst, n in steps:
            now += gap
            pipe = sync_redis.pipeline(transaction=True)
            pipe.get(key)
            script(keys=[key], args=[interval, burst, n, now], client=pipe)
            pipe.get(key)
            before, answer, after = pipe.execute()
            if before is not None:  # absent: expired in real time, or the first step
                assert int(before) == tat  # what Redis kept is what the Python step computed last
            tat = int(before) if before is not None else now
            granted, new_tat, remaining, reset, retry = gcra(tat, now, interval, burst, n)
            assert answer == [granted, remaining, reset, retry], (now, tat, interval, burst, n)
            if granted:
                tat = new_tat
                assert int(after) == new_tat
            else:
                assert after == before  # a refusal writes nothing
    finally:
        sync_redis.delete(key)


# --- leased blocks, counted on a Redis of our own ----------------------------------------


async def script_calls(client: Redis) -> int:
    stats = await client.info("commandstats")
    return sum(stats.get(f"cmdstat_{cmd}", {}).get("calls", 0) for cmd in ("evalsha", "eval"))


async def leasing_limiter(server: OwnRedis, **overrides) -> tuple[RateLimiter, Redis]:
    client = Redis(host="127.0.0.1", port=server.port)
    limiter = RateLimiter(RateLimitSettings(enabled=True, redis_timeout_ms=2000, **overrides), client)
    assert (await limiter.check("warm-up")).allowed  # loads the script (NOSCRIPT, then EVAL)
    return limiter, client


async def test_one_worker_leases_blocks_for_a_burst(own_redis: OwnRedis) -> None:
    rate, burst = 1000.0, 1024  # block = min(64, 1024 // 16) = 64
    limiter, client = await leasing_limiter(own_redis, rate=rate, burst=burst)
    try:
        before, counted = await script_calls(client), limiter.stats.redis_calls
        start = time.monotonic()
        decisions = await asyncio.gather(*(limiter.check("burst") for _ in range(1000)))
        elapsed = time.monotonic() - start
        calls = await script_calls(client) - before
        assert all(d.allowed for d in decisions)
        assert calls == limiter.stats.redis_calls - counted
        assert calls <= 1000 / 64 + 2  # waiting requests share one refill, which asks for all of them
        # One worker: the header adds its unused block to Redis's count, so it is the bucket's.
        remaining = sorted(d.remaining for d in decisions)
        assert burst - 1000 <= remaining[0] <= burst - 1000 + rate * elapsed + 1 and remaining[-1] < burst

        before = await script_calls(client)
        sequential = [await limiter.check("steady") for _ in range(1000)]
        assert all(d.allowed for d in sequential)
        assert await script_calls(client) - before <= 1000 / 64 + 7  # asks ramp 1, 2, 4 ... 64 first
    finally:
        await client.aclose()


async def test_small_bursts_stay_exact_per_request(own_redis: OwnRedis) -> None:
    tiers = {"b32": {"rate": 0.01, "burst": 32}}
    limiter, client = await leasing_limiter(own_redis, rate=0.01, burst=31, tiers=tiers, tenants={"big": "b32"})
    try:
        before = await script_calls(client)
        small = [await limiter.check("small") for _ in range(32)]
        assert await script_calls(client) - before == 32  # burst 31: block 1, one Redis decision each
        assert [d.remaining for d in small[:31]] == list(range(30, -1, -1)) and not small[31].allowed

        before = await script_calls(client)
        big = [await limiter.check("big") for _ in range(33)]
        assert await script_calls(client) - before < 25  # burst 32: blocks of 2
        assert [d.remaining for d in big[:32]] == list(range(31, -1, -1)) and not big[32].allowed  # headers still exact
    finally:
        await client.aclose()


async def test_leased_tokens_expire_unused(own_redis: OwnRedis) -> None:
    burst = 1024
    limiter, client = await leasing_limiter(own_redis, rate=1, burst=burst, lease_block=8, lease_s=0.05)
    try:
        used = [await limiter.check("t") for _ in range(8)]
        assert [d.remaining for d in used] == list(range(burst - 1, burst - 9, -1))
        left = limiter.leased.held_tokens("t")
        assert left > 0  # debited in Redis, not used yet
        await asyncio.sleep(0.08)
        calls = limiter.stats.redis_calls
        ninth = await limiter.check("t")
        assert limiter.stats.redis_calls == calls + 1  # the block expired: a new one
        assert ninth.remaining == burst - 9 - left  # the expired tokens are lost, not handed out again
    finally:
        await client.aclose()


async def test_waiting_requests_get_the_tokens_granted_for_them(own_redis: OwnRedis) -> None:
    burst = 1024
    limiter, client = await leasing_limiter(own_redis, rate=1, burst=burst, lease_s=1e-6)  # leases expire at once
    try:
        calls = limiter.stats.redis_calls
        decisions = await asyncio.gather(*(limiter.check("t") for _ in range(100)))
        assert all(d.allowed for d in decisions)
        assert limiter.stats.redis_calls - calls <= 3  # 64, then the 36 still waiting
        assert min(d.remaining for d in decisions) == burst - 100  # no token was leased to expire unused
    finally:
        await client.aclose()


# --- two worker processes sharing one tenant ------------------------------------------------


def _hammer(prefix: str, rate: float, burst: int, seconds: float, barrier, results) -> None:
    """One worker: its own event loop and Redis client, four concurrent callers."""

    async def run() -> tuple[int, float, float]:
        client = Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=1.0)
        settings = RateLimitSettings(enabled=True, rate=rate, burst=burst, key_prefix=prefix, redis_timeout_ms=2000)
        limiter = RateLimiter(settings, client)
        await client.ping()
        barrier.wait(30)
        first = time.time()
        stop = time.monotonic() + seconds

        async def caller() -> int:
            allowed = 0
            while time.monotonic() < stop:
                allowed += (await limiter.check("shared")).allowed
            return allowed

        counts = await asyncio.gather(*(caller() for _ in range(4)))
        last = time.time()
        await client.aclose()
        assert limiter.stats.redis_errors == 0  # every decision was Redis's
        return sum(counts), first, last

    results.put(asyncio.run(run()))


@pytest.mark.parametrize(("rate", "burst"), [(20.0, 10), (2000.0, 1600)], ids=["block-1", "block-64"])
async def test_two_worker_processes_share_one_limit(prefix: str, redis: Redis, rate: float, burst: int) -> None:
    seconds = 1.0
    block = max(1, min(RateLimitSettings().lease_block, burst // 16))
    lease_s = RateLimitSettings().lease_s if block > 1 else 0.0  # tokens spent up to lease_s after their debit
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(prefix, rate, burst, seconds, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    try:
        outcomes = [await asyncio.to_thread(results.get, True, 60) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    allowed = sum(o[0] for o in outcomes)
    elapsed = max(o[2] for o in outcomes) - min(o[1] for o in outcomes)
    # Shared: burst + rate * elapsed (~30 or ~3600). Separate limits would allow about twice that.
    # Below it: each worker's last block, unused when it stopped.
    assert burst + rate * seconds - 3 - 2 * (block - 1) <= allowed <= burst + rate * (elapsed + lease_s) + 1
    assert all(p.exitcode == 0 for p in procs)


# --- Redis outages, on a Redis server of our own ------------------------------------------


async def outage_limiter(server: OwnRedis, **overrides) -> tuple[RateLimiter, Redis]:
    # No socket timeouts and redis-py's default retries (seconds of them against a dead
    # server) on the client: the limiter's own timeout must be what bounds each call.
    client = Redis(host="127.0.0.1", port=server.port)
    await client.ping()  # connected before the clock matters
    defaults = {"enabled": True, "rate": 1, "burst": 2, "redis_timeout_ms": 150, "redis_backoff_s": 0.3}
    settings = RateLimitSettings(**(defaults | overrides))
    return RateLimiter(settings, client), client


async def timed(call) -> tuple[float, object]:
    start = time.monotonic()
    try:
        result = await call
    except Unavailable as exc:
        result = exc
    return time.monotonic() - start, result


async def recover(limiter: RateLimiter) -> None:
    """Poll until the limiter decides with Redis again (a decision with a limit)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if (await limiter.check("t")).limit:
                return
        except Unavailable:
            pass
        await asyncio.sleep(0.02)
    raise AssertionError("limiter did not recover")


async def test_fail_open_allows_counts_and_warns_once(own_redis: OwnRedis, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="core.redis_breaker")
    limiter, client = await outage_limiter(own_redis)
    try:
        assert [(await limiter.check("t")).allowed for _ in range(3)] == [True, True, False]

        own_redis.stop()
        outcomes = []
        for _ in range(50):
            outcomes.append(await timed(limiter.check("t")))
            await asyncio.sleep(0.01)
        assert all(d.allowed and d.headers() == {} for _, d in outcomes)
        assert max(s for s, _ in outcomes) < 0.5
        assert 1 <= limiter.stats.redis_errors <= 5  # backing off, not one failed call per request
        assert limiter.stats.unchecked == 50
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()

        own_redis.start()  # same port, empty: the script must be loaded again (NOSCRIPT -> load)
        await recover(limiter)
        assert "recovered" in caplog.records[-1].getMessage()
        assert [(await limiter.check("t")).allowed for _ in range(2)] == [True, False]  # limiting again
    finally:
        await client.aclose()


async def test_fail_closed_refuses_quickly_and_recovers(own_redis: OwnRedis) -> None:
    limiter, client = await outage_limiter(own_redis, fail_open=False)
    try:
        assert (await limiter.check("t")).allowed
        own_redis.stop()
        outcomes = [await timed(limiter.check("t")) for _ in range(20)]
        assert all(isinstance(e, Unavailable) and e.status == 503 for _, e in outcomes)
        assert all(int(e.headers["Retry-After"]) >= 1 for _, e in outcomes)
        assert max(s for s, _ in outcomes) < 0.5
        assert limiter.stats.redis_errors == 1  # the rest were refused without trying Redis
        own_redis.start()
        await recover(limiter)
    finally:
        await client.aclose()


async def test_a_hung_redis_costs_one_timeout_per_backoff(own_redis: OwnRedis) -> None:
    limiter, client = await outage_limiter(own_redis, fail_open=False)
    try:
        assert (await limiter.check("t")).allowed
        own_redis.pause()  # accepts bytes, never answers
        outcomes = [await timed(limiter.check("t")) for _ in range(20)]
        assert all(isinstance(e, Unavailable) for _, e in outcomes)
        assert 0.14 < outcomes[0][0] < 0.5  # the one call that waited: about redis_timeout_ms
        assert max(s for s, _ in outcomes[1:]) < 0.01  # the rest, backing off, do not wait
        assert limiter.stats.redis_errors == 1
        own_redis.resume()
        await recover(limiter)
    finally:
        await client.aclose()


async def test_a_hung_redis_is_one_wait_for_all_of_a_tenants_requests(own_redis: OwnRedis) -> None:
    limiter, client = await outage_limiter(own_redis, fail_open=False, burst=1024)  # block 64
    try:
        assert all([(await limiter.check("t")).allowed for _ in range(8)])
        left = limiter.leased.held_tokens("t")
        own_redis.pause()
        held = [await timed(limiter.check("t")) for _ in range(left)]
        assert all(d.allowed and d.limit == 1024 and s < 0.01 for s, d in held)  # debited before: still spent
        outcomes = await asyncio.gather(*(timed(limiter.check("t")) for _ in range(20)))
        assert all(isinstance(e, Unavailable) for _, e in outcomes)
        assert max(s for s, _ in outcomes) < 0.5
        assert limiter.stats.redis_errors == 1  # one refill timed out; the 20 waited on it together
        own_redis.resume()
        await recover(limiter)
    finally:
        await client.aclose()
