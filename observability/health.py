"""Liveness of the worker's background tasks (route watcher, route sync, canary controller).

A background task that meets bad data keeps running on its last good state; this is where it
says so. Each failure streak is logged once, the `rtserve_background_task_healthy` gauge shows
it to alerts, and the readiness document lists it, without failing readiness: serving goes on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from observability.metrics import Metrics

log = logging.getLogger(__name__)


class BackgroundHealth:
    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self._problems: dict[str, str | None] = {}

    def ok(self, task: str) -> None:
        if self._problems.get(task, "") is None:
            return
        if self._problems.get(task):
            log.warning("background task %s recovered", task)
        self._set(task, None)

    def failed(self, task: str, problem: str) -> None:
        """Record that `task` could not do its work; logged once per streak, not per attempt."""
        if not self._problems.get(task):
            log.error("background task %s failing, keeping its last good state: %s", task, problem)
        self._set(task, problem)

    def _set(self, task: str, problem: str | None) -> None:
        self._problems[task] = problem
        if self.metrics is not None:
            self.metrics.background_healthy.labels(task).set(0 if problem else 1)

    def report(self) -> dict[str, str]:
        """task -> "ok" or what is wrong, for the health document."""
        return {task: problem or "ok" for task, problem in sorted(self._problems.items())}
