"""What the front ends serve with, handed over by the wiring (app/wiring.py) once per worker.

A front end reads protocol in and writes protocol out; everything else it asks of these parts,
so every protocol answers the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.settings import LimitSettings
from jobs.settings import StreamSettings
from observability.health import BackgroundHealth
from pipeline.catalog import Catalog
from pipeline.dataplane import DataPlane

if TYPE_CHECKING:
    from jobs.runner import JobRunner
    from observability.metrics import Metrics
    from pipeline.deploy import Deployer
    from pipeline.optimize import Optimizer
    from pipeline.repository import ModelRepository
    from pipeline.statistics import ModelStatistics
    from routing.admin import RoutingAdmin


@dataclass
class FrontendParts:
    pipeline: DataPlane
    catalog: Catalog
    limits: LimitSettings
    health: BackgroundHealth
    is_ready: Callable[[], bool]
    """Every configured version loaded and warmed up, and every model's traffic taken by a ready version."""
    readiness: Callable[[], tuple[bool, dict[str, Any]]]
    """(ready, why not: each model that is not ready and why), for callers allowed to see model names."""
    open_paths: re.Pattern[str]
    """Paths answered without a token (health, readiness, metrics)."""
    metrics: Metrics | None = None
    on_request: Callable[[], None] | None = None
    """Called once per request before routing; starts the worker's stats exporter on its loop."""
    before_scrape: Callable[[], None] | None = None
    """Called before metrics or statistics are read, so what this worker counted so far is in them."""
    admin: RoutingAdmin | None = None
    """Set once the shared routing state is reachable; admin calls answer 503 until then."""
    repository: ModelRepository | None = None
    """The model repository extension; set with `admin`."""
    deployer: Deployer | None = None
    """Imports a user's model and loads it in every worker; set with `admin`."""
    optimizer: Optimizer | None = None
    """Makes an optimized version of a stored one and deploys it through `deployer`; set with `admin`."""
    statistics: ModelStatistics | None = None
    """The statistics extension."""
    jobs: JobRunner | None = None
    """Batch jobs (/v2/jobs); None when they are switched off."""
    stream: StreamSettings = field(default_factory=StreamSettings)

    def metrics_current(self) -> None:
        """Before this worker reads the metrics files (/metrics, statistics): its own counts written."""
        if self.before_scrape is not None:
            self.before_scrape()

    @property
    def auth_enabled(self) -> bool:
        return self.pipeline.admission.auth is not None
