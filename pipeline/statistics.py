"""Triton's statistics extension: per model version, what this replica's workers did, summed.

    statistics = ModelStatistics(registry, metrics_directory)
    statistics.read(name: str | None = None, version: str | None = None) -> list[VersionStats]

`read` is blocking (it reads every worker's Prometheus multiprocess files, a few milliseconds): call it
with `asyncio.to_thread`. `name=None` covers every served model, `version=None` every version of the
model this worker knows; an unknown model or version raises `ModelNotFound` (404), and without metrics
(`RTSERVE_METRICS_ENABLED=false`) it raises `Unavailable` (503). The answer is plain data in Triton's
terms (`VersionStats`, `Duration`, `BatchStats`): the REST front end renders Triton's JSON, the gRPC
front end fills `ModelStatistics` messages.

Where each number comes from (observability/metrics.py); mirrored (shadow) requests count, they ran too:
- success / fail: requests answered 2xx / otherwise (`rtserve_requests_total`) and their summed
  end-to-end latency (`rtserve_request_seconds_total`).
- cache_hit / cache_miss: requests by prediction-cache outcome and their whole latency (the lookup
  alone is not timed).
- queue: each request's wait from enqueue to the start of its batch (`rtserve_queue_wait_seconds`).
- compute_input / compute_infer / compute_output: per request, its batch's collating of inputs, model
  call and hand-off of outputs (`rtserve_request_phase_seconds_total`); requests of batches that ran.
- inference_count: rows of batches that ran (`rtserve_batch_size_sum`); execution_count: batches.
- batch_stats: per exact batch size (rows), model calls and their seconds per phase.
- last_inference: milliseconds since the epoch of the version's last answer, 0 before any.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ModelNotFound, Unavailable, shown
from runners.registry import ModelRegistry


@dataclass(frozen=True)
class Duration:
    """How many, and their summed time in nanoseconds (Triton's StatisticDuration)."""

    count: int = 0
    ns: int = 0


@dataclass(frozen=True)
class BatchStats:
    """Model calls of one batch size (rows): each phase's count and time."""

    batch_size: int
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration


@dataclass(frozen=True)
class VersionStats:
    name: str
    version: str
    last_inference: int
    """Milliseconds since the epoch of the last answered request; 0 before any."""
    inference_count: int
    execution_count: int
    success: Duration
    fail: Duration
    queue: Duration
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration
    cache_hit: Duration
    cache_miss: Duration
    batch_stats: tuple[BatchStats, ...]


REQUESTS = "rtserve_requests_total"
REQUEST_SECONDS = "rtserve_request_seconds_total"
QUEUE_COUNT = "rtserve_queue_wait_seconds_count"
QUEUE_SUM = "rtserve_queue_wait_seconds_sum"
PHASE_SECONDS = "rtserve_request_phase_seconds_total"
ROWS = "rtserve_batch_size_sum"
BATCHES = "rtserve_batches_total"
SIZE_CALLS = "rtserve_batch_executions_total"
SIZE_PHASE_SECONDS = "rtserve_batch_phase_seconds_total"
LAST = "rtserve_last_request_timestamp_seconds"
_SAMPLES = frozenset({REQUESTS, REQUEST_SECONDS, QUEUE_COUNT, QUEUE_SUM, PHASE_SECONDS, ROWS, BATCHES, SIZE_CALLS,
                      SIZE_PHASE_SECONDS, LAST})


@dataclass
class _Tally:
    counts: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    size_calls: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    size_seconds: dict[tuple[int, str], float] = field(default_factory=lambda: defaultdict(float))
    last: float = 0.0

    def add(self, sample: str, labels: dict[str, str], value: float) -> None:
        if sample in (REQUESTS, REQUEST_SECONDS):
            into = self.counts if sample == REQUESTS else self.seconds
            into["success" if labels.get("status_class") == "2xx" else "fail"] += value
            if labels.get("cache") in ("hit", "miss"):
                into[f"cache_{labels['cache']}"] += value
        elif sample == QUEUE_COUNT:
            self.counts["queue"] += value
        elif sample == QUEUE_SUM:
            self.seconds["queue"] += value
        elif sample == PHASE_SECONDS:
            self.seconds[f"compute_{labels['phase']}"] += value
        elif sample in (ROWS, BATCHES):
            self.counts[sample] += value
        elif sample == SIZE_CALLS:
            self.size_calls[int(labels["batch_size"])] += value
        elif sample == SIZE_PHASE_SECONDS:
            self.size_seconds[int(labels["batch_size"]), labels["phase"]] += value
        elif sample == LAST:
            self.last = max(self.last, value)

    def stats(self, name: str, version: str) -> VersionStats:
        def duration(what: str, count: float | None = None) -> Duration:
            return Duration(round(self.counts[what] if count is None else count), round(self.seconds[what] * 1e9))

        computed = self.counts["queue"]  # one queue wait per request of a batch that ran
        return VersionStats(
            name=name,
            version=version,
            last_inference=round(self.last * 1000),
            inference_count=round(self.counts[ROWS]),
            execution_count=round(self.counts[BATCHES]),
            success=duration("success"),
            fail=duration("fail"),
            queue=duration("queue"),
            compute_input=duration("compute_input", computed),
            compute_infer=duration("compute_infer", computed),
            compute_output=duration("compute_output", computed),
            cache_hit=duration("cache_hit"),
            cache_miss=duration("cache_miss"),
            batch_stats=tuple(
                BatchStats(size, *(Duration(round(calls), round(self.size_seconds[size, p] * 1e9))
                                   for p in ("input", "infer", "output")))
                for size, calls in sorted(self.size_calls.items())
            ),
        )


class ModelStatistics:
    def __init__(self, registry: ModelRegistry, directory: str | Path | None) -> None:
        """`directory`: the Prometheus multiprocess directory every worker writes to; None without metrics."""
        self.registry = registry
        self._collector = None
        if directory is not None:
            from prometheus_client import CollectorRegistry
            from prometheus_client.multiprocess import MultiProcessCollector

            self._collector = CollectorRegistry()
            MultiProcessCollector(self._collector, path=str(directory))  # re-reads the files on every collect

    def read(self, name: str | None = None, version: str | None = None) -> list[VersionStats]:
        """Statistics of one version, every version of a model, or every served version (see the module docstring)."""
        wanted = self._versions(name, version)
        if self._collector is None:
            raise Unavailable("statistics come from the metrics, which are off (RTSERVE_METRICS_ENABLED=false)")
        tallies = {key: _Tally() for key in wanted}
        for family in self._collector.collect():
            for sample in family.samples:
                if sample.name in _SAMPLES:
                    tally = tallies.get((sample.labels.get("model"), sample.labels.get("version")))
                    if tally is not None:
                        tally.add(sample.name, sample.labels, sample.value)
        return [tally.stats(*key) for key, tally in tallies.items()]

    def _versions(self, name: str | None, version: str | None) -> list[tuple[str, str]]:
        if name is None:
            return [(n, v) for n in sorted(self.registry.names()) for v in sorted(self.registry.versions(n))]
        known = self.registry.versions(name)
        if version is None:
            return [(name, v) for v in sorted(known)]
        if version not in known:
            raise ModelNotFound(f"model {shown(name)} has no version {shown(version)}")
        return [(name, version)]
