"""The rate limiter a request sees: a tenant's tier, the strategy that keeps its bucket, and the counts."""

from __future__ import annotations

from redis.asyncio import Redis

from core.errors import RateLimited
from gateway.ratelimit.decision import UNLIMITED, Decision, Limit, RateLimitStats, Strategy
from gateway.ratelimit.leased import RedisLeased
from gateway.ratelimit.local import LocalGcra
from gateway.ratelimit.per_request import RedisPerRequest
from gateway.ratelimit.redis_grants import RedisGrants
from gateway.ratelimit.settings import DEFAULT_TIER, RateLimitSettings


class RateLimiter:
    """Decides per request whether a tenant is within its tier's limit.

    Shared state lives in Redis when a client is given, else in this process. With Redis, a
    tier whose block is 1 asks Redis once per request and any other leases blocks of tokens
    (see gateway/ratelimit/leased.py); each Redis call is bounded by `redis_timeout_ms`.
    """

    def __init__(self, settings: RateLimitSettings, redis: Redis | None = None) -> None:
        self.settings = settings
        self.stats = RateLimitStats()
        self.local: LocalGcra | None = None
        self.leased: RedisLeased | None = None
        per_request: RedisPerRequest | None = None
        if redis is None:
            self.local = LocalGcra()
        else:
            grants = RedisGrants(settings, redis, self.stats)
            per_request, self.leased = RedisPerRequest(grants), RedisLeased(settings, grants)

        def strategy(limit: Limit) -> Strategy:
            if self.local is not None:
                return self.local
            return per_request if limit.block == 1 else self.leased

        lease_block = settings.lease_block
        default = Limit.of(DEFAULT_TIER, settings.rate, settings.burst, lease_block)
        tiers = {name: Limit.of(name, t.rate, t.burst, lease_block) for name, t in settings.tiers.items()}
        tiers[DEFAULT_TIER] = default
        self._default = (default, strategy(default))
        self._by_tenant = {tenant: (tiers[tier], strategy(tiers[tier])) for tenant, tier in settings.tenants.items()}

    def tier_of(self, tenant: str) -> str:
        return self._by_tenant.get(tenant, self._default)[0].tier

    async def check(self, tenant: str) -> Decision:
        """Decide and count; never raises for a refusal (see `enforce`). With Redis down
        and `fail_open=False` it raises `Unavailable`, since there is nothing to decide on."""
        if not self.settings.enabled:
            return UNLIMITED
        limit, strategy = self._by_tenant.get(tenant, self._default)
        decision = await strategy.check(tenant, limit)
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
