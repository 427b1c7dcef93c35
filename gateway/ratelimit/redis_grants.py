"""Asking Redis for tokens: one GCRA script call, bounded by a timeout, behind the breaker.

Both Redis strategies go through here, so an outage looks the same to every tenant: each call
is bounded by `redis_timeout_ms` whatever the client's own timeouts and retries (redis-py
retries a dead server for seconds by default), a dead Redis costs one bounded wait per
`redis_backoff_s`, and meanwhile requests are let through or refused per `fail_open`.
"""

from __future__ import annotations

import asyncio
import math

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.errors import Unavailable
from core.redis_breaker import RedisBreaker
from gateway.ratelimit.decision import UNLIMITED, Decision, Limit, RateLimitStats
from gateway.ratelimit.gcra import GCRA_LUA
from gateway.ratelimit.settings import RateLimitSettings

# What one script call answered: (granted, remaining, reset_after_us, retry_after_us).
Answer = tuple[int, int, int, int]


class RedisGrants:
    def __init__(self, settings: RateLimitSettings, redis: Redis, stats: RateLimitStats) -> None:
        self.settings = settings
        self.stats = stats
        self._script = redis.register_script(GCRA_LUA)
        self._timeout_s = settings.redis_timeout_ms / 1000
        mode = "allowing requests unchecked" if settings.fail_open else "refusing requests with 503"
        self.breaker = RedisBreaker("rate limiter", settings.redis_backoff_s, mode)

    async def grant(self, tenant: str, limit: Limit, n: int, sent_while_down: bool) -> Answer | None:
        """One script call for up to `n` tokens; None when Redis failed or timed out."""
        self.stats.redis_calls += 1
        try:
            async with asyncio.timeout(self._timeout_s):
                granted, remaining, reset, retry = await self._script(
                    keys=[self.settings.key_prefix + tenant], args=[limit.interval_us, limit.burst, n]
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self.stats.redis_errors += 1
            self.breaker.failed(exc, self.settings.redis_timeout_ms)
            return None
        self.breaker.succeeded(sent_while_down)
        return granted, remaining, reset, retry

    def unchecked(self) -> Decision:
        """The decision without Redis: no limit (fail open), or 503 until the breaker's next probe."""
        self.stats.unchecked += 1
        if self.settings.fail_open:
            return UNLIMITED
        retry = max(1, math.ceil(self.breaker.retry_in()))
        raise Unavailable("rate limiter unavailable", headers={"Retry-After": str(retry)})
