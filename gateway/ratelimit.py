"""Per-tenant rate limits: GCRA (a token bucket kept as one timestamp per tenant).

Each tenant has a theoretical arrival time (TAT). A request is allowed when the TAT,
advanced by one emission interval (1/rate), is at most `burst` intervals ahead of now;
so a fresh tenant gets `burst` requests at once and then `rate` a second. One number per
tenant means one key, one read-modify-write and nothing to refill in the background.

With Redis, a worker does not ask once per request: it leases a block of a tenant's tokens
(one Lua script call grants up to `block` tokens, as many as fit under the burst right now,
advancing the TAT by all of them) and spends them locally, with no I/O, for up to `lease_s`
after the answer arrived; what is left then is dropped. Concurrent requests of a tenant
that find the block empty wait on one shared refill instead of each calling Redis.
`block = min(lease_block, burst // 16)`, at least 1: tiers with a burst under 32 lease one
token at a time, which is exactly one decision by Redis per request. A worker asks for at
most twice what it used of its previous block (or for the requests waiting, if more), so a
quiet tenant's blocks stay small and few of its tokens expire unused.

Accuracy:
- With Redis every admission spends a token that the Lua script debited, atomically and on
  the Redis server's clock (`TIME`, so replicas' clocks do not matter), at most `lease_s`
  before (plus the reply's trip back). So across all workers and replicas, in any window
  of length L at most `burst + rate * (L + lease_s)` requests pass; the `rate * lease_s`
  beyond `burst + rate * L` is also at most the tokens that workers held unused when the
  window began (none with a block of 1). The other way, a tenant may be refused early by up
  to `block - 1` tokens per worker that holds an unused block, and tokens leased but unused
  for `lease_s` are lost (under-use, never excess). The interval is rounded to whole
  microseconds, so rates above 1e6/s are not honoured.
- Without Redis the decision is exact per process only: N workers each keep their own
  TATs, so a tenant gets up to N x (burst + rate * L) across them.
- While Redis is unreachable or slower than `redis_timeout_ms`, `fail_open` lets every
  request through (no limit at all) and `fail_open=False` refuses every request with 503;
  tokens of a block leased before the outage are still spent, as they were debited.

RateLimit-Remaining with a block is Redis's count at the last grant, the block included,
less the tokens this worker used since: exact for one worker, and never negative; other
workers' use since is not seen. Retry-After and RateLimit-Reset on a refusal are Redis's.

Cost: the in-process path is a dict lookup and integer arithmetic; the Redis path is the
same while the worker holds a block, and one EVALSHA round trip (EVAL only after the
server lost its script cache) per block, per refusal (shared by the requests waiting on
it), and per request of a tier with a block of 1.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.auth import TENANT_NAME
from core.errors import RateLimited, Unavailable
from core.redis_breaker import RedisBreaker

log = logging.getLogger(__name__)

DEFAULT_TIER = "default"


class TierLimit(BaseModel):
    rate: float = Field(gt=0)
    """Sustained requests per second."""
    burst: int = Field(ge=1)
    """Requests a full bucket allows at once; also the `RateLimit-Limit` header."""


class RateLimitSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTSERVE_RATELIMIT_")

    enabled: bool = False
    """Off by default so a laptop `bentoml serve` needs no tenant setup."""
    rate: float = Field(1000.0, gt=0)
    """Requests per second per tenant of the default tier."""
    burst: int = Field(2000, ge=1)
    """Requests the default tier allows at once after being idle."""
    tiers: dict[str, TierLimit] = {}
    """Named tiers with their own limits, e.g. '{"gold": {"rate": 5000, "burst": 10000}}'."""
    tenants: dict[str, str] = {}
    """Tenant -> tier name; tenants not listed get the default tier."""
    fail_open: bool = True
    """Redis unreachable: allow (and count) every request, or refuse with 503."""
    redis_timeout_ms: float = Field(50.0, gt=0)
    """Longest wait for Redis before the request is decided as if Redis were down."""
    redis_backoff_s: float = Field(1.0, ge=0)
    """After a Redis failure, how long to decide without trying Redis, so an outage
    costs one timeout per this period rather than one per request."""
    key_prefix: str = "rtserve:rl:"
    """Prefix of the per-tenant Redis keys (key = prefix + tenant)."""
    lease_block: int = Field(64, ge=1)
    """Most tokens one Redis call leases to this worker for a tenant (capped at burst // 16),
    so a busy tenant costs one round trip per block rather than one per request."""
    lease_s: float = Field(0.05, gt=0)
    """How long leased tokens stay usable after Redis granted them; the limit may be exceeded
    by at most rate * lease_s over any window, so keep it short."""

    @model_validator(mode="after")
    def _tiers_exist(self) -> RateLimitSettings:
        if DEFAULT_TIER in self.tiers:
            raise ValueError(f"tier {DEFAULT_TIER!r} is reserved: set rate and burst instead")
        misnamed = sorted(t for t in self.tenants if not TENANT_NAME.fullmatch(t))
        if misnamed:
            raise ValueError(f"tenant names must be letters, digits and . _ @ - : {', '.join(misnamed)}")
        unknown = sorted({t for t in self.tenants.values() if t != DEFAULT_TIER and t not in self.tiers})
        if unknown:
            raise ValueError(f"tenants refer to undefined tiers: {', '.join(unknown)}")
        return self


def gcra(tat: int, now: int, interval: int, burst: int, n: int = 1) -> tuple[int, int, int, int, int]:
    """One GCRA step for up to `n` tokens, in integer time units, so `remaining` never
    suffers float rounding. Granting k at once is exactly k single steps at the same instant.

    Returns (granted, new_tat, remaining, reset_after, retry_after); granted is 0 (refused)
    or as many of the `n` as fit under the burst now. The Lua script below is this function
    line for line.
    """
    if tat < now:
        tat = now
    free = (now + interval * burst - tat) // interval
    granted = min(n, free)
    if granted < 1:
        return 0, tat, 0, tat - now, tat + interval - interval * burst - now
    new_tat = tat + granted * interval
    return granted, new_tat, free - granted, new_tat - now, 0


# KEYS[1] tenant key; ARGV: interval (microseconds), burst, tokens wanted. Returns {granted,
# remaining, reset_after_us, retry_after_us}. TIME before a write needs effects replication
# (the default since Redis 5; the guarded call enables it on 3.2-4).
GCRA_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3]) or 1
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local free = math.floor((now + interval * burst - tat) / interval)
local granted = math.min(n, free)
if granted < 1 then
  return {0, 0, tat - now, tat + interval - interval * burst - now}
end
local new_tat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {granted, free - granted, new_tat - now, 0}
"""


@dataclass(slots=True)
class Decision:
    """The outcome for one request; `limit == 0` means no limit applied (disabled, or
    allowed unchecked during a Redis outage), and then there are no headers to send."""

    allowed: bool
    limit: int
    remaining: int
    reset_after_s: float
    retry_after_s: float

    def headers(self) -> dict[str, str]:
        """IETF RateLimit header fields; Retry-After only on refusal, whole seconds, >= 1."""
        if not self.limit:
            return {}
        out = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_after_s)),
        }
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return out


UNLIMITED = Decision(allowed=True, limit=0, remaining=0, reset_after_s=0.0, retry_after_s=0.0)


@dataclass(slots=True)
class RateLimitStats:
    """Counters for the metrics layer; plain ints and Counters, cheap to bump."""

    allowed: Counter[str] = field(default_factory=Counter)
    """Requests let through, by tier (fail-open ones included)."""
    limited: Counter[str] = field(default_factory=Counter)
    """Requests refused with 429, by tier."""
    redis_calls: int = 0
    """Script calls made to Redis: one per block leased, per refusal, or per request of a tier
    with a block of 1."""
    redis_errors: int = 0
    """Redis calls that failed or timed out."""
    unchecked: int = 0
    """Requests decided without Redis during an outage (allowed or 503, per fail_open)."""


@dataclass(frozen=True, slots=True)
class _Limit:
    tier: str
    burst: int
    interval_ns: int
    interval_us: int
    block: int
    """Most tokens one Redis call leases: a worker's unused block can refuse the tenant early
    by up to block - 1 tokens and its expired leftovers are lost, so burst // 16 keeps that
    to about 6 % of the burst per worker, and bursts under 32 exact per request."""

    @classmethod
    def of(cls, tier: str, rate: float, burst: int, lease_block: int) -> _Limit:
        block = max(1, min(lease_block, burst // 16))
        return cls(tier, burst, max(1, round(1e9 / rate)), max(1, round(1e6 / rate)), block)


# What one script call answered: (granted, remaining, reset_after_us, retry_after_us).
_Answer = tuple[int, int, int, int]


@dataclass(slots=True)
class _Lease:
    """This worker's block of one tenant's tokens: debited in Redis already, spent here."""

    tokens: int = 0
    """Granted and not yet used; worthless from `expires` on."""
    expires: float = 0.0
    granted: int = 0
    """Size of the last grant, to size the next ask by what was used of it."""
    remaining: int = 0
    """Tokens Redis had left for the tenant after that grant (other workers' use not seen)."""
    reset_at: float = 0.0
    waiting: int = 0
    """Requests waiting on `refill`: the next ask covers at least them."""
    refill: asyncio.Task[_Answer | None] | None = None
    """The one Redis call in flight for this tenant, which every request short of a token awaits."""


class RateLimiter:
    """Decides per request whether a tenant is within its tier's limit.

    Shared state lives in Redis when a client is given, else in this process. Each Redis
    call is bounded by `redis_timeout_ms` here, whatever the client's own timeouts and
    retries (redis-py retries a dead server for seconds by default), so a dead Redis
    costs one bounded wait per `redis_backoff_s`, never a stalled request.
    """

    def __init__(self, settings: RateLimitSettings, redis: Redis | None = None) -> None:
        self.settings = settings
        self.stats = RateLimitStats()
        lease_block = settings.lease_block
        self._default = _Limit.of(DEFAULT_TIER, settings.rate, settings.burst, lease_block)
        tiers = {name: _Limit.of(name, t.rate, t.burst, lease_block) for name, t in settings.tiers.items()}
        tiers[DEFAULT_TIER] = self._default
        self._by_tenant = {tenant: tiers[tier] for tenant, tier in settings.tenants.items()}
        self._tat: dict[str, int] = {}
        self._prune_at = 4096
        self._leases: dict[str, _Lease] = {}
        self._leases_prune_at = 4096
        self._script = redis.register_script(GCRA_LUA) if redis is not None else None
        self._timeout_s = settings.redis_timeout_ms / 1000
        mode = "allowing requests unchecked" if settings.fail_open else "refusing requests with 503"
        self._breaker = RedisBreaker("rate limiter", settings.redis_backoff_s, mode)

    def tier_of(self, tenant: str) -> str:
        return self._by_tenant.get(tenant, self._default).tier

    async def check(self, tenant: str) -> Decision:
        """Decide and count; never raises for a refusal (see `enforce`). With Redis down
        and `fail_open=False` it raises `Unavailable`, since there is nothing to decide on."""
        if not self.settings.enabled:
            return UNLIMITED
        limit = self._by_tenant.get(tenant, self._default)
        if self._script is None:
            decision = self._check_local(tenant, limit)
        elif limit.block == 1:
            decision = await self._check_redis_each(tenant, limit)
        else:
            decision = await self._check_redis_leased(tenant, limit)
        if decision.allowed:
            self.stats.allowed[limit.tier] += 1
        else:
            self.stats.limited[limit.tier] += 1
        return decision

    async def enforce(self, tenant: str) -> Decision:
        """`check`, raising `RateLimited` (429, with the headers) when refused."""
        decision = await self.check(tenant)
        if not decision.allowed:
            headers = decision.headers()
            raise RateLimited(f"rate limit exceeded; retry after {headers['Retry-After']} s", headers=headers)
        return decision

    def _check_local(self, tenant: str, limit: _Limit) -> Decision:
        now = time.monotonic_ns()
        allowed, tat, remaining, reset, retry = gcra(self._tat.get(tenant, now), now, limit.interval_ns, limit.burst)
        if allowed:
            self._tat[tenant] = tat
            if len(self._tat) > self._prune_at:
                self._prune(now)
        return Decision(bool(allowed), limit.burst, remaining, reset / 1e9, retry / 1e9)

    def _prune(self, now: int) -> None:
        """Drop tenants whose bucket is full again (TAT in the past: same as absent), so
        the dict holds only recently active tenants."""
        self._tat = {t: tat for t, tat in self._tat.items() if tat > now}
        self._prune_at = max(4096, 2 * len(self._tat))

    async def _check_redis_each(self, tenant: str, limit: _Limit) -> Decision:
        """A block of 1: one call per request, concurrent ones in parallel, as no request
        could use a token leased for another."""
        sent_while_down = self._breaker.down
        if not self._breaker.attempt():
            return self._unchecked()
        answer = await self._grant(tenant, limit, 1, sent_while_down)
        if answer is None:
            return self._unchecked()
        granted, remaining, reset, retry = answer
        return Decision(granted > 0, limit.burst, remaining, reset / 1e6, retry / 1e6)

    async def _check_redis_leased(self, tenant: str, limit: _Limit) -> Decision:
        lease = self._leases.get(tenant) or self._new_lease(tenant)
        while True:
            now = time.monotonic()
            if lease.tokens and now < lease.expires:
                return self._take(lease, limit, now)
            if lease.refill is None:
                sent_while_down = self._breaker.down
                if not self._breaker.attempt():
                    return self._unchecked()
                lease.refill = asyncio.create_task(self._refill(tenant, limit, lease, sent_while_down))
            elif self._breaker.down:
                return self._unchecked()  # a probe is in flight: the others do not wait on it, as before
            refill = lease.refill
            lease.waiting += 1
            try:
                answer = await asyncio.shield(refill)  # a cancelled request must not cancel the others' refill
            finally:
                lease.waiting -= 1
            if answer is None:
                return self._unchecked()
            granted, _, reset, retry = answer
            if not granted:
                return Decision(False, limit.burst, 0, reset / 1e6, retry / 1e6)
            if lease.tokens:  # the grant is for its waiters, however short lease_s is
                return self._take(lease, limit, time.monotonic())
            # The other waiters took every token granted: ask again.

    @staticmethod
    def _take(lease: _Lease, limit: _Limit, now: float) -> Decision:
        """Spend one leased token; Remaining is Redis's count at the grant, this block
        included, less what this worker used since (other workers' use is not seen)."""
        lease.tokens -= 1
        return Decision(True, limit.burst, lease.remaining + lease.tokens, max(0.0, lease.reset_at - now), 0.0)

    def _new_lease(self, tenant: str) -> _Lease:
        if len(self._leases) >= self._leases_prune_at:
            now = time.monotonic()
            self._leases = {t: x for t, x in self._leases.items() if x.refill is not None or x.expires > now}
            self._leases_prune_at = max(4096, 2 * len(self._leases))
        lease = self._leases[tenant] = _Lease()
        return lease

    async def _refill(self, tenant: str, limit: _Limit, lease: _Lease, sent_while_down: bool) -> _Answer | None:
        """Replace the tenant's block with a new grant. It asks for twice what was used of the
        last block, or for the requests waiting if more, up to the block size: a busy tenant
        reaches full blocks in a few calls, a quiet one does not lease tokens to let expire."""
        try:
            used = lease.granted - lease.tokens
            n = min(limit.block, max(1, lease.waiting, 2 * used))
            answer = await self._grant(tenant, limit, n, sent_while_down)
            if answer is not None:
                now = time.monotonic()
                granted, remaining, reset, _ = answer
                lease.tokens = lease.granted = granted
                lease.remaining = remaining
                lease.expires = now + self.settings.lease_s
                lease.reset_at = now + reset / 1e6
            return answer
        finally:
            lease.refill = None

    async def _grant(self, tenant: str, limit: _Limit, n: int, sent_while_down: bool) -> _Answer | None:
        """One script call for up to `n` tokens; None when Redis failed or timed out."""
        self.stats.redis_calls += 1
        try:
            async with asyncio.timeout(self._timeout_s):
                granted, remaining, reset, retry = await self._script(
                    keys=[self.settings.key_prefix + tenant], args=[limit.interval_us, limit.burst, n]
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self.stats.redis_errors += 1
            self._breaker.failed(exc, self.settings.redis_timeout_ms)
            return None
        self._breaker.succeeded(sent_while_down)
        return granted, remaining, reset, retry

    def _unchecked(self) -> Decision:
        self.stats.unchecked += 1
        if self.settings.fail_open:
            return UNLIMITED
        retry = max(1, math.ceil(self._breaker.retry_in()))
        raise Unavailable("rate limiter unavailable", headers={"Retry-After": str(retry)})
