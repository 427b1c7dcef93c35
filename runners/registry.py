"""The model versions this process serves, their runners, batchers and load state."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.errors import ModelNotFound, ModelNotReady, ModeNotSupported, shown
from models.store import exists, modes_of
from observability.logs import event
from observability.tracing import DISABLED, Tracer
from runners.base import Runner
from runners.batcher import AdaptiveBatcher
from runners.loader import load_runner
from runners.memory import trim_heap
from runners.settings import ServingConfig

if TYPE_CHECKING:
    import bentoml

    from models.remote import ObjectRepository
    from observability.metrics import Metrics

log = logging.getLogger(__name__)


class VersionState(str, enum.Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


@dataclass(eq=False)
class LoadedVersion:
    name: str
    version: str
    state: VersionState = VersionState.LOADING
    runner: Runner | None = None
    batcher: AdaptiveBatcher | None = None
    load_seconds: float | None = None
    error: str | None = None
    generation: int = 0
    """When the store's copy was created (µs): a rebuilt version with the same tag gets a new one."""
    active: int = 0
    """Requests that resolved to this version and have not been answered yet; unloading waits for 0."""
    modes: tuple[str, ...] = ()
    """Inference modes the version declares in its metadata (real_time, batch, streaming)."""
    waiting: str | None = None
    """What a loading version waits for before it can load (its pull from the model repository), for operators."""
    warning: str | None = None
    """What an operator should know about a loaded version: one call costs more than its latency budget."""

    @property
    def tag(self) -> str:
        return f"{self.name}:{self.version}"


def over_budget(name: str, timings: list[tuple[int, float]], max_latency_ms: float) -> str | None:
    """Why every request of a version would be refused (503), or None: warm-up's cheapest call (one row, or the
    model's fixed batch, at the shortest length) already took longer than the whole budget from enqueue to
    result. The budget stays the operator's: this only says what to raise."""
    if not timings:
        return None
    cheapest_ms = min(seconds for _, seconds in timings) * 1000
    if cheapest_ms <= max_latency_ms:
        return None
    return (f"one call of its smallest warm-up batch took {cheapest_ms:.1f} ms, over its max_latency_ms of "
            f"{max_latency_ms:g} ms: every request will be refused (503) until that budget is raised, in its "
            f"model.yaml (batching: {{max_latency_ms: ...}}) or in serving.yaml (models.{name}.batching.max_latency_ms)")


class ModelRegistry:
    def __init__(self, config: ServingConfig, metrics: Metrics | None = None, tracer: Tracer = DISABLED,
                 remote: ObjectRepository | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.tracer = tracer
        self.remote = remote  # the model repository versions missing from this replica's store are pulled from
        # Configured versions are known (loading) from the start: a worker that accepts requests before
        # its loader reaches a version answers 503 model_not_ready for it, not 404.
        self._models: dict[str, dict[str, LoadedVersion]] = {
            name: {v: LoadedVersion(name, v) for v in cfg.versions} for name, cfg in config.models.items()
        }
        self._runners: dict[str, Runner] = {}
        self.trimming: asyncio.Future[bool] | None = None
        """The heap trim after the last unload (`runners.memory`), running off the event loop: an unload does not
        wait for it, so its caller's clean-up (the version's cached answers) follows at once; await it to measure
        the memory an unload gave back."""
        # Readiness covers the versions configured at start that are still meant to be loaded;
        # versions loaded later through the admin API never make the process unready.
        self.expected: dict[str, set[str]] = {name: set(cfg.versions) for name, cfg in config.models.items()}

    def load(self, name: str, version: str) -> LoadedVersion:
        """Load, warm up and put a batcher in front of one version; blocking, so call it off the event loop."""
        entry = LoadedVersion(name, version)
        self._models.setdefault(name, {})[version] = entry
        configured = self.config.models.get(name)
        if configured is not None and version in configured.versions:  # back after an unload (routes reset)
            self.expected.setdefault(name, set()).add(version)
        self.set_state(entry, VersionState.LOADING)
        start = time.perf_counter()
        try:
            self._pull(entry)
            runner = load_runner(entry.tag, self.config.batch_settings(name).device, self._runners, self._threads_of)
            settings = self.config.batch_settings(name, runner.metadata.get("batch_settings"))
            if not runner.batching:  # a fixed batch size: every request runs on its own
                settings = settings.model_copy(update={"max_batch_size": max(runner.input_spec.shape[0], 1)})
            timings = runner.warmup((1, settings.max_batch_size), tuple(settings.warmup_lengths))
            batcher = AdaptiveBatcher(runner, settings, self._batch_metrics(entry, settings.max_queue_rows), self.tracer)
            batcher.learn(timings)
            warning = over_budget(name, timings, settings.max_latency_ms)
        except Exception as exc:  # noqa: BLE001 - a broken model must not take the process down
            entry.error = f"{type(exc).__name__}: {exc}"
            self.set_state(entry, VersionState.FAILED)
            if self.metrics is not None:
                self.metrics.load_failures.labels(name, version).inc()
            event(log, "load_failed", level=logging.ERROR, model=name, version=version, error=entry.error)
            return entry
        entry.runner, entry.batcher, entry.modes, entry.warning = runner, batcher, modes_of(runner.metadata), warning
        entry.generation = int(runner.model.info.creation_time.timestamp() * 1e6)
        entry.load_seconds = time.perf_counter() - start
        if self.metrics is not None:
            self.metrics.load_seconds.labels(name, version).set(entry.load_seconds)
        self.set_state(entry, VersionState.READY)
        event(log, "load", model=name, version=version, device=runner.device, seconds=round(entry.load_seconds, 3))
        if warning is not None:
            event(log, "load_over_budget", level=logging.WARNING, model=name, version=version, warning=warning)
        return entry

    def _threads_of(self, model: bentoml.Model) -> int | None:
        """A stored model's own `intra_op_threads` (its model.yaml's, or serving.yaml's per model), or None for the
        worker's."""
        return self.config.batch_settings(model.tag.name, model.info.metadata.get("batch_settings")).intra_op_threads

    def _pull(self, entry: LoadedVersion) -> None:
        """Bring a version this replica's store lacks from the model repository; the version stays LOADING (no
        traffic) and says what it waits for meanwhile."""
        if self.remote is None or exists(entry.tag):
            return
        entry.waiting = f"waiting for its pull from {self.remote.url}"
        start = time.perf_counter()

        def retried(attempt: int, error: Exception) -> None:
            entry.waiting = f"waiting for its pull from {self.remote.url} (attempt {attempt} failed: {type(error).__name__}: {error})"
            if self.metrics is not None:
                self.metrics.pulls.labels(entry.name, entry.version, "attempt_failed").inc()

        try:
            pulled = self.remote.pull(entry.name, entry.version, on_retry=retried)
        except Exception:
            if self.metrics is not None:
                self.metrics.pulls.labels(entry.name, entry.version, "failed").inc()
            raise
        finally:
            entry.waiting = None
        if self.metrics is not None and pulled:
            self.metrics.pulls.labels(entry.name, entry.version, "pulled").inc()
            self.metrics.pull_seconds.labels(entry.name, entry.version).set(time.perf_counter() - start)

    def set_state(self, entry: LoadedVersion, state: VersionState) -> None:
        entry.state = state
        if self.metrics is not None:
            for s in VersionState:
                self.metrics.state.labels(entry.name, entry.version, s.value).set(1 if s is state else 0)

    def _batch_metrics(self, entry: LoadedVersion, capacity: int):
        if self.metrics is None:
            return None
        from observability.metrics import BatchMetrics

        return BatchMetrics(self.metrics, entry.name, entry.version, capacity)

    def load_configured(self) -> None:
        """Every version serving.yaml lists, one after another; a line before and after, and one per version
        (`load`), so a start that takes a while is never silent."""
        versions = [(name, version) for name, cfg in self.config.models.items() for version in cfg.versions]
        log.info("loading %d model versions from the configuration: %s", len(versions),
                 ", ".join(f"{name}:{version}" for name, version in versions))
        started = time.perf_counter()
        failed = [f"{name}:{version}" for name, version in versions if self.load(name, version).state is VersionState.FAILED]
        log.info("loaded %d of %d model versions in %.1f s%s", len(versions) - len(failed), len(versions),
                 time.perf_counter() - started, f"; failed: {', '.join(failed)}" if failed else "")

    async def unload(self, name: str, version: str, poll_s: float = 0.02) -> None:
        """Stop routing to the version, let its in-flight requests finish, then free it; its memory goes back to the
        system in the background (`trimming`)."""
        entry = self.get(name, version)
        self.expected.get(name, set()).discard(version)
        if entry.state is VersionState.READY:
            self.set_state(entry, VersionState.DRAINING)
        while entry.active or (entry.batcher is not None and (entry.batcher.queued_rows or entry.batcher.running)):
            await asyncio.sleep(poll_s)
        if entry.batcher is not None:
            entry.batcher.close()
        if self._models.get(name, {}).get(version) is entry:
            del self._models[name][version]
            if not self._models[name] and name not in self.config.models:  # a runtime model's last version
                del self._models[name]
        if entry.runner is not None and not self._is_member(entry.runner):
            self._runners.pop(entry.tag, None)  # a later load reads the store again
        entry.runner = entry.batcher = None  # whoever still holds the entry holds no model
        if self.metrics is not None:
            for s in VersionState:
                self.metrics.state.labels(name, version, s.value).set(0)
        event(log, "unload", model=name, version=version)
        self.trimming = asyncio.get_running_loop().run_in_executor(None, trim_heap)

    def _is_member(self, runner: Runner) -> bool:
        """Whether a loaded ensemble still runs this runner as one of its members."""
        return any(
            runner is member
            for versions in self._models.values()
            for e in versions.values()
            for member, _ in getattr(e.runner, "members", ())
        )

    def names(self) -> list[str]:
        return list(self._models)

    def versions(self, name: str) -> dict[str, LoadedVersion]:
        try:
            return self._models[name]
        except KeyError:
            raise ModelNotFound(f"model {shown(name)} is not served here") from None

    def get(self, name: str, version: str) -> LoadedVersion:
        entry = self.versions(name).get(version)
        if entry is None:
            raise ModelNotFound(f"model {shown(name)} has no version {shown(version)}")
        return entry

    def serving(self, name: str, version: str, mode: str = "real_time") -> LoadedVersion:
        """The version, if it can take a request in `mode` now."""
        entry = self.get(name, version)
        if entry.state is not VersionState.READY:
            problem = (f"failed to load ({entry.error}); move its traffic to a ready version or unload it"
                       if entry.state is VersionState.FAILED else f"is {entry.state.value}")
            raise ModelNotReady(f"model '{entry.tag}' {problem}", headers={"Retry-After": "1"})
        if mode not in entry.modes:
            raise ModeNotSupported(f"model '{entry.tag}' does not serve {mode} requests; it declares {list(entry.modes)}")
        return entry
