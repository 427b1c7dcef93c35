"""The cache's counters, which the metrics layer reads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class CacheStats:
    """Counters the metrics layer reads; plain ints so the hot path pays nothing for them."""

    memory_hits: int = 0
    memory_misses: int = 0
    redis_hits: int = 0
    redis_misses: int = 0
    redis_errors: int = 0
    redis_bypassed: int = 0  # reads and writes not attempted: no Redis, or backing off after an error
    redis_not_worth: int = 0  # misses of versions cheaper to run than a Redis round trip
    redis_corrupt: int = 0
    redis_writes: int = 0
    writes_skipped: int = 0
    evictions: int = 0
    computes: int = 0
    coalesced: int = 0  # misses that joined a computation already in flight

    def by_tier(self) -> dict[str, tuple[int, int]]:
        """tier -> (hits, misses), as the metrics layer labels them."""
        return {"memory": (self.memory_hits, self.memory_misses), "redis": (self.redis_hits, self.redis_misses)}
