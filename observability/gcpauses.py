"""Garbage-collection pauses as Prometheus metrics, opt-in (RTSERVE_GC_PAUSES_ENABLED=true).

A full collection stops the event loop for as long as it walks the heap, so pauses that grow
over hours mean a heap that grows (see the design notes on BentoML's per-request timers).
The `gc.callbacks` hook only appends to a deque: it may run while this same thread holds a
metrics lock (any allocation can start a collection), so taking that lock there could
deadlock. A daemon thread moves the recorded pauses into the metrics once a second.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

PAUSE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


class GcPauseSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTSERVE_GC_PAUSES_")

    enabled: bool = False
    """Record every collection's pause in `rtserve_gc_pause_seconds` (costs ~1 µs a collection)."""


class GcPauses:
    """Times each collection; `rtserve_gc_pause_seconds{generation}` and
    `rtserve_gc_collected_objects_total{generation}` in the worker's multiprocess metrics."""

    def __init__(self, flush_interval_s: float = 1.0, registry: CollectorRegistry | None = None) -> None:
        import prometheus_client

        registry = registry if registry is not None else prometheus_client.REGISTRY
        self.pauses = prometheus_client.Histogram(
            "rtserve_gc_pause_seconds", "Garbage-collection pause", ["generation"], buckets=PAUSE_BUCKETS, registry=registry
        )
        self.collected = prometheus_client.Counter(
            "rtserve_gc_collected_objects", "Objects freed by garbage collection", ["generation"], registry=registry
        )
        self.flush_interval_s = flush_interval_s
        self._recorded: deque[tuple[int, float, int]] = deque(maxlen=100_000)
        self._started = 0.0
        self._closed = threading.Event()

    def install(self) -> GcPauses:
        gc.callbacks.append(self._on_gc)
        threading.Thread(target=self._flush_forever, name="gc-pauses", daemon=True).start()
        return self

    def close(self) -> None:
        gc.callbacks.remove(self._on_gc)
        self._closed.set()
        self.flush()

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._recorded.append((info["generation"], time.perf_counter() - self._started, info["collected"]))

    def flush(self) -> None:
        while self._recorded:
            generation, seconds, collected = self._recorded.popleft()
            self.pauses.labels(str(generation)).observe(seconds)
            self.collected.labels(str(generation)).inc(collected)

    def _flush_forever(self) -> None:
        while not self._closed.wait(self.flush_interval_s):
            self.flush()


def install_from_environment() -> GcPauses | None:
    """Start recording pauses in this worker when RTSERVE_GC_PAUSES_ENABLED is true."""
    return GcPauses().install() if GcPauseSettings().enabled else None
