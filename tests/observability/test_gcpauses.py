"""GC pause metrics: every collection is timed and lands in the histogram, per generation."""

from __future__ import annotations

import gc
import itertools

from prometheus_client import CollectorRegistry

from observability.gcpauses import GcPauses, GcPauseSettings


def test_each_collection_is_recorded_with_its_generation():
    registry = CollectorRegistry()
    hooks = len(gc.callbacks)
    pauses = GcPauses(registry=registry).install()
    try:
        garbage = [[] for _ in range(1000)]
        for a, b in itertools.pairwise(garbage):  # reference cycles: only the collector frees them
            a.append(b)
            b.append(a)
        del garbage, a, b
        gc.collect(2)
        gc.collect(0)
    finally:
        pauses.close()
    count = registry.get_sample_value("rtserve_gc_pause_seconds_count", {"generation": "2"})
    assert count is not None and count >= 1
    assert registry.get_sample_value("rtserve_gc_pause_seconds_count", {"generation": "0"}) >= 1
    assert registry.get_sample_value("rtserve_gc_pause_seconds_sum", {"generation": "2"}) > 0
    assert registry.get_sample_value("rtserve_gc_collected_objects_total", {"generation": "2"}) >= 1000
    assert len(gc.callbacks) == hooks  # closed: the hook is gone


def test_off_unless_asked_for(monkeypatch):
    monkeypatch.delenv("RTSERVE_GC_PAUSES_ENABLED", raising=False)
    assert GcPauseSettings().enabled is False
    monkeypatch.setenv("RTSERVE_GC_PAUSES_ENABLED", "true")
    assert GcPauseSettings().enabled is True
