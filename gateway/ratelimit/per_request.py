"""The Redis strategy for tiers with a block of 1 (bursts under 32): one Redis decision per request."""

from __future__ import annotations

from gateway.ratelimit.decision import Decision, Limit
from gateway.ratelimit.redis_grants import RedisGrants


class RedisPerRequest:
    """Concurrent requests call in parallel, as no request could use a token leased for another."""

    def __init__(self, grants: RedisGrants) -> None:
        self.grants = grants

    async def check(self, tenant: str, limit: Limit) -> Decision:
        breaker = self.grants.breaker
        sent_while_down = breaker.down
        if not breaker.attempt():
            return self.grants.unchecked()
        answer = await self.grants.grant(tenant, limit, 1, sent_while_down)
        if answer is None:
            return self.grants.unchecked()
        granted, remaining, reset, retry = answer
        return Decision(granted > 0, limit.burst, remaining, reset / 1e6, retry / 1e6)
