"""The exposition cache: scrapes within `max_age_s` of a render are answered with it, so a burst costs one render."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry

from observability.metrics import BatchMetrics, Exposition, Metrics
from tests.helpers import FakeClock


def renders(text: bytes) -> float:
    (line,) = [line for line in text.decode().splitlines() if line.startswith("rtserve_metrics_renders_total ")]
    return float(line.split()[1])


def test_a_burst_of_scrapes_renders_once_and_a_later_one_anew():
    metrics = Metrics(CollectorRegistry())
    clock = FakeClock()
    exposition = Exposition(metrics.directory, max_age_s=1.0, clock=clock)
    first = exposition.text()
    assert [exposition.text() for _ in range(200)] == [first] * 200
    assert exposition.renders == 1 and renders(first) == 1
    BatchMetrics(metrics, "cached", "v1", 8).batch_done([(3, 0.01, 0.001)], [0.0], 0.0)
    metrics.tally.flush()
    clock.advance(0.5)
    assert b'model="cached"' not in exposition.text()  # still the first render
    clock.advance(0.5)
    fresh = exposition.text()
    assert exposition.renders == 2 and renders(fresh) == 2 and b'model="cached"' in fresh


def test_concurrent_scrapes_wait_for_the_render_in_progress():
    exposition = Exposition(Metrics(CollectorRegistry()).directory, max_age_s=60.0)
    start = threading.Barrier(16)
    bodies: list[bytes] = []

    def scrape() -> None:
        start.wait()
        bodies.append(exposition.text())

    threads = [threading.Thread(target=scrape) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert exposition.renders == 1 and len(set(bodies)) == 1 and len(bodies) == 16


def test_without_caching_every_scrape_renders():
    exposition = Exposition(Metrics(CollectorRegistry()).directory, max_age_s=0.0)
    for _ in range(3):
        exposition.text()
    assert exposition.renders == 3
