"""The in-process strategy: each tenant's TAT in a dict, exact per process (N workers allow N times the limit)."""

from __future__ import annotations

import time

from gateway.ratelimit.decision import Decision, Limit
from gateway.ratelimit.gcra import gcra


class LocalGcra:
    """A dict lookup and integer arithmetic per request, on this process's monotonic clock."""

    def __init__(self) -> None:
        self._tat: dict[str, int] = {}
        self._prune_at = 4096

    def __len__(self) -> int:
        """Tenants whose bucket is remembered (recently active ones)."""
        return len(self._tat)

    async def check(self, tenant: str, limit: Limit) -> Decision:
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
