"""Per-version windows read from real multiprocess metric files written by two worker processes."""

from __future__ import annotations

import math
import multiprocessing
import shutil
import subprocess
from pathlib import Path

import pytest

from observability.metrics import LATENCY_BUCKETS
from routing.stats import MetricsSnapshotSource, VersionWindow

# (model, version, variant, status, cache, seconds, times)
Request = tuple[str, str, str, int, str, float, int]
# (model, version, outcome, rows)
Comparison = tuple[str, str, str, int]

WORKER_A: tuple[list[Request], list[Comparison]] = (
    [
        ("iris", "v1", "stable", 200, "miss", 0.0008, 60),
        ("iris", "v1", "stable", 200, "hit", 0.0002, 30),
        ("iris", "v1", "stable", 503, "bypass", 0.004, 2),
        ("iris", "v2", "canary", 200, "miss", 0.0015, 10),
        ("iris", "v2", "canary", 500, "miss", 0.012, 3),
        ("iris", "v2", "shadow", 200, "bypass", 0.3, 50),
        ("iris", "v2", "shadow", 500, "bypass", 0.3, 5),
        ("digits", "v1", "stable", 500, "miss", 0.0008, 7),
    ],
    [("iris", "v2", "agree", 40), ("iris", "v2", "disagree", 10)],
)
WORKER_B: tuple[list[Request], list[Comparison]] = (
    [
        ("iris", "v1", "stable", 200, "miss", 0.0008, 40),
        ("iris", "v1", "stable", 500, "miss", 0.004, 1),
        ("iris", "v1", "stable", 404, "miss", 0.0008, 3),
        ("iris", "v2", "canary", 200, "hit", 0.0015, 7),
        ("iris", "v2", "canary", 502, "miss", 0.012, 2),
        ("iris", "v2", "shadow", 200, "bypass", 0.3, 20),
        ("iris", "v2", "pinned", 500, "miss", 0.3, 9),  # the client named the version: not the route's doing
        ("iris", "v2", "canary", 504, "miss", 0.0001, 6),  # the client's own deadline
    ],
    [("iris", "v2", "agree", 5), ("iris", "v2", "disagree", 5)],
)
CODES = {404: "model_not_found", 500: "model_error", 502: "internal_error", 503: "queue_full", 504: "deadline_exceeded"}
LATER: tuple[list[Request], list[Comparison]] = (
    [("iris", "v2", "canary", 200, "miss", 0.0015, 4), ("iris", "v2", "canary", 500, "miss", 0.012, 1)],
    [("iris", "v2", "disagree", 2)],
)


def _worker(directory: str, plan: tuple[list[Request], list[Comparison]]) -> None:
    """One server worker: the multiprocess directory is set before prometheus_client is imported."""
    import os
    import sys

    assert "prometheus_client" not in sys.modules
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from observability.metrics import Metrics

    metrics = Metrics()
    requests, comparisons = plan
    for model, version, variant, status, cache, seconds, times in requests:
        for _ in range(times):
            metrics.observe_request(model, version, variant, status, cache, seconds)
            if status >= 400:
                metrics.error_child(model, version, variant, CODES[status]).inc()
    for model, version, outcome, rows in comparisons:
        metrics.shadow_comparisons.labels(model, version, outcome).inc(rows)


def run_workers(directory: Path, *plans: tuple[list[Request], list[Comparison]]) -> None:
    """Each plan in its own process, all at once, as a server's workers would."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(directory), plan)) for plan in plans]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0, f"worker exited with {p.exitcode}"


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("prom")
    run_workers(directory, WORKER_A, WORKER_B)
    assert len(list(directory.glob("counter_*.db"))) == 2
    return directory


def test_sums_both_workers_and_counts_only_routed_model_faults(two_workers):
    snap = MetricsSnapshotSource(two_workers).snapshot("iris")
    assert set(snap) == {"v1", "v2"}
    v1, v2 = snap["v1"], snap["v2"]
    # a 404 is a client error and a 503 shed load: counted apart, never as the version's faults
    assert (v1.requests, v1.errors, v1.client_errors, v1.shed) == (60 + 30 + 2 + 40 + 1 + 3, 1, 3, 2)
    # shadow and pinned requests are left out; a client's 504 is a routed request but not a fault, and an
    # internal error (502 here) is the request path's, shown but never the version's fault
    assert (v2.requests, v2.errors, v2.client_errors, v2.shed, v2.internal) == (10 + 3 + 7 + 2 + 6, 3, 6, 0, 2)
    assert v1.observations == v1.requests and v2.observations == v2.requests  # no shadow or pinned latency either
    assert v2.error_rate() == pytest.approx(3 / 28)
    assert (v2.agree, v2.disagree) == (45, 15) and v2.disagreement() == pytest.approx(0.25)
    assert (v1.agree, v1.disagree) == (0, 0) and v1.disagreement() is None
    assert v1.bucket_bounds == (*LATENCY_BUCKETS, math.inf)
    # cache hits are counted, and left out of the uncached latency the canary is judged on
    assert (v1.hits, v2.hits) == (30, 7)
    assert (v1.uncached().observations, v2.uncached().observations) == (v1.requests - 30, v2.requests - 7)
    assert MetricsSnapshotSource(two_workers).snapshot("digits")["v1"].errors == 7
    assert MetricsSnapshotSource(two_workers).snapshot("absent") == {}


def test_p95_is_interpolated_like_histogram_quantile(two_workers):
    snap = MetricsSnapshotSource(two_workers).snapshot("iris")
    # v1: 30 observations <= 0.25 ms, 103 in (0.5, 1] ms, 3 in (3, 5] ms; rank 0.95 * 136 lies in (0.5, 1].
    assert snap["v1"].p95_ms() == pytest.approx(0.5 + 0.5 * (0.95 * 136 - 30) / 103)
    # v2: 6 <= 0.25 ms, 17 in (1, 2] ms, 5 in (10, 15] ms; rank 0.95 * 28 = 26.6 lies in (10, 15].
    # Shadow's and the pinned requests' 300 ms are absent.
    assert snap["v2"].p95_ms() == pytest.approx(10 + 5 * (26.6 - 23) / 5)
    assert snap["v2"].quantile_ms(0.5) == pytest.approx(1 + 1 * (14 - 6) / 17)
    assert VersionWindow().p95_ms() is None


def test_p95_agrees_with_promql(two_workers, tmp_path):
    """promtool evaluates histogram_quantile on the same bucket counts; it must give our number."""
    exe = shutil.which("promtool")
    assert exe, "promtool is not on PATH; `make system-deps` installs it (Debian package prometheus)"
    v2 = MetricsSnapshotSource(two_workers).snapshot("iris")["v2"]
    series = "\n".join(
        f"      - series: 'b{{le=\"{'+Inf' if math.isinf(le) else repr(le)}\"}}'\n        values: '{count} {count}'"
        for le, count in zip(v2.bucket_bounds, v2.bucket_counts, strict=True)
    )
    (tmp_path / "rules.yml").write_text("groups: []\n")
    (tmp_path / "test.yml").write_text(
        f"""rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
{series}
    promql_expr_test:
      - expr: histogram_quantile(0.95, b) * 1000
        eval_time: 1m
        exp_samples:
          - labels: '{{}}'
            value: {v2.p95_ms()!r}
"""
    )
    proc = subprocess.run(
        [exe, "test", "rules", "test.yml"], check=False, cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_minus_gives_the_window_since_an_earlier_snapshot(two_workers, tmp_path):
    directory = tmp_path / "prom"
    shutil.copytree(two_workers, directory)
    source = MetricsSnapshotSource(directory)
    before = source.snapshot("iris")
    run_workers(directory, LATER)
    after = source.snapshot("iris")
    window = after["v2"].minus(before["v2"])
    assert (window.requests, window.errors, window.agree, window.disagree) == (5, 1, 0, 2)
    assert window.observations == 5 and window.error_rate() == pytest.approx(0.2)
    # 4 in (1, 2] ms and 1 in (10, 15] ms: rank 4.75 lies in the slow bucket.
    assert window.p95_ms() == pytest.approx(10 + 5 * 0.75)
    bounds = before["v1"].bucket_bounds
    assert after["v1"].minus(before["v1"]) == VersionWindow(0, 0, bounds, (0,) * 19, 0, 0, uncached_bounds=bounds,
                                                            uncached_counts=(0,) * 19)
    assert window.uncached().observations == 5 and window.hits == 0
    # A version first seen after the earlier snapshot: everything is new.
    assert after["v2"].minus(VersionWindow()) == after["v2"]


def test_a_counter_reset_is_a_restart(two_workers, tmp_path):
    """The server restarted with an empty directory: what is there now is all new, never negative."""
    before = MetricsSnapshotSource(two_workers).snapshot("iris")
    run_workers(tmp_path, LATER)
    after = MetricsSnapshotSource(tmp_path).snapshot("iris")
    assert after["v2"].minus(before["v2"]) == after["v2"]
    assert after["v2"].requests == 5


def test_windows_refuse_inconsistent_buckets():
    with pytest.raises(ValueError):
        VersionWindow(1, 0, (0.1, 0.2), (1, 1))  # no +Inf bucket
    with pytest.raises(ValueError):
        VersionWindow(1, 0, (0.1, math.inf), (1,))
