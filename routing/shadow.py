"""Shadow traffic: a fraction of requests also runs on a candidate version, off the client's path.

The client gets the primary's answer and never waits for the shadow. Each mirrored row of a model
with labels is compared with the primary's label; agreement feeds the experiment and canary numbers
(`rtserve_shadow_comparisons_total`), and the shadow's own latency and errors are recorded
under variant "shadow", which the canary analysis leaves out.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING

import numpy as np

from core.errors import ServingError
from runners.registry import VersionState
from runners.rows import Rows

if TYPE_CHECKING:
    from observability.metrics import Metrics
    from routing.router import Router
    from runners.registry import ModelRegistry

log = logging.getLogger(__name__)


class ShadowMirror:
    def __init__(self, router: Router, registry: ModelRegistry, metrics: Metrics | None, max_pending: int = 64) -> None:
        self.router = router
        self.registry = registry
        self.metrics = metrics
        self.max_pending = max_pending  # a slow candidate sheds mirrored work, never queues it without bound
        self._pending: set[asyncio.Task] = set()

    def maybe_mirror(self, name: str, served: str, rows: Rows, primary: dict[str, np.ndarray]) -> None:
        target = self.router.shadow(name)
        if target is None or target[0] == served or random.random() >= target[1]:
            return
        if len(self._pending) >= self.max_pending:
            return
        entry = self.registry.versions(name).get(target[0])
        if entry is None or entry.state is not VersionState.READY:
            return
        task = asyncio.get_running_loop().create_task(self._compare(entry, rows, primary.get("label")))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _compare(self, entry, rows: Rows, primary_labels: np.ndarray | None) -> None:
        """The shadow's latency and errors; its agreement with the primary's labels when the model has labels."""
        metrics, batcher = self.metrics, entry.batcher
        if batcher is None:  # unloaded between the request and this task's start: nothing to compare
            return
        start = time.perf_counter()
        entry.active += 1
        try:
            outputs = await batcher.submit(rows)
        except ServingError as exc:
            if metrics is not None:
                metrics.observe_request(entry.name, entry.version, "shadow", exc.status.value, "bypass", time.perf_counter() - start)
            return
        finally:
            entry.active -= 1
        if metrics is None:
            return
        metrics.observe_request(entry.name, entry.version, "shadow", 200, "bypass", time.perf_counter() - start)
        if primary_labels is None or "label" not in outputs:
            return
        agree = int(np.count_nonzero(outputs["label"] == primary_labels))
        if agree:
            metrics.shadow_comparisons.labels(entry.name, entry.version, "agree").inc(agree)
        if agree < len(primary_labels):
            metrics.shadow_comparisons.labels(entry.name, entry.version, "disagree").inc(len(primary_labels) - agree)
