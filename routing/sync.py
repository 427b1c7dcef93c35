"""Keeps one worker in line with the shared routing state: its router, and which versions it holds.

On every change (pub/sub or the revision poll), the router is rebuilt and the worker loads
versions that were added (in the background: they take traffic only once warmed up) and
drains then frees versions that were removed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from observability.health import BackgroundHealth
from observability.logs import event
from routing.audit import AuditLog, record
from routing.document import ModelRoutes
from routing.reconcile import merger
from routing.stores import StateStore
from routing.watcher import StateWatcher
from runners.registry import VersionState

if TYPE_CHECKING:
    from observability.metrics import Metrics
    from routing.router import Router
    from routing.stats import ExperimentCounts
    from runners.registry import ModelRegistry

log = logging.getLogger(__name__)


class RouteSync:
    def __init__(
        self,
        store: StateStore,
        router: Router,
        registry: ModelRegistry,
        interval_s: float,
        *,
        metrics: Metrics | None = None,
        on_unloaded: Callable[[str, str], object] | None = None,
        health: BackgroundHealth | None = None,
        experiments: ExperimentCounts | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.audit = audit  # what the start-up merge of serving.yaml changes is recorded there
        self.store = store
        self.router = router
        self.registry = registry
        self.metrics = metrics
        self.on_unloaded = on_unloaded  # e.g. the prediction cache forgetting the version's entries
        self.health = health
        self.experiments = experiments  # records where each new experiment's counts start, before it routes here
        self.interval_s = interval_s
        self._busy: set[tuple[str, str]] = set()  # versions being loaded or unloaded by this worker
        self._tasks: set[asyncio.Task] = set()
        self.watcher: StateWatcher | None = None
        self.configured: set[str] = set(registry.config.models)

    async def start(self, configured: dict[str, ModelRoutes]) -> None:
        """Merge serving.yaml's routes into the shared state (routing/reconcile.py), apply it, then watch it."""
        self.configured = set(configured)
        notes: list[str] = []
        before: dict[str, ModelRoutes | None] = {}
        written = await self.store.merge(merger(configured, notes, before))
        for note in notes:  # only the worker whose merge wrote them; the others found nothing left to change
            log.warning("serving.yaml and the saved routing state (%s) differ: %s", self.store.source, note)
        for name, doc in written.items():
            detail = "; ".join(n for n in notes if n.startswith(f"{name}: ")) or None
            await record(self.audit, "serving_yaml", name, before.get(name), doc, detail)
        await self.apply(await self.store.get_all())
        self.watcher = StateWatcher(self.store, self.apply, interval_s=self.interval_s, health=self.health)
        await self.watcher.start()

    async def stop(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()

    async def apply(self, routes: dict[str, ModelRoutes]) -> None:
        """Configured models, and models loaded at runtime; a configured model serving.yaml no longer lists is not served."""
        known = {name: r for name, r in routes.items() if name in self.configured or r.origin == "runtime"}
        before = self.router.all_routes()
        if self.experiments is not None:
            for name, r in known.items():
                previous = before[name].experiment if name in before else None
                if r.experiment is not None and r.experiment != previous:
                    await asyncio.to_thread(self.experiments.mark, name, r.experiment)
        self.router.apply(known)
        for name, r in known.items():
            if name not in before or before[name].weights != r.weights:
                event(log, "weights", model=name, weights=r.weights, revision=r.revision)
        for name, r in known.items():
            held = dict(self.registry.versions(name)) if name in self.registry.names() else {}
            for version in r.loaded:
                if version not in held and (name, version) not in self._busy:
                    self._spawn(name, version, self._load(name, version))
            for version, entry in list(held.items()):
                if version not in r.loaded and entry.state is not VersionState.LOADING and (name, version) not in self._busy:
                    self._spawn(name, version, self._unload(name, version))
            if self.metrics is not None:
                for version in set(r.loaded) | set(held):
                    self.metrics.route_weight.labels(name, version).set(r.weights.get(version, 0.0))
        for name in set(self.registry.names()) - set(known) - self.configured:  # a runtime model removed from the state
            self.router.forget(name)
            for version, entry in list(self.registry.versions(name).items()):
                if entry.state is not VersionState.LOADING and (name, version) not in self._busy:
                    self._spawn(name, version, self._unload(name, version))

    def _spawn(self, name: str, version: str, work) -> None:
        self._busy.add((name, version))
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            self._busy.discard((name, version))
            if not t.cancelled() and t.exception() is not None:
                log.error("route sync of %s:%s failed: %s", name, version, t.exception())

        task.add_done_callback(done)

    async def _load(self, name: str, version: str) -> None:
        await asyncio.to_thread(self.registry.load, name, version)

    async def _unload(self, name: str, version: str) -> None:
        await self.registry.unload(name, version)
        if self.on_unloaded is not None:
            self.on_unloaded(name, version)
