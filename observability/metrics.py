"""Prometheus metrics, shared by every worker through prometheus-client's multiprocess mode.

BentoML gives each worker `PROMETHEUS_MULTIPROC_DIR`; values are written to files there and an
`Exposition` adds them up: on the metrics port (app/metrics_port.py), or on the API port when
`RTSERVE_METRICS_ON_API_PORT` asks for it. Reading every worker's files costs more the more series
there are, so a rendered exposition is served again for `RTSERVE_METRICS_CACHE_S`: a burst of
scrapes renders once. prometheus_client is imported only when `Metrics` is created in the worker,
after that variable is set.

The hot path holds pre-labelled children (one dict lookup per request), never `labels()`, and
its updates go through a `Tally` (observability/tally.py), which writes each value once per
event-loop turn. Label values are bounded: model and version come from the registry, never from
the client.
"""

from __future__ import annotations

import glob
import os
import tempfile
import threading
import time
from collections.abc import Callable
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from observability.tally import Tally

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

LATENCY_BUCKETS = (0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
UNKNOWN = "_unknown"  # model label for requests that name no served model
PHASES = ("input", "infer", "output")
"""A batch's phases: collating its inputs, the model call, handing each request its outputs."""
STATUS_CLASS = tuple(f"{n}xx" for n in range(10))
"""The `status_class` label by `status // 100`, made once rather than formatted per request."""


_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


def _cached_pid() -> int:
    return _pid


def _use_cached_pid(directory: str) -> None:
    """Make multiprocess values check for a fork against a cached pid.

    prometheus-client calls `os.getpid()` on every increment to notice a fork, a system call
    that cost about 5 % of the event loop under load; the cached pid is refreshed after a fork,
    so the check means the same. Swapped only while this process has written no values: two
    value classes would each map the same files.
    """
    from prometheus_client import values

    if not glob.glob(os.path.join(directory, f"*_{os.getpid()}.db")):
        values.ValueClass = values.MultiProcessValue(_cached_pid)


def _multiproc_dir() -> str:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:  # outside `bentoml serve` (tests, scripts): a private directory
        path = tempfile.mkdtemp(prefix="rtserve-prom-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


class MetricsSettings(BaseSettings):
    """Where and how the Prometheus metrics are served; read when the service starts."""

    model_config = SettingsConfigDict(env_prefix="RTSERVE_METRICS_")

    enabled: bool = True
    """Prometheus metrics; off only to measure what they cost (the canary controller and the statistics
    extension read them)."""
    port: int = Field(3002, ge=0, le=65535)
    """The metrics port: `GET /metrics` answered by `bentoml serve`'s own process, apart from the API and
    at no cost to the workers (Triton's metrics port). 0: no metrics port."""
    host: str = "0.0.0.0"
    """Address the metrics port binds to; Prometheus must reach it, clients of the API need not."""
    on_api_port: bool = False
    """Also answer `GET /metrics` on the API port, from the workers; it then needs a token when auth is on,
    unless `/metrics` is added to RTSERVE_OPEN_PATHS."""
    cache_s: float = Field(1.0, ge=0, le=60)
    """How long a rendered exposition is served again before every worker's files are read anew, so a
    burst of scrapes costs one render; keep it under the scrape interval."""


class Exposition:
    """Every worker's metrics in the Prometheus text format, rendered at most once per `max_age_s`.

    Concurrent callers wait for the one render in progress rather than starting their own. The text
    ends with two lines about the exposition itself: how often it was rendered, and what the last
    render took, where a scrape's cost shows."""

    def __init__(self, directory: str, max_age_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        self.content_type = CONTENT_TYPE_LATEST
        self.max_age_s = max_age_s
        self.renders = 0
        self._clock = clock
        self._registry = CollectorRegistry()
        MultiProcessCollector(self._registry, path=directory)  # re-reads the files on every collect
        self._lock = threading.Lock()
        self._body = b""
        self._rendered_at: float | None = None

    def text(self) -> bytes:
        """The exposition, rendered now unless the last render is younger than `max_age_s` (blocking: read files)."""
        with self._lock:
            if self._rendered_at is None or self._clock() - self._rendered_at >= self.max_age_s:
                self._body = self._render()
                self._rendered_at = self._clock()  # from the end of a render: a slow one is not followed at once
            return self._body

    def _render(self) -> bytes:
        from prometheus_client import generate_latest

        start = time.perf_counter()
        body = generate_latest(self._registry)
        self.renders += 1
        seconds = time.perf_counter() - start
        return body + (
            "# HELP rtserve_metrics_renders_total Expositions rendered by the process answering this scrape\n"
            "# TYPE rtserve_metrics_renders_total counter\n"
            f"rtserve_metrics_renders_total {self.renders}.0\n"
            "# HELP rtserve_metrics_render_seconds How long rendering this exposition took\n"
            "# TYPE rtserve_metrics_render_seconds gauge\n"
            f"rtserve_metrics_render_seconds {seconds!r}\n"
        ).encode()


class Metrics:
    """Every metric of the service; one instance per worker process."""

    def __init__(self, registry: CollectorRegistry | None = None, settings: MetricsSettings | None = None) -> None:
        """`registry`: where the metrics are registered; the default one in a worker, a fresh one per
        in-process test (the values still go to the multiprocess files either way). `settings`: the
        service's; without them the API port serves no exposition, and the one `exposition()` reads is not cached."""
        self.directory = _multiproc_dir()
        _use_cached_pid(self.directory)
        self.on_api_port = settings.on_api_port if settings is not None else False
        self._exposition = Exposition(self.directory, settings.cache_s if settings is not None else 0.0)
        import prometheus_client

        self.tally = Tally()
        registry = registry if registry is not None else prometheus_client.REGISTRY
        Counter = partial(prometheus_client.Counter, registry=registry)  # read as the class
        Gauge = partial(prometheus_client.Gauge, registry=registry)
        Histogram = partial(prometheus_client.Histogram, registry=registry)

        mv = ["model", "version"]
        self.requests = Counter("rtserve_requests", "Requests answered", [*mv, "variant", "status_class", "cache"])
        self.errors = Counter("rtserve_errors", "Error responses by machine-readable code", [*mv, "variant", "code"])
        self.duration = Histogram("rtserve_request_duration_seconds", "End-to-end request latency", [*mv, "variant"], buckets=LATENCY_BUCKETS)
        self.uncached_duration = Histogram(
            "rtserve_uncached_request_duration_seconds",
            "End-to-end latency of requests not answered from the prediction cache: the like-for-like latency canaries are judged on",
            [*mv, "variant"], buckets=LATENCY_BUCKETS,
        )
        self.queue_wait = Histogram("rtserve_queue_wait_seconds", "Time from enqueue to batch start", mv, buckets=LATENCY_BUCKETS)
        self.execution = Histogram("rtserve_model_execution_seconds", "Model call time per batch", mv, buckets=LATENCY_BUCKETS)
        self.batch_size = Histogram("rtserve_batch_size", "Rows per model call", mv, buckets=BATCH_BUCKETS)
        self.batches = Counter("rtserve_batches", "Model calls", mv)
        self.queue_depth = Gauge("rtserve_queue_depth", "Rows waiting", mv, multiprocess_mode="livesum")
        self.queue_capacity = Gauge("rtserve_queue_capacity", "Most rows that may wait", mv, multiprocess_mode="livesum")
        self.inflight = Gauge("rtserve_inflight_requests", "Requests being served", mv, multiprocess_mode="livesum")
        self.load_seconds = Gauge("rtserve_model_load_seconds", "Load and warm-up time", mv, multiprocess_mode="livemax")
        self.load_failures = Counter("rtserve_model_load_failures", "Versions that failed to load", mv)
        self.pulls = Counter("rtserve_model_pulls", "Pull attempts from the model repository, by outcome "
                             "(pulled; attempt_failed: retried after a backoff; failed: gave up)", [*mv, "outcome"])
        self.pull_seconds = Gauge("rtserve_model_pull_seconds", "Time to pull the version into this replica's store",
                                  mv, multiprocess_mode="livemax")
        self.state = Gauge("rtserve_model_version_state", "1 for the version's current state", [*mv, "state"], multiprocess_mode="livemax")
        self.worker_up = Gauge("rtserve_worker_up", "1 while a serving worker lives", multiprocess_mode="livemax")
        self.worker_up.set(1)  # counted by the model repository (pipeline/repository.py) before it holds any model
        self.cache = Counter("rtserve_cache_requests", "Prediction cache lookups", ["tier", "outcome"])
        self.rate_limited = Counter("rtserve_rate_limited", "Requests refused by rate limits", ["tier"])
        self.auth_failures = Counter("rtserve_auth_failures", "Rejected credentials", ["reason"])
        self.redis_up = Gauge("rtserve_redis_up", "1 while Redis answers", multiprocess_mode="livemin")
        self.redis_errors = Counter("rtserve_redis_errors", "Failed Redis calls", ["component"])
        self.canary_decisions = Counter("rtserve_canary_decisions", "Canary controller decisions", ["model", "decision"])
        self.shadow_comparisons = Counter(
            "rtserve_shadow_comparisons", "Mirrored rows by whether the candidate agreed with the primary", [*mv, "outcome"]
        )
        self.background_healthy = Gauge(
            "rtserve_background_task_healthy", "1 while a background task works, 0 while it keeps a stale state", ["task"],
            multiprocess_mode="livemin",
        )
        self.route_weight = Gauge("rtserve_route_weight", "Route weight in percent", mv, multiprocess_mode="mostrecent")
        # What Triton's statistics extension reports and no metric above holds (pipeline/statistics.py).
        self.request_seconds = Counter(
            "rtserve_request_seconds", "Summed end-to-end latency, by the labels of rtserve_requests",
            [*mv, "variant", "status_class", "cache"],
        )
        self.last_request = Gauge(
            "rtserve_last_request_timestamp_seconds", "When the version last answered a request (Unix time)", mv,
            multiprocess_mode="max",
        )
        self.by_priority = Counter("rtserve_requests_by_priority", "Requests queued for the model, by priority level",
                                   [*mv, "priority"])
        self.phase_seconds = Counter(
            "rtserve_request_phase_seconds", "Per request in a batch, the batch's seconds in each phase (input, infer, output)",
            [*mv, "phase"],
        )
        self.batch_executions = Counter("rtserve_batch_executions", "Model calls by exact batch size (rows)", [*mv, "batch_size"])
        self.batch_phase_seconds = Counter(
            "rtserve_batch_phase_seconds", "Model call seconds by exact batch size and phase (input, infer, output)",
            [*mv, "batch_size", "phase"],
        )

    @lru_cache(maxsize=4096)  # noqa: B019 - one instance per process, bounded label space
    def request_children(self, model: str, version: str, variant: str, status_class: str, cache: str) -> tuple[Any, ...]:
        return (
            self.requests.labels(model, version, variant, status_class, cache),
            self.duration.labels(model, version, variant),
            self.request_seconds.labels(model, version, variant, status_class, cache),
            self.last_request.labels(model, version),
            self.uncached_duration.labels(model, version, variant) if cache != "hit" else None,
        )

    def observe_request(self, model: str, version: str, variant: str, status: int, cache: str, seconds: float) -> None:
        counter, histogram, total, last, uncached = self.request_children(model, version, variant, STATUS_CLASS[status // 100], cache)
        self.tally.update(
            ((counter, 1.0), (total, seconds)),
            ((histogram, seconds),) if uncached is None else ((histogram, seconds), (uncached, seconds)),
            ((last, time.time()),),
        )

    def count_error(self, model: str, version: str, variant: str, code: str) -> None:
        self.tally.inc(self.error_child(model, version, variant, code))

    @lru_cache(maxsize=4096)  # noqa: B019
    def error_child(self, model: str, version: str, variant: str, code: str) -> Any:
        return self.errors.labels(model, version, variant, code)

    def exposition(self) -> tuple[bytes, str]:
        """All workers' metrics, added up, in the Prometheus text format, and its content type (blocking)."""
        return self._exposition.text(), self._exposition.content_type


class BatchMetrics:
    """The batcher's view of the metrics for one model version, pre-labelled."""

    def __init__(self, metrics: Metrics, model: str, version: str, capacity: int) -> None:
        self._metrics = metrics
        self._tally = metrics.tally
        self._mv = (model, version)
        self.queue_wait = metrics.queue_wait.labels(model, version)
        self.execution = metrics.execution.labels(model, version)
        self.batch_size = metrics.batch_size.labels(model, version)
        self.batches = metrics.batches.labels(model, version)
        self.queue_depth = metrics.queue_depth.labels(model, version)
        self.inflight = metrics.inflight.labels(model, version)
        self._levels: dict[int, Any] = {}  # level -> its counter child
        self.phases = tuple(metrics.phase_seconds.labels(model, version, phase) for phase in PHASES)
        self._by_size: dict[int, tuple[Any, ...]] = {}
        metrics.queue_capacity.labels(model, version).set(capacity)

    def prioritized(self, level: int) -> None:
        """One request at `level` (0 is priority 1); levels are few, labelled on first use."""
        child = self._levels.get(level)
        if child is None:
            child = self._levels[level] = self._metrics.by_priority.labels(*self._mv, str(level + 1))
        self._tally.inc(child)

    def batch_done(self, calls: list[tuple[int, float, float]], waits: list[float], output_seconds: float) -> None:
        """A batch ran as `calls` (rows, seconds, seconds of those collating its inputs; one call unless its one
        request was larger than the model's batches), and handing each request its outputs took `output_seconds`;
        `waits` are its requests' queue waits."""
        tally = self._tally
        tally.observe_all(self.queue_wait, waits)
        rows = sum(c[0] for c in calls)
        total = [0.0, 0.0, output_seconds]
        for n, seconds, input_seconds in calls:
            tally.inc(self.batches)
            tally.observe(self.batch_size, n)
            tally.observe(self.execution, seconds)
            spent = (input_seconds, seconds - input_seconds, output_seconds * n / rows)  # the hand-off, by rows
            total[0] += input_seconds
            total[1] += seconds - input_seconds
            children = self._by_size.get(n) or self._size_children(n)
            tally.inc(children[0])
            for child, phase in zip(children[1:], spent, strict=True):
                tally.inc(child, phase)
        requests = len(waits)
        for child, phase in zip(self.phases, total, strict=True):
            tally.inc(child, phase * requests)

    def _size_children(self, rows: int) -> tuple[Any, ...]:
        """Labelled once per batch size; the batcher keeps sizes within 1..max_batch_size."""
        m, size = self._metrics, str(rows)
        children = (m.batch_executions.labels(*self._mv, size), *(m.batch_phase_seconds.labels(*self._mv, size, p) for p in PHASES))
        self._by_size[rows] = children
        return children

    def load(self, queued_rows: int, inflight: int) -> None:
        """Queue depth and in-flight requests, set once per batch rather than per request."""
        self._tally.set(self.queue_depth, queued_rows)
        self._tally.set(self.inflight, inflight)
