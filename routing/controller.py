"""The canary controller: watches running canaries and promotes or rolls them back by itself.

Every worker runs the loop; only the holder of the lease acts (a Redis lease across replicas,
a file lock on one machine without Redis), so exactly one controller decides at a time and a
dead holder is replaced once its lease expires. The numbers come from this machine's metrics
(every worker summed), counted from the start of the current step; behind a load balancer
that spreads requests evenly, one replica's traffic is a fair sample of all of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from observability.health import BackgroundHealth
from observability.logs import event
from routing.admin import canary_weights
from routing.audit import AuditLog, record
from routing.canary import CanaryPolicy, judge
from routing.document import CanaryDecision, ModelRoutes
from routing.stats import MetricsSnapshotSource, VersionWindow
from routing.stores import StateStore

if TYPE_CHECKING:
    from observability.metrics import Metrics
    from routing.lease import Lease
    from routing.router import Router

log = logging.getLogger(__name__)
CONTROLLER_TASK = "canary_controller"


class CanaryController:
    def __init__(
        self,
        store: StateStore,
        lease: Lease,
        source: MetricsSnapshotSource,
        router: Router,
        interval_s: float,
        *,
        metrics: Metrics | None = None,
        health: BackgroundHealth | None = None,
        clock: Callable[[], float] = time.time,
        audit: AuditLog | None = None,
    ) -> None:
        self.audit = audit  # its decisions are recorded as the system's
        self.store = store
        self.router = router
        self.clock = clock  # wall-clock seconds: hold times run from step_started_at, which any replica may have written
        self.metrics = metrics
        self.health = health or BackgroundHealth()
        self.lease = lease
        self.source = source
        self.interval_s = interval_s
        # (model, canary version, step) -> snapshot when this controller first saw the step
        self._step_start: dict[tuple[str, str, int], dict[str, VersionWindow]] = {}
        self._baseline: dict[tuple[str, str], VersionWindow] = {}  # stable's numbers of the last judged step
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.lease.held:
            await self.lease.release()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                if not (await self.lease.renew() if self.lease.held else await self.lease.acquire()):
                    continue
                for name, routes in self.router.all_routes().items():
                    if routes.canary is not None and routes.canary.status == "running":
                        await self.check(name)
            except Exception as exc:  # noqa: BLE001 - the controller must outlive any one bad check
                log.debug("canary controller check failed", exc_info=True)
                self.health.failed(CONTROLLER_TASK, f"{type(exc).__name__}: {exc}")
            else:
                self.health.ok(CONTROLLER_TASK)

    async def check(self, name: str) -> None:
        routes = await self.store.get(name)
        if routes is None or routes.canary is None or routes.canary.status != "running":
            return
        c = routes.canary
        snapshot = await asyncio.to_thread(self.source.snapshot, name)
        key = (name, c.version, c.step)
        start = self._step_start.setdefault(key, snapshot)
        empty = VersionWindow()
        stable = snapshot.get(c.stable, empty).minus(start.get(c.stable, empty))
        canary = snapshot.get(c.version, empty).minus(start.get(c.version, empty))
        # A new lease holder counts requests from when it first saw the step; the hold time still runs from its start.
        verdict = judge(CanaryPolicy.of(c), c.step, self.clock() - c.step_started_at, stable, canary,
                        baseline=self._baseline.get((name, c.version)), stable_lifetime=snapshot.get(c.stable))
        if verdict.action == "hold":
            return
        if stable.requests:
            self._baseline[(name, c.version)] = stable
        await self._decide(name, verdict)

    async def _decide(self, name: str, verdict) -> None:
        now = self.clock()
        before: list[ModelRoutes | None] = [None]

        def change(r: ModelRoutes | None) -> ModelRoutes:
            before[0] = r.model_copy(deep=True) if r is not None else None
            c = r.canary
            if c is None or c.status != "running":
                raise _Stale()
            weight = c.steps[c.step] if c.step < len(c.steps) else 100.0
            c.decisions.append(CanaryDecision(at=now, action=verdict.action, step=c.step, weight=weight,
                                              reason=verdict.reason, numbers=verdict.numbers))
            if verdict.action == "advance":
                c.step += 1
                c.step_started_at = now
                r.weights = canary_weights(c.stable, c.version, c.steps[c.step])
            elif verdict.action == "promote":
                c.status = "promoted"
                r.weights = {c.version: 100.0}
                r.loaded = [v for v in r.loaded if v != c.stable]
            elif verdict.action == "rollback":
                c.status = "rolled_back"
                r.weights = {c.stable: 100.0}
                r.loaded = [v for v in r.loaded if v != c.version]
            if c.status != "running" and r.shadow is not None and r.shadow.version == c.version:
                r.shadow = None
            return r

        try:
            routes = await self.store.update(name, change)
        except _Stale:
            return
        await record(self.audit, f"canary_{verdict.action}", name, before[0], routes, verdict.reason)
        level = logging.WARNING if verdict.action == "rollback" else logging.INFO
        event(log, "canary_decision", level=level, model=name, action=verdict.action, reason=verdict.reason, **verdict.numbers)
        if self.metrics is not None:
            self.metrics.canary_decisions.labels(name, verdict.action).inc()
        # Apply here at once rather than on the next sync tick: a rollback should not wait.
        self.router.apply({name: routes})


class _Stale(Exception):
    """The canary changed (aborted, or another controller decided) since it was read."""
