"""The data plane: every inference request, whatever its protocol, through one function in one order.

    admit (auth, scope, tenant limit) -> route (pin, experiment, canary weights) -> decode
    -> validate against the version's signature -> cache (memory, Redis) -> adaptive batcher
    -> outputs selected -> shadow mirror -> encode; metrics and the version's in-flight count closed

A front end (OIP REST, /predict, gRPC, the NDJSON and gRPC streams, batch jobs) only translates: it builds an
`InferenceRequest` that says where its credentials are and how to decode its body and encode an
answer, and hands it to `DataPlane.infer` (the shape of MLServer's `DataPlane.infer`). Decoding
comes after admission and routing, so nobody unauthenticated or over their limit has a body parsed,
and a codec can use the version's signature (/predict's rows). The request's `RequestRecord` holds
the version's in-flight count and the labels of its metrics, and is closed however the request ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, NamedTuple, Self, TypeVar

import numpy as np

from core.errors import CANCELLED, BadRequest, BudgetExceeded, ModelNotReady, QueueFull, ServingError, shown
from gateway.admission import Admission, Admitted
from gateway.cache import PredictionCache, cache_key, version_token
from gateway.settings import LimitSettings
from gateway.validate import check_inputs
from observability.tracing import DISABLED, Tracer
from routing.router import Router
from routing.shadow import ShadowMirror
from runners.batcher import Outputs
from runners.registry import LoadedVersion, ModelRegistry, VersionState
from runners.rows import Rows

if TYPE_CHECKING:
    from types import TracebackType

    from observability.metrics import Metrics

T = TypeVar("T")

BUSY_RETRY_S = 0.01
"""How long background work waits when a batcher refuses it because real-time traffic fills it."""


@dataclass(slots=True)
class Tensors:
    """A decoded request body, the same for every codec."""

    inputs: dict[str, tuple[str, np.ndarray]]
    """name -> (OIP datatype, array)."""
    outputs: list[str] | None = None
    """The outputs asked for, in order; None for all of them."""
    priority: int = 0
    """Triton's schedule policy: 1 the highest level, 0 the model's default."""
    timeout_ms: float | None = None
    """The earliest of the request's own timeouts (header, parameter, call deadline); None for none."""


@dataclass(slots=True)
class Answer:
    """What the data plane hands the front end's encoder."""

    model: str
    version: str
    outputs: Outputs


@dataclass(slots=True)
class InferenceRequest(Generic[T]):
    """One request as its front end read it; `T` is the front end's own answer (bytes, a protobuf message)."""

    decode: Callable[[LoadedVersion], Awaitable[Tensors]]
    """The body's tensors, read once the request is admitted and routed (the version's signature at hand)."""
    encode: Callable[[Answer], T]
    model: str | None = None
    """The model asked for; None when the body names it (`target` then reads it)."""
    version: str | None = None
    target: Callable[[], Awaitable[tuple[str, str | None]]] | None = None
    """(model, version) from the body, for a front end whose path does not name the model (/predict)."""
    credentials: bytes | None = None
    user: bytes | None = None
    admitted: Admitted | None = None
    """A stream's caller, identified once when it opened: each item is then only rate limited."""
    variant: str | None = None
    """The variant its metrics are labelled with when it is not routed here: the router's choice at a stream's
    opening; `batch` for a job's rows."""
    mode: str = "real_time"
    use_cache: bool = True
    span: str = "infer"
    trace: dict[bytes, bytes] = field(default_factory=dict)
    """Headers (or gRPC metadata) a trace may continue from."""
    request_id: str = ""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    """Response headers the data plane adds to: rate-limit state, the version, the cache outcome."""
    background: bool = False
    """Lower-priority work whose caller was admitted once, upstream (a batch job's rows): it is not rate
    limited again, not counted in flight (it is what `pause` holds back), neither reads nor fills the
    cache, is not mirrored, and a batcher busy with real-time traffic is waited for, not an error."""


class Route(NamedTuple):
    entry: LoadedVersion
    variant: str


class RequestRecord:
    """One request's account, opened and closed by the data plane: the version it holds (so an unload
    waits for it), the labels of its metrics, and how it ended. Closed however the request ends, a
    cancelled one included."""

    __slots__ = ("cache", "code", "counted", "entry", "model", "plane", "started", "status", "variant", "version")

    def __init__(self, plane: DataPlane, counted: bool = True) -> None:
        self.plane = plane
        self.counted = counted
        """Whether it is real-time work, counted in flight while open (background work is not)."""
        self.started = time.perf_counter()
        self.model = ""
        self.version = ""
        self.variant = "stable"
        self.cache = "bypass"
        self.status = 200
        self.code = ""
        self.entry: LoadedVersion | None = None

    def hold(self, name: str, route: Route) -> LoadedVersion:
        """The version answers this request: it counts as active on it until the record is closed."""
        entry = route.entry
        entry.active += 1
        self.entry = entry
        self.model = name  # a served model's own name: routing found a version of it, so labels stay bounded
        self.version, self.variant = entry.version, route.variant
        return entry

    def __enter__(self) -> Self:
        if self.counted:
            self.plane.in_flight += 1
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            pass
        elif issubclass(kind, ServingError):
            self.status, self.code = exc.status.value, exc.code
        elif issubclass(kind, asyncio.CancelledError):
            self.status, self.code = 499, CANCELLED
        else:
            self.status, self.code = 500, "internal_error"
        if self.entry is not None:
            self.entry.active -= 1
            self.entry = None
        self.plane.closed(self)


class DataPlane:
    def __init__(
        self,
        *,
        registry: ModelRegistry,
        router: Router,
        admission: Admission,
        limits: LimitSettings,
        cache: PredictionCache | None = None,
        metrics: Metrics | None = None,
        tracer: Tracer = DISABLED,
    ) -> None:
        self.registry = registry
        self.router = router
        self.admission = admission
        self.limits = limits
        self.cache = cache
        self.metrics = metrics
        self.tracer = tracer
        self.shadow = ShadowMirror(router, registry, metrics)
        self.in_flight = 0
        """Requests open in this worker: real-time work that batch jobs give way to."""
        self._pause_waiters: list[asyncio.Future[None]] = []

    async def infer(self, request: InferenceRequest[T]) -> T:
        """The request's answer in its front end's form, or the `ServingError` that says why not."""
        tracer = self.tracer
        if request.model is None:  # /predict's model is in its body
            request_span = tracer.request(request.span, request.trace, request_id=request.request_id)
        else:
            request_span = tracer.request(request.span, request.trace, request_id=request.request_id, model=request.model)
        with RequestRecord(self, not request.background) as record, request_span as span:
            if request.admitted is None:
                admitted = await self.admission.admit(request.credentials, request.user, "predict")
                request.headers.extend(admitted.headers)
            else:
                admitted = request.admitted
                if not request.background:
                    await self.admission.limit(admitted)
            if request.model is None:
                name, version = await request.target()
                span.set("model", name)
            else:
                name, version = request.model, request.version
            entry = record.hold(name, self.route(name, version, admitted, request.mode))
            if request.variant is not None:
                record.variant = request.variant
            span.set("version", entry.version)
            with tracer.span("decode"):
                tensors = await request.decode(entry)
            if tensors.priority:
                admitted.permit_priority(tensors.priority, entry.batcher.default_priority)
            rows = check_inputs(entry.runner.signature, tensors.inputs, self.limits)
            deadline = deadline_after(tensors.timeout_ms) if tensors.timeout_ms is not None else None
            if request.background:
                outputs = await self._when_room(entry, rows, tensors.priority)
            else:
                outputs = await self._compute(record, entry, rows, deadline, request.use_cache, tensors.priority,
                                              admitted.tenant)
                self.shadow.maybe_mirror(entry.name, entry.version, rows, outputs)
            request.headers.append((b"x-cache", b"hit" if record.cache == "hit" else b"miss"))
            request.headers.append((b"x-model-version", entry.version.encode()))
            if tensors.outputs is not None:
                outputs = select_outputs(outputs, tensors.outputs)
            with tracer.span("encode"):
                return request.encode(Answer(name, entry.version, outputs))

    def record(self, counted: bool = True) -> RequestRecord:
        """A request's account (`with`): counted in flight while open (unless `counted` is False); on
        closing, its metrics."""
        return RequestRecord(self, counted)

    def route(self, name: str, version: str | None, admitted: Admitted | None = None, mode: str = "real_time") -> Route:
        """The version that answers: the one asked for ("pinned"), else the route's choice (or, while the
        chosen one is not ready in this worker yet, the heaviest-weighted one that is). A model the caller
        may not use is 403 before anything is looked up, so the answer is the same whether it exists or not."""
        user = None
        if admitted is not None:
            admitted.permit(name)
            user = admitted.user
        if version is None:
            version, variant = self.router.choose(name, user, self.registry.versions(name))
        else:
            variant = "pinned"
        return Route(self.registry.serving(name, version, mode), variant)

    async def _compute(
        self, record: RequestRecord, entry: LoadedVersion, rows: Rows, deadline: float | None, use_cache: bool,
        priority: int, tenant: str,
    ) -> Outputs:
        """The cache (the tenant's own entries, with tenant isolation), else the version's batcher. A caller
        that leaves (its deadline, a disconnect) takes its rows out of the queue; a computation shared by
        identical requests only once every caller has left."""
        batcher = entry.batcher
        if self.cache is None:
            return await batcher.submit(rows, deadline, priority)
        key = cache_key(entry.name, version_token(entry.version, entry.generation), rows,
                        tenant if self.cache.settings.tenant_isolation else None)
        shared = self.cache.worth_sharing(batcher.expected_cost(rows))
        if use_cache:
            with self.tracer.span("cache") as span:
                outputs, hit = await self.cache.get_or_compute(key, lambda: batcher.enqueue(rows, priority=priority),
                                                               shared, deadline)
                span.set("cache.hit", hit)
        else:  # the client asked for a fresh answer; it still refreshes the cache
            outputs, hit = await batcher.submit(rows, deadline, priority), False
            await self.cache.put(key, outputs, shared)
        record.cache = "hit" if hit else "miss"
        return outputs

    async def _when_room(self, entry: LoadedVersion, rows: Rows, priority: int) -> Outputs:
        """Background rows through the version's batcher, past the cache: a batcher that refuses them (queue
        full, latency budget) is busy with real-time traffic, so they wait and try again while the version
        still serves (an unload waits for one such wait at most)."""
        while True:
            if entry.state is not VersionState.READY:
                raise ModelNotReady(f"model '{entry.tag}' is {entry.state.value}")
            try:
                return await entry.batcher.submit(rows, None, priority)
            except (QueueFull, BudgetExceeded):
                await asyncio.sleep(BUSY_RETRY_S)

    def closed(self, record: RequestRecord) -> None:
        """A record was closed: no longer in flight, and its outcome in the metrics."""
        if record.counted:
            self.in_flight -= 1
            if not self.in_flight and self._pause_waiters:
                waiters, self._pause_waiters = self._pause_waiters, []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
        if record.model and self.metrics is not None:
            self.metrics.observe_request(record.model, record.version, record.variant, record.status, record.cache,
                                         time.perf_counter() - record.started)
            if record.code:
                self.metrics.count_error(record.model, record.version, record.variant, record.code)

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


def select_outputs(outputs: Outputs, requested: list[str] | None) -> Outputs:
    """The outputs the request named, in its order; all of them when it named none."""
    if requested is None:
        return outputs
    unknown = set(requested) - set(outputs)
    if unknown:
        raise BadRequest(f"unknown output(s) {shown(sorted(unknown))}")
    return {k: outputs[k] for k in requested}


def deadline_after(milliseconds: float) -> float:
    """The event-loop time `milliseconds` from now; a client's timeout header or field becomes this."""
    return asyncio.get_running_loop().time() + milliseconds / 1000.0


def earliest(*timeouts_ms: float | None) -> float | None:
    """The shortest of the timeouts given (milliseconds); None when there is none."""
    given = [t for t in timeouts_ms if t is not None]
    return min(given) if given else None
