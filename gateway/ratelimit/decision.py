"""What a strategy decides and counts, the limits of a tier in the units it works in, and the strategy interface."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol


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
        return {name: value.decode() for name, (_, value) in zip(HEADER_NAMES, self.header_fields(), strict=False)}

    def header_fields(self) -> list[tuple[bytes, bytes]]:
        """`headers()` as a response carries them: lower-case names, encoded (every allowed request pays this)."""
        if not self.limit:
            return []
        fields = [(b"ratelimit-limit", b"%d" % self.limit), (b"ratelimit-remaining", b"%d" % self.remaining),
                  (b"ratelimit-reset", b"%d" % math.ceil(self.reset_after_s))]
        if not self.allowed:
            fields.append((b"retry-after", b"%d" % max(1, math.ceil(self.retry_after_s))))
        return fields


HEADER_NAMES = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After")

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
class Limit:
    """One tier's limit in the units the strategies count in."""

    tier: str
    burst: int
    interval_ns: int
    interval_us: int
    block: int
    """Most tokens one Redis call leases: a worker's unused block can refuse the tenant early
    by up to block - 1 tokens and its expired leftovers are lost, so burst // 16 keeps that
    to about 6 % of the burst per worker, and bursts under 32 exact per request."""

    @classmethod
    def of(cls, tier: str, rate: float, burst: int, lease_block: int) -> Limit:
        block = max(1, min(lease_block, burst // 16))
        return cls(tier, burst, max(1, round(1e9 / rate)), max(1, round(1e6 / rate)), block)


class Strategy(Protocol):
    """Where a tenant's bucket is kept and how it is asked; `RateLimiter` picks one per tier."""

    async def check(self, tenant: str, limit: Limit) -> Decision:
        """Decide one request; raises `Unavailable` only when Redis is down and limits fail closed."""
        ...
