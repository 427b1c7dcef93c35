"""The Redis strategy for tiers with blocks of 2 or more: tokens leased from Redis a block at a time, spent here.

One script call grants up to `block` tokens, as many as fit under the burst right now,
advancing the tenant's TAT by all of them; this worker spends them with no I/O for up to
`lease_s` after the answer arrived, and drops what is left then. Concurrent requests of a
tenant that find the block empty wait on one shared refill instead of each calling Redis.
The accuracy this costs is stated in the package's docstring (gateway/ratelimit/__init__.py).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from gateway.ratelimit.decision import Decision, Limit
from gateway.ratelimit.redis_grants import Answer, RedisGrants
from gateway.ratelimit.settings import RateLimitSettings


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
    refill: asyncio.Task[Answer | None] | None = None
    """The one Redis call in flight for this tenant, which every request short of a token awaits."""


class RedisLeased:
    def __init__(self, settings: RateLimitSettings, grants: RedisGrants) -> None:
        self.settings = settings
        self.grants = grants
        self._leases: dict[str, _Lease] = {}
        self._prune_at = 4096

    def held_tokens(self, tenant: str) -> int:
        """Tokens of the tenant's current block not spent yet (debited in Redis, perhaps expired here)."""
        lease = self._leases.get(tenant)
        return lease.tokens if lease is not None else 0

    async def check(self, tenant: str, limit: Limit) -> Decision:
        lease = self._leases.get(tenant) or self._new_lease(tenant)
        breaker = self.grants.breaker
        while True:
            now = time.monotonic()
            if lease.tokens and now < lease.expires:
                return self._take(lease, limit, now)
            if lease.refill is None:
                sent_while_down = breaker.down
                if not breaker.attempt():
                    return self.grants.unchecked()
                lease.refill = asyncio.create_task(self._refill(tenant, limit, lease, sent_while_down))
            elif breaker.down:
                return self.grants.unchecked()  # a probe is in flight: the others do not wait on it, as before
            refill = lease.refill
            lease.waiting += 1
            try:
                answer = await asyncio.shield(refill)  # a cancelled request must not cancel the others' refill
            finally:
                lease.waiting -= 1
            if answer is None:
                return self.grants.unchecked()
            granted, _, reset, retry = answer
            if not granted:
                return Decision(False, limit.burst, 0, reset / 1e6, retry / 1e6)
            if lease.tokens:  # the grant is for its waiters, however short lease_s is
                return self._take(lease, limit, time.monotonic())
            # The other waiters took every token granted: ask again.

    @staticmethod
    def _take(lease: _Lease, limit: Limit, now: float) -> Decision:
        """Spend one leased token; Remaining is Redis's count at the grant, this block
        included, less what this worker used since (other workers' use is not seen)."""
        lease.tokens -= 1
        return Decision(True, limit.burst, lease.remaining + lease.tokens, max(0.0, lease.reset_at - now), 0.0)

    def _new_lease(self, tenant: str) -> _Lease:
        if len(self._leases) >= self._prune_at:
            now = time.monotonic()
            self._leases = {t: x for t, x in self._leases.items() if x.refill is not None or x.expires > now}
            self._prune_at = max(4096, 2 * len(self._leases))
        lease = self._leases[tenant] = _Lease()
        return lease

    async def _refill(self, tenant: str, limit: Limit, lease: _Lease, sent_while_down: bool) -> Answer | None:
        """Replace the tenant's block with a new grant. It asks for twice what was used of the
        last block, or for the requests waiting if more, up to the block size: a busy tenant
        reaches full blocks in a few calls, a quiet one does not lease tokens to let expire."""
        try:
            used = lease.granted - lease.tokens
            n = min(limit.block, max(1, lease.waiting, 2 * used))
            answer = await self.grants.grant(tenant, limit, n, sent_while_down)
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
