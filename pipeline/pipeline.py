"""admit -> route -> decode -> validate -> cache -> batch -> encode -> observe, the same for every front end.

A front end owns only its protocol: where the credentials, model name and tensors are in its
request, and how an answer or a `ServingError` is written back. It opens one `Pipeline.request()`
per request and calls the steps in order (auth stays before the body is read); the request scope
records the metrics and releases the version's in-flight count however the request ends, a
cancelled one included, so every entry point counts the same way.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from core.errors import CANCELLED, ServingError
from gateway.admission import Admission, Admitted
from gateway.cache import PredictionCache, cache_key, version_token
from gateway.settings import LimitSettings
from gateway.validate import check_inputs
from observability.context import RequestLabels, current, start_request
from observability.metrics import UNKNOWN
from observability.tracing import DISABLED, Tracer
from routing.router import Router
from routing.shadow import ShadowMirror
from runners.batcher import Outputs
from runners.registry import LoadedVersion, ModelRegistry, VersionState

if TYPE_CHECKING:
    from observability.metrics import Metrics


@dataclass(slots=True)
class RequestScope:
    """One request's passage through the pipeline: what it resolved to and how it ended."""

    pipeline: Pipeline
    labels: RequestLabels
    started: float
    status: int = 200
    code: str = ""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    """Response headers the pipeline adds (rate-limit state, version, cache outcome)."""
    admitted: Admitted | None = None
    """Who asked, once routed: what it may ask for is checked at each step."""

    async def __aenter__(self) -> RequestScope:
        self.pipeline.in_flight += 1
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        """However the request ends: its outcome in the metrics, and its version's in-flight count released."""
        if kind is None:
            pass
        elif issubclass(kind, ServingError):
            self.status, self.code = exc.status.value, exc.code
        elif issubclass(kind, asyncio.CancelledError):
            self.status, self.code = 499, CANCELLED
        else:
            self.status, self.code = 500, "internal_error"
        self.pipeline.finish(self)

    async def admit(self, credentials: bytes | None, user: bytes | None, scope: str) -> Admitted:
        admitted = await self.pipeline.admission.admit(credentials, user, scope)
        self.headers.extend(admitted.headers)
        return admitted

    def route(self, name: str, version: str | None, admitted: Admitted, mode: str = "real_time") -> LoadedVersion:
        self.admitted = admitted
        return self.pipeline.resolve(name, version, admitted, mode)

    async def infer(
        self,
        entry: LoadedVersion,
        inputs: dict[str, tuple[str, np.ndarray]],
        *,
        deadline: float | None = None,
        use_cache: bool = True,
        priority: int = 0,
    ) -> Outputs:
        if priority and self.admitted is not None:
            self.admitted.permit_priority(priority, entry.batcher.default_priority)
        outputs, hit = await self.pipeline.infer(entry, inputs, deadline=deadline, use_cache=use_cache, priority=priority)
        self.headers.append((b"x-cache", b"hit" if hit else b"miss"))
        self.headers.append((b"x-model-version", entry.version.encode()))
        return outputs


class Pipeline:
    def __init__(
        self,
        *,
        registry: ModelRegistry,
        router: Router,
        admission: Admission,
        limits: LimitSettings,
        served: frozenset[str],
        cache: PredictionCache | None = None,
        metrics: Metrics | None = None,
        tracer: Tracer = DISABLED,
    ) -> None:
        self.registry = registry
        self.router = router
        self.admission = admission
        self.limits = limits
        self.served = served  # model names that get their own metric label; others are UNKNOWN
        self.cache = cache
        self.metrics = metrics
        self.tracer = tracer
        self.shadow = ShadowMirror(router, registry, metrics)
        self.in_flight = 0
        """Requests inside their request scope in this worker: real-time work that batch jobs give way to."""
        self._pause_waiters: list[asyncio.Future[None]] = []

    def request(self, headers: list[tuple[bytes, bytes]] | None = None) -> RequestScope:
        """The scope of one request (`async with`): on the way out, however it ends, metrics and the
        in-flight count. `headers` is the front end's list of response headers, which the steps extend."""
        return RequestScope(self, start_request(), time.perf_counter(), headers=headers if headers is not None else [])

    async def pause(self, timeout_s: float) -> None:
        """Until no request is in flight here, or `timeout_s` has passed: what lower-priority work waits
        for, so that it runs in the gaps between real-time requests (and still runs under saturation)."""
        if not self.in_flight:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._pause_waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                await waiter
        except TimeoutError:
            pass
        finally:
            if waiter in self._pause_waiters:
                self._pause_waiters.remove(waiter)

    def finish(self, scope: RequestScope) -> None:
        self.in_flight -= 1
        if not self.in_flight and self._pause_waiters:
            waiters, self._pause_waiters = self._pause_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        labels = scope.labels
        labels.release()
        if labels.model and self.metrics is not None:
            self.metrics.observe_request(
                labels.model, labels.version, labels.variant, scope.status, labels.cache, time.perf_counter() - scope.started
            )
            if scope.code:
                self.metrics.count_error(labels.model, labels.version, labels.variant, scope.code)

    def resolve(self, name: str, version: str | None, admitted: Admitted | None = None, mode: str = "real_time") -> LoadedVersion:
        """The version that answers: the one asked for ("pinned"), else the route's choice (or, while the
        chosen one is not ready in this worker yet, the heaviest-weighted one that is). Counts the request
        as active on it until the request scope ends. A model the caller may not use is 403 before
        anything is looked up, so the answer is the same whether it exists or not."""
        user = None
        if admitted is not None:
            admitted.permit(name)
            user = admitted.user
        labels = current()
        labels.model = name if name in self.served else UNKNOWN
        if version is None:
            version, labels.variant = self.router.route(name, user)
            versions = self.registry.versions(name)
            chosen = versions.get(version)
            if chosen is None or chosen.state is not VersionState.READY:
                ready = {v for v, e in versions.items() if e.state is VersionState.READY}
                version, labels.variant = self.router.fallback(name, ready) or version, "stable"
        else:
            labels.variant = "pinned"
        entry = self.registry.serving(name, version, mode)
        entry.active += 1
        labels.entry = entry
        labels.version = entry.version
        return entry

    async def infer(
        self,
        entry: LoadedVersion,
        inputs: dict[str, tuple[str, np.ndarray]],
        *,
        deadline: float | None = None,
        use_cache: bool = True,
        priority: int = 0,
    ) -> tuple[Outputs, bool]:
        """Validate against the version's signature, then the cache, else its batcher; True when cached.
        A configured fraction is mirrored to a shadow version afterwards, off the client's path."""
        rows = check_inputs(entry.runner.signature, inputs, self.limits)
        labels = current()
        if self.cache is None:
            outputs, hit = await entry.batcher.submit(rows, deadline, priority), False
            labels.cache = "bypass"
        else:
            key = cache_key(entry.name, version_token(entry.version, entry.generation), rows)
            shared = self.cache.worth_sharing(entry.batcher.cost.expected(len(rows)))
            if use_cache:
                with self.tracer.span("cache") as span:
                    outputs, hit = await self.cache.get_or_compute(key, lambda: entry.batcher.enqueue(rows, priority=priority), shared, deadline)
                    span.set("cache.hit", hit)
            else:  # the client asked for a fresh answer; it still refreshes the cache
                outputs, hit = await entry.batcher.submit(rows, deadline, priority), False
                await self.cache.put(key, outputs, shared)
            labels.cache = "hit" if hit else "miss"
        self.shadow.maybe_mirror(entry.name, entry.version, rows, outputs)
        return outputs, hit


def deadline_after(milliseconds: int) -> float:
    """The event-loop time `milliseconds` from now; a client's timeout header or field becomes this."""
    return asyncio.get_running_loop().time() + milliseconds / 1000.0
