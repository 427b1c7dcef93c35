"""Live numbers per model version, read from the Prometheus multiprocess files, for the canary controller.

The controller compares versions on what happened since the current step started, so it keeps
one snapshot from the step's start and subtracts it from each new one (`VersionWindow.minus`).
Reading sums every worker process on this machine, the same way `/metrics` does; it costs a few
milliseconds and runs about once a second in the controller, never on the request path.
Mirrored (shadow) requests are left out of requests, errors and latency: they say nothing about
what clients of the version saw, only how often it agreed with the primary.

Latency comes twice: over every request, and over those not answered from the prediction cache
(`VersionWindow.uncached`). A stable version answers many requests from a warm cache that a new
canary has not filled yet, so only the uncached latency compares the two like for like.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from core.errors import blame_of
from routing.document import Experiment

REQUESTS = "rtserve_requests"
ERRORS = "rtserve_errors"
DURATION = "rtserve_request_duration_seconds"
UNCACHED_DURATION = "rtserve_uncached_request_duration_seconds"
COMPARISONS = "rtserve_shadow_comparisons"
ROUTED = frozenset({"stable", "canary", "experiment"})
"""Variants the router chose. Pinned requests (the client named the version) and mirrored ones say
nothing about how the route's choice fared, and a client must not be able to move canary numbers."""
EXPERIMENT = frozenset({"experiment"})
"""The variant of requests an experiment routed: all that its status counts."""


@dataclass(frozen=True)
class VersionWindow:
    """Counts for one version over some span: cumulative since start, or the difference of two snapshots.

    `bucket_bounds` are the histogram's `le` upper bounds in seconds, ascending, ending with +Inf;
    `bucket_counts` are cumulative, as Prometheus exposes them. Both are empty before any latency
    was observed.
    """

    requests: int = 0
    errors: int = 0
    """The model's own faults only (it raised while running a batch): what the canary is judged on."""
    bucket_bounds: tuple[float, ...] = ()
    bucket_counts: tuple[int, ...] = ()
    agree: int = 0
    disagree: int = 0
    client_errors: int = 0
    """Outcomes a client caused (bad input, its own deadline, leaving early): shown, never judged."""
    shed: int = 0
    """Requests refused to protect latency (queue full, budget, not ready): shown, never judged."""
    internal: int = 0
    """Faults of the request path, not of the model (an exception nobody anticipated): shown, never judged."""
    hits: int = 0
    """Requests answered from the prediction cache."""
    uncached_bounds: tuple[float, ...] = ()
    uncached_counts: tuple[int, ...] = ()
    """The latency histogram of the requests not answered from the cache, shaped like bucket_bounds/bucket_counts."""

    def __post_init__(self) -> None:
        for bounds, counts in ((self.bucket_bounds, self.bucket_counts), (self.uncached_bounds, self.uncached_counts)):
            if len(bounds) != len(counts):
                raise ValueError("bucket bounds and counts differ in length")
            if bounds and (bounds[-1] != math.inf or list(bounds) != sorted(bounds)):
                raise ValueError("bucket bounds must ascend and end with +Inf")

    def uncached(self) -> VersionWindow:
        """The same window with its latency taken over the requests the model answered, not the cache."""
        return replace(self, bucket_bounds=self.uncached_bounds, bucket_counts=self.uncached_counts,
                       uncached_bounds=(), uncached_counts=())

    @property
    def comparisons(self) -> int:
        return self.agree + self.disagree

    @property
    def observations(self) -> int:
        """Latency observations (the +Inf bucket); may trail `requests` by a request read in between."""
        return self.bucket_counts[-1] if self.bucket_counts else 0

    def error_rate(self) -> float:
        """Server-fault share of the responses; 0 without requests, so an idle version is never 'failing'."""
        return self.errors / self.requests if self.requests else 0.0

    def disagreement(self) -> float | None:
        """Share of mirrored rows whose label differed from the primary's; None without comparisons."""
        return self.disagree / self.comparisons if self.comparisons else None

    def quantile_ms(self, q: float) -> float | None:
        """The q-quantile in ms, computed like PromQL's histogram_quantile; None without observations.

        Linear inside the bucket that holds the rank (the first bucket starts at 0); a rank in the
        +Inf bucket answers the largest finite bound, as PromQL does.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError("q must lie in [0, 1]")
        total = self.observations
        if total <= 0 or len(self.bucket_bounds) < 2:
            return None
        counts = _monotonic(self.bucket_counts)
        rank = q * total
        b = next(i for i, c in enumerate(counts) if c >= rank)
        if b == len(counts) - 1:
            return self.bucket_bounds[-2] * 1000.0
        upper = self.bucket_bounds[b]
        if b == 0 and upper <= 0:
            return upper * 1000.0
        lower, below = (self.bucket_bounds[b - 1], counts[b - 1]) if b > 0 else (0.0, 0)
        inside = counts[b] - below
        return (lower + (upper - lower) * ((rank - below) / inside)) * 1000.0

    def p95_ms(self) -> float | None:
        return self.quantile_ms(0.95)

    def count_above_ms(self, limit_ms: float) -> float:
        """Observations slower than `limit_ms`, interpolated inside buckets the same way as `quantile_ms`.

        So `count_above_ms(x) > 5 % of observations` exactly when `p95_ms() > x` (up to bucket
        edges). Observations in the +Inf bucket count as at most the largest finite bound.
        """
        if self.observations <= 0 or len(self.bucket_bounds) < 2:
            return 0.0
        counts = _monotonic(self.bucket_counts)
        limit = limit_ms / 1000.0
        lower, below = 0.0, 0
        for upper, cum in zip(self.bucket_bounds[:-1], counts[:-1], strict=True):
            if limit < upper:
                at_limit = below + (cum - below) * max(0.0, limit - lower) / (upper - lower) if upper > lower else below
                return counts[-1] - at_limit
            lower, below = upper, cum
        return 0.0

    def minus(self, earlier: VersionWindow) -> VersionWindow:
        """What happened since `earlier`; if any count went down the counters were reset, so all of self is new."""
        if (earlier.bucket_bounds and earlier.bucket_bounds != self.bucket_bounds
                or earlier.uncached_bounds and earlier.uncached_bounds != self.uncached_bounds):
            return self
        earlier_counts = earlier.bucket_counts or (0,) * len(self.bucket_counts)
        earlier_uncached = earlier.uncached_counts or (0,) * len(self.uncached_counts)
        pairs = [
            (self.hits, earlier.hits),
            *zip(self.uncached_counts, earlier_uncached, strict=True),
            (self.requests, earlier.requests),
            (self.errors, earlier.errors),
            (self.agree, earlier.agree),
            (self.disagree, earlier.disagree),
            (self.client_errors, earlier.client_errors),
            (self.shed, earlier.shed),
            (self.internal, earlier.internal),
            *zip(self.bucket_counts, earlier_counts, strict=True),
        ]
        if any(now < then for now, then in pairs):
            return self
        return VersionWindow(
            requests=self.requests - earlier.requests,
            errors=self.errors - earlier.errors,
            bucket_bounds=self.bucket_bounds,
            bucket_counts=tuple(now - then for now, then in zip(self.bucket_counts, earlier_counts, strict=True)),
            agree=self.agree - earlier.agree,
            disagree=self.disagree - earlier.disagree,
            client_errors=self.client_errors - earlier.client_errors,
            shed=self.shed - earlier.shed,
            internal=self.internal - earlier.internal,
            hits=self.hits - earlier.hits,
            uncached_bounds=self.uncached_bounds,
            uncached_counts=tuple(now - then for now, then in zip(self.uncached_counts, earlier_uncached, strict=True)),
        )


def _monotonic(counts: tuple[int, ...]) -> list[int]:
    """Cumulative counts never fall; a non-atomic read could make them, so take the running maximum."""
    out: list[int] = []
    top = 0
    for c in counts:
        top = max(top, c)
        out.append(top)
    return out


@dataclass
class _Tally:
    requests: int = 0
    errors: int = 0
    buckets: dict[float, int] = field(default_factory=dict)
    agree: int = 0
    disagree: int = 0
    client_errors: int = 0
    shed: int = 0
    internal: int = 0
    hits: int = 0
    uncached: dict[float, int] = field(default_factory=dict)

    def window(self) -> VersionWindow:
        bounds = tuple(sorted(self.buckets))
        uncached_bounds = tuple(sorted(self.uncached))
        return VersionWindow(
            requests=self.requests,
            errors=self.errors,
            bucket_bounds=bounds,
            bucket_counts=tuple(self.buckets[b] for b in bounds),
            agree=self.agree,
            disagree=self.disagree,
            client_errors=self.client_errors,
            shed=self.shed,
            internal=self.internal,
            hits=self.hits,
            uncached_bounds=uncached_bounds,
            uncached_counts=tuple(self.uncached[b] for b in uncached_bounds),
        )


class MetricsSnapshotSource:
    """Cumulative per-version numbers of one model, summed over every worker writing to `directory`."""

    def __init__(self, directory: str | Path) -> None:
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        self.directory = Path(directory)
        self._registry = CollectorRegistry()
        MultiProcessCollector(self._registry, path=str(self.directory))  # re-reads the files on every collect

    def snapshot(self, model: str, variants: frozenset[str] = ROUTED) -> dict[str, VersionWindow]:
        """version -> counts since the files were created of requests routed as one of `variants`;
        versions without any sample are absent."""
        tallies: dict[str, _Tally] = {}

        def tally(version: str) -> _Tally:
            return tallies.setdefault(version, _Tally())

        for family in self._registry.collect():
            if family.name not in (REQUESTS, ERRORS, DURATION, UNCACHED_DURATION, COMPARISONS):
                continue
            for sample in family.samples:
                labels = sample.labels
                if labels.get("model") != model:
                    continue
                value = round(sample.value)
                routed = labels.get("variant") in variants
                if sample.name == REQUESTS + "_total" and routed:
                    t = tally(labels["version"])
                    t.requests += value
                    if labels.get("cache") == "hit":
                        t.hits += value
                elif sample.name == ERRORS + "_total" and routed:
                    t = tally(labels["version"])
                    blame = blame_of(labels.get("code", ""))
                    if blame == "model":
                        t.errors += value
                    elif blame == "shed":
                        t.shed += value
                    elif blame == "internal":
                        t.internal += value
                    else:
                        t.client_errors += value
                elif sample.name == DURATION + "_bucket" and routed:
                    buckets = tally(labels["version"]).buckets
                    le = float(labels["le"])
                    buckets[le] = buckets.get(le, 0) + value
                elif sample.name == UNCACHED_DURATION + "_bucket" and routed:
                    buckets = tally(labels["version"]).uncached
                    le = float(labels["le"])
                    buckets[le] = buckets.get(le, 0) + value
                elif sample.name == COMPARISONS + "_total":
                    t = tally(labels["version"])
                    if labels.get("outcome") == "agree":
                        t.agree += value
                    elif labels.get("outcome") == "disagree":
                        t.disagree += value
        return {version: t.window() for version, t in tallies.items()}


class ExperimentCounts:
    """An experiment's numbers on this machine, starting at zero when it starts.

    Only requests the experiment routed count, less what the counters held when it began (an earlier
    experiment's traffic, mirrored comparisons of a canary): the first worker here to see a new experiment,
    before it routes by it, records the counters in a file beside the metrics, and every worker subtracts
    that record. A record names its experiment, so a later one is measured afresh."""

    def __init__(self, source: MetricsSnapshotSource) -> None:
        self.source = source

    def since_start(self, model: str, experiment: Experiment) -> dict[str, VersionWindow]:
        now = self.source.snapshot(model, EXPERIMENT)
        start = self.mark(model, experiment)
        return {version: w.minus(start[version]) if version in start else w for version, w in now.items()}

    def mark(self, model: str, experiment: Experiment) -> dict[str, VersionWindow]:
        """The counters when `experiment` started here, recorded now if no worker has yet (the first record stays)."""
        key = json.dumps([model, experiment.name, experiment.started_at])
        path = self.source.directory / f"experiment-{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"
        if not path.exists():
            start = self.source.snapshot(model, EXPERIMENT)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.{id(start)}.tmp")
            tmp.write_text(json.dumps({v: asdict(w) for v, w in start.items()}))
            try:
                os.link(tmp, path)  # fails if another worker recorded it first: theirs is the earlier one
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        windows = json.loads(path.read_text())
        tuples = ("bucket_bounds", "bucket_counts", "uncached_bounds", "uncached_counts")
        return {v: VersionWindow(**{**w, **{k: tuple(w[k]) for k in tuples if k in w}}) for v, w in windows.items()}
