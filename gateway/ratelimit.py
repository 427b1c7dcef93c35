"""Per-tenant rate limits: GCRA (a token bucket kept as one timestamp per tenant).

Each tenant has a theoretical arrival time (TAT). A request is allowed when the TAT,
advanced by one emission interval (1/rate), is at most `burst` intervals ahead of now;
so a fresh tenant gets `burst` requests at once and then `rate` a second. One number per
tenant means one key, one read-modify-write and nothing to refill in the background.

Accuracy:
- With Redis the decision is exact across every worker and replica: one Lua script reads,
  decides and writes atomically, on the Redis server's clock (`TIME`), so replicas' clocks
  do not matter. In any window of length L at most `burst + rate * L` requests pass
  (the interval is rounded to whole microseconds, so rates above 1e6/s are not honoured).
- Without Redis the decision is exact per process only: N workers each keep their own
  TATs, so a tenant gets up to N x (burst + rate * L) across them.
- While Redis is unreachable or slower than `redis_timeout_ms`, `fail_open` lets every
  request through (no limit at all) and `fail_open=False` refuses every request with 503.

Cost: the in-process path is a dict lookup and integer arithmetic; the Redis path is one
EVALSHA round trip (EVAL only after the server lost its script cache).
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

from gateway.errors import RateLimited, Unavailable
from gateway.redis_breaker import RedisBreaker

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

    @model_validator(mode="after")
    def _tiers_exist(self) -> RateLimitSettings:
        if DEFAULT_TIER in self.tiers:
            raise ValueError(f"tier {DEFAULT_TIER!r} is reserved: set rate and burst instead")
        unknown = sorted({t for t in self.tenants.values() if t != DEFAULT_TIER and t not in self.tiers})
        if unknown:
            raise ValueError(f"tenants refer to undefined tiers: {', '.join(unknown)}")
        return self


def gcra(tat: int, now: int, interval: int, burst: int) -> tuple[bool, int, int, int, int]:
    """One GCRA step in integer time units, so `remaining` never suffers float rounding.

    Returns (allowed, new_tat, remaining, reset_after, retry_after); the Lua script below
    is this function line for line.
    """
    if tat < now:
        tat = now
    new_tat = tat + interval
    allow_at = new_tat - interval * burst
    if now < allow_at:
        return False, tat, 0, tat - now, allow_at - now
    return True, new_tat, (now - allow_at) // interval, new_tat - now, 0


# KEYS[1] tenant key; ARGV: interval (microseconds), burst. Returns {allowed, remaining,
# reset_after_us, retry_after_us}. TIME before a write needs effects replication (the
# default since Redis 5; the guarded call enables it on 3.2-4).
GCRA_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if now < allow_at then
  return {0, 0, tat - now, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now - allow_at) / interval), new_tat - now, 0}
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

    @classmethod
    def of(cls, tier: str, rate: float, burst: int) -> _Limit:
        return cls(tier, burst, max(1, round(1e9 / rate)), max(1, round(1e6 / rate)))


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
        self._default = _Limit.of(DEFAULT_TIER, settings.rate, settings.burst)
        tiers = {name: _Limit.of(name, t.rate, t.burst) for name, t in settings.tiers.items()}
        tiers[DEFAULT_TIER] = self._default
        self._by_tenant = {tenant: tiers[tier] for tenant, tier in settings.tenants.items()}
        self._tat: dict[str, int] = {}
        self._prune_at = 4096
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
        else:
            decision = await self._check_redis(tenant, limit)
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
        return Decision(allowed, limit.burst, remaining, reset / 1e9, retry / 1e9)

    def _prune(self, now: int) -> None:
        """Drop tenants whose bucket is full again (TAT in the past: same as absent), so
        the dict holds only recently active tenants."""
        self._tat = {t: tat for t, tat in self._tat.items() if tat > now}
        self._prune_at = max(4096, 2 * len(self._tat))

    async def _check_redis(self, tenant: str, limit: _Limit) -> Decision:
        sent_while_down = self._breaker.down
        if not self._breaker.attempt():
            return self._unchecked()
        try:
            async with asyncio.timeout(self._timeout_s):
                allowed, remaining, reset, retry = await self._script(
                    keys=[self.settings.key_prefix + tenant], args=[limit.interval_us, limit.burst]
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self.stats.redis_errors += 1
            self._breaker.failed(exc, self.settings.redis_timeout_ms)
            return self._unchecked()
        self._breaker.succeeded(sent_while_down)
        return Decision(bool(allowed), limit.burst, remaining, reset / 1e6, retry / 1e6)

    def _unchecked(self) -> Decision:
        self.stats.unchecked += 1
        if self.settings.fail_open:
            return UNLIMITED
        retry = max(1, math.ceil(self._breaker.retry_in()))
        raise Unavailable("rate limiter unavailable", headers={"Retry-After": str(retry)})
