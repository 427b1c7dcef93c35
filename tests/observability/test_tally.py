"""Deferred metric updates: written once at the end of the loop turn, and equal to direct updates."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from observability.metrics import LATENCY_BUCKETS
from observability.tally import Tally

VALUES = [0.0001, 0.0004, 0.002, 0.002, 0.0099, 0.01, 0.7, 3.0, 12.0]  # on bounds, between them, past the last


def pair(kind: type, registry: CollectorRegistry, **kwargs) -> tuple:
    """The same metric twice, one fed through the tally and one directly."""
    return tuple(kind(f"{name}_{kind.__name__.lower()}", "doc", ["m"], registry=registry, **kwargs).labels("x")
                 for name in ("tallied", "direct"))


def samples(registry: CollectorRegistry, prefix: str) -> dict[tuple[str, str], float]:
    out = {}
    for metric in registry.collect():
        for s in metric.samples:
            if s.name.startswith(prefix) and not s.name.endswith("_created"):
                out[(s.name.removeprefix(prefix), s.labels.get("le", ""))] = s.value
    return out


async def test_updates_wait_for_the_end_of_the_turn_and_equal_direct_ones():
    registry = CollectorRegistry()
    tally = Tally()
    hist, hist_direct = pair(Histogram, registry, buckets=LATENCY_BUCKETS)
    count, count_direct = pair(Counter, registry)
    gauge, gauge_direct = pair(Gauge, registry)
    for v in VALUES:
        tally.observe(hist, v)
        hist_direct.observe(v)
        tally.inc(count, v)
        count_direct.inc(v)
        tally.set(gauge, v)
        gauge_direct.set(v)
    assert registry.get_sample_value("tallied_counter_total", {"m": "x"}) == 0  # nothing written in this turn
    assert registry.get_sample_value("tallied_histogram_count", {"m": "x"}) == 0
    await asyncio.sleep(0)
    assert samples(registry, "tallied_") == samples(registry, "direct_")
    assert registry.get_sample_value("tallied_histogram_count", {"m": "x"}) == len(VALUES)

    tally.inc(count)  # a later turn schedules its own write
    await asyncio.sleep(0)
    assert registry.get_sample_value("tallied_counter_total", {"m": "x"}) == sum(VALUES) + 1


def test_without_a_running_loop_updates_are_written_at_once():
    registry = CollectorRegistry()
    tally = Tally()
    count, _ = pair(Counter, registry)
    hist, _ = pair(Histogram, registry, buckets=LATENCY_BUCKETS)
    tally.inc(count, 2)
    tally.observe(hist, 0.003)
    assert registry.get_sample_value("tallied_counter_total", {"m": "x"}) == 2
    assert registry.get_sample_value("tallied_histogram_bucket", {"m": "x", "le": "0.005"}) == 1


def test_a_write_due_in_a_loop_that_stopped_is_made_by_the_next_loop():
    registry = CollectorRegistry()
    tally = Tally()
    count, _ = pair(Counter, registry)

    loop = asyncio.new_event_loop()
    loop.call_soon(tally.inc, count)
    loop.call_soon(loop.stop)  # the loop stops before the end-of-turn write it was given
    loop.run_forever()
    loop.close()
    assert registry.get_sample_value("tallied_counter_total", {"m": "x"}) == 0

    async def one_more() -> None:
        tally.inc(count)

    asyncio.run(one_more())
    assert registry.get_sample_value("tallied_counter_total", {"m": "x"}) == 2
