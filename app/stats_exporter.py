"""Copies the gateway's plain counters into Prometheus about once a second.

Auth, rate limiting and the cache count with plain ints on the hot path; this task turns
their growth into Prometheus counter increments off the hot path, and checks Redis so
`rtserve_redis_up` is true even when no request has touched Redis lately.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.admission import Admission
    from gateway.cache import PredictionCache
    from observability.metrics import Metrics

log = logging.getLogger(__name__)


class StatsExporter:
    def __init__(
        self, admission: Admission, cache: PredictionCache | None, redis: Redis | None, metrics: Metrics, interval_s: float = 1.0
    ) -> None:
        self.admission = admission
        self.cache = cache
        self.redis = redis
        self.metrics = metrics
        self.interval_s = interval_s
        self._seen: dict[tuple[str, ...], int] = {}
        self._task: asyncio.Task | None = None

    def ensure_running(self) -> None:
        """Start the loop on the worker's event loop the first time a request arrives."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.sync()
                await self._check_redis()
            except Exception:  # metrics must never take the worker down
                log.exception("exporting gateway stats failed")

    def sync(self) -> None:
        """Bring this worker's metrics up to date: this turn's updates written, the gateway's counters copied."""
        m = self.metrics
        m.tally.flush()
        auth, limiter, cache = self.admission.auth, self.admission.limiter, self.cache
        if auth is not None:
            self._add(m.auth_failures, ((("auth", r), (r,), n) for r, n in auth.stats.failures.items()))
        if limiter is not None:
            self._add(m.rate_limited, ((("rl", t), (t,), n) for t, n in limiter.stats.limited.items()))
            self._add(m.redis_errors, [(("redis", "ratelimit"), ("ratelimit",), limiter.stats.redis_errors)])
        if cache is not None:
            s = cache.stats
            rows = [("memory", "hit", s.memory_hits), ("memory", "miss", s.memory_misses), ("redis", "hit", s.redis_hits),
                    ("redis", "miss", s.redis_misses), ("redis", "error", s.redis_errors),
                    ("redis", "not_worth", s.redis_not_worth)]
            self._add(m.cache, ((("cache", t, o), (t, o), n) for t, o, n in rows))
            self._add(m.redis_errors, [(("redis", "cache"), ("cache",), s.redis_errors)])

    def _add(self, counter, rows: Iterable[tuple[tuple[str, ...], tuple[str, ...], int]]) -> None:
        for key, labels, total in rows:
            delta = total - self._seen.get(key, 0)
            if delta > 0:
                counter.labels(*labels).inc(delta)
                self._seen[key] = total

    async def _check_redis(self) -> None:
        redis = self.redis
        if redis is None:
            return
        try:
            async with asyncio.timeout(0.25):
                await redis.ping()
            up = 1
        except Exception:  # noqa: BLE001 - any failure means Redis is not usable now
            up = 0
        self.metrics.redis_up.set(up)
