"""Deferred metric updates: written once at the end of the loop turn, and equal to direct updates."""

from __future__ import annotations

import asyncio
import uuid

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from observability.metrics import LATENCY_BUCKETS
from observability.tally import Tally

VALUES = [0.0001, 0.0004, 0.002, 0.002, 0.0099, 0.01, 0.7, 3.0, 12.0]  # on bounds, between them, past the last
X = {"m": "x"}


class Metrics:
    """Each kind of metric twice, one fed through the tally and one directly, under names no other test
    uses: in a process that writes multiprocess files (as the suite's does), a metric of a name seen
    before reads its old value back."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.tag = uuid.uuid4().hex[:8]
        for kind, extra in ((Counter, {}), (Gauge, {}), (Histogram, {"buckets": LATENCY_BUCKETS})):
            for way in ("tallied", "direct"):
                name = f"{way}_{kind.__name__.lower()}_{self.tag}"
                setattr(self, f"{way}_{kind.__name__.lower()}", kind(name, "doc", ["m"], registry=self.registry, **extra).labels("x"))

    def value(self, way: str, sample: str, **labels: str) -> float | None:
        """`sample` is the sample's name without its tag: counter_total, histogram_count, ..."""
        kind, _, suffix = sample.partition("_")
        return self.registry.get_sample_value(f"{way}_{kind}_{self.tag}_{suffix}" if suffix else f"{way}_{kind}_{self.tag}",
                                              {**X, **labels})

    def samples(self, way: str) -> dict[tuple[str, str], float]:
        out = {}
        for metric in self.registry.collect():
            for s in metric.samples:
                if s.name.startswith(way + "_") and not s.name.endswith("_created"):
                    out[(s.name.removeprefix(way + "_"), s.labels.get("le", ""))] = s.value
        return out


async def test_updates_wait_for_the_end_of_the_turn_and_equal_direct_ones():
    m, tally = Metrics(), Tally()
    for v in VALUES:
        tally.observe(m.tallied_histogram, v)
        m.direct_histogram.observe(v)
        tally.inc(m.tallied_counter, v)
        m.direct_counter.inc(v)
        tally.set(m.tallied_gauge, v)
        m.direct_gauge.set(v)
    assert m.value("tallied", "counter_total") == 0  # nothing written in this turn
    assert m.value("tallied", "histogram_count") == 0
    await asyncio.sleep(0)
    assert m.samples("tallied") == m.samples("direct")
    assert m.value("tallied", "histogram_count") == len(VALUES)

    tally.inc(m.tallied_counter)  # a later turn schedules its own write
    await asyncio.sleep(0)
    assert m.value("tallied", "counter_total") == sum(VALUES) + 1


def test_without_a_running_loop_updates_are_written_at_once():
    m, tally = Metrics(), Tally()
    tally.inc(m.tallied_counter, 2)
    tally.observe(m.tallied_histogram, 0.003)
    assert m.value("tallied", "counter_total") == 2
    assert m.value("tallied", "histogram_bucket", le="0.005") == 1


def test_a_write_due_in_a_loop_that_stopped_is_made_by_the_next_loop():
    m, tally = Metrics(), Tally()
    loop = asyncio.new_event_loop()
    loop.call_soon(tally.inc, m.tallied_counter)
    loop.call_soon(loop.stop)  # the loop stops before the end-of-turn write it was given
    loop.run_forever()
    loop.close()
    assert m.value("tallied", "counter_total") == 0

    async def one_more() -> None:
        tally.inc(m.tallied_counter)

    asyncio.run(one_more())
    assert m.value("tallied", "counter_total") == 2


async def test_a_reader_writes_at_once_and_the_end_of_the_turn_adds_nothing():
    m, tally = Metrics(), Tally()
    tally.inc(m.tallied_counter, 3)
    tally.flush()  # what a scrape or a statistics read in this worker does before reading the files
    assert m.value("tallied", "counter_total") == 3
    await asyncio.sleep(0)
    assert m.value("tallied", "counter_total") == 3


async def test_several_updates_in_one_call_equal_the_same_updates_one_by_one():
    m, tally = Metrics(), Tally()
    for v in VALUES:
        tally.update(((m.tallied_counter, v),), ((m.tallied_histogram, v),), ((m.tallied_gauge, v),))
        m.direct_counter.inc(v)
        m.direct_histogram.observe(v)
        m.direct_gauge.set(v)
    tally.observe_all(m.tallied_histogram, VALUES)
    for v in VALUES:
        m.direct_histogram.observe(v)
    assert m.value("tallied", "histogram_count") == 0  # deferred like the single updates
    await asyncio.sleep(0)
    assert m.samples("tallied") == m.samples("direct")
    assert m.value("tallied", "histogram_count") == 2 * len(VALUES)


def test_several_updates_without_a_running_loop_are_written_at_once():
    m, tally = Metrics(), Tally()
    tally.update(((m.tallied_counter, 2.0),), ((m.tallied_histogram, 0.003),), ((m.tallied_gauge, 7.0),))
    tally.observe_all(m.tallied_histogram, [0.004, 0.2])
    assert m.value("tallied", "counter_total") == 2
    assert m.value("tallied", "gauge") == 7
    assert m.value("tallied", "histogram_bucket", le="0.005") == 2
    assert m.value("tallied", "histogram_count") == 3
