"""Job metrics: jobs by the state they reach, jobs queued and running, rows answered (rate() is rows per second)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


class JobMetrics:
    """Create after `observability.metrics.Metrics`, which puts prometheus-client in multiprocess mode:
    the values then land in the files /metrics adds up, whichever registry holds the objects."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        import prometheus_client

        registry = registry if registry is not None else prometheus_client.CollectorRegistry()
        self.jobs = prometheus_client.Counter("rtserve_jobs", "Batch jobs by the state they reached", ["state"],
                                              registry=registry)
        self.active = prometheus_client.Gauge("rtserve_jobs_active", "Jobs queued or running", ["state"],
                                              multiprocess_mode="livesum", registry=registry)
        self.rows = prometheus_client.Counter("rtserve_job_rows", "Job rows answered, with outputs (ok) or an error",
                                              ["model", "version", "outcome"], registry=registry)
