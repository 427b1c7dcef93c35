"""Tracing for the inference hot path: OpenTelemetry spans when configured, nothing when not.

The hot path calls a tiny API, `tracer.request(...)`, `tracer.span(...)` and `tracer.record(...)`.
When no OTLP endpoint is set, `setup_tracing` returns the base `Tracer`, whose methods return a
shared no-op object: no allocation and no context switch, so a disabled span site costs what a
bare Python `with` statement costs.

When an endpoint is set, spans go through a `TracerProvider` of our own (not the process-global
one, so BentoML's tracing configuration and ours cannot interfere) with a `BatchSpanProcessor`:
exporting happens on a background thread, never on the event loop. The SDK and the exporter are imported only then; the API (already a
BentoML dependency) is what carries the current span in a context variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry.context import Context, attach, detach, get_current
from opentelemetry.trace import SpanKind, Status, StatusCode, get_current_span, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span as OtelSpan

Headers = Mapping[bytes, bytes]
Attributes = Mapping[str, Any]


class TracingSettings(BaseSettings):
    """Read from the environment (prefix RTSERVE_TRACING_) when the service starts."""

    model_config = SettingsConfigDict(env_prefix="RTSERVE_TRACING_")

    otlp_endpoint: str | None = None
    """OTLP/HTTP traces URL, e.g. http://127.0.0.1:4318/v1/traces; tracing is off when unset."""
    service_name: str = "rtserve"
    """The `service.name` resource attribute the tracing backend groups spans by."""
    sample_ratio: float = Field(1.0, ge=0.0, le=1.0)
    """Share of new traces kept; a client's sampled `traceparent` is always honoured."""


class Span(Protocol):
    """What `request()` and `span()` hand out, enabled or not."""

    def __enter__(self) -> Span: ...
    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None: ...
    def set(self, key: str, value: Any) -> None: ...
    def error(self, description: str) -> None: ...


class NoopSpan:
    """What a disabled tracer hands out: one shared instance, every method does nothing."""

    __slots__ = ()

    def __enter__(self) -> NoopSpan:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        return None

    def set(self, key: str, value: Any) -> None:
        """Add an attribute learnt after the span started (e.g. the resolved version)."""

    def error(self, description: str) -> None:
        """Mark the span failed when the failure was handled inside it (no exception escapes)."""


NOOP_SPAN = NoopSpan()


class Tracer:
    """The disabled tracer, and the interface the hot path codes against."""

    enabled = False

    def request(self, name: str, headers: Headers, /, **attributes: Any) -> Span:
        """The request's server span, joined to the client's trace when `headers` carry `traceparent`."""
        return NOOP_SPAN

    def span(self, name: str, /, **attributes: Any) -> Span:
        """A child of the current span, as a context manager."""
        return NOOP_SPAN

    def current(self) -> Context | None:
        """The current trace context if it is being recorded, to parent a later `record()`; else None.

        Work handed to another thread or callback keeps this and passes it back as `parent`,
        so a caller that gets None can skip even taking timestamps.
        """
        return None

    def record(
        self, name: str, start_ns: int, end_ns: int, attributes: Attributes | None = None, parent: Context | None = None
    ) -> None:
        """Emit a span that already happened (times from `time.time_ns()`), under `parent` or the current span."""
        return None

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Export what is buffered; for tests and shutdown."""
        return True

    def shutdown(self) -> None:
        """Flush and stop the exporter thread."""


DISABLED = Tracer()


class LiveSpan:
    """A recording span made current for the `with` block; the enabled counterpart of `NoopSpan`."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: OtelSpan) -> None:
        self._span = span
        self._token: object = None

    def __enter__(self) -> LiveSpan:
        self._token = attach(set_span_in_context(self._span))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        detach(self._token)
        if exc is not None:
            self._span.set_attribute("error.type", exc_type.__name__)
            status = getattr(exc, "status", None)
            if not (isinstance(status, int) and status < 500):  # a client's mistake is not our failure
                self._span.record_exception(exc)
                self.error(f"{exc_type.__name__}: {exc}")
        self._span.end()
        return None

    def set(self, key: str, value: Any) -> None:
        self._span.set_attribute(key, value)

    def error(self, description: str) -> None:
        self._span.set_status(Status(StatusCode.ERROR, description))


class OtelTracer(Tracer):
    """Spans through an OpenTelemetry SDK provider of our own."""

    enabled = True

    def __init__(self, provider: Any) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("rtserve")
        self._propagator = TraceContextTextMapPropagator()

    def request(self, name: str, headers: Headers, /, **attributes: Any) -> LiveSpan:
        parent = self._propagator.extract(headers, getter=_BYTES_GETTER)  # empty Context: a new root
        return LiveSpan(self._tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes))

    def span(self, name: str, /, **attributes: Any) -> LiveSpan:
        return LiveSpan(self._tracer.start_span(name, attributes=attributes))

    def current(self) -> Context | None:
        context = get_current()
        return context if get_current_span(context).is_recording() else None

    def record(
        self, name: str, start_ns: int, end_ns: int, attributes: Attributes | None = None, parent: Context | None = None
    ) -> None:
        span = self._tracer.start_span(name, context=parent, attributes=attributes, start_time=start_ns)
        span.end(end_time=end_ns)

    def flush(self, timeout_s: float = 5.0) -> bool:
        return self.provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        self.provider.shutdown()


class _BytesGetter:
    """Reads W3C trace headers from the ASGI header dict (lower-case bytes keys and values)."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        value = carrier.get(key.encode("latin-1"))
        return None if value is None else [value.decode("latin-1")]

    def keys(self, carrier: Headers) -> list[str]:
        return [k.decode("latin-1") for k in carrier]


_BYTES_GETTER = _BytesGetter()


def setup_tracing(settings: TracingSettings | None = None, *, exporter: SpanExporter | None = None) -> Tracer:
    """The worker's tracer; call once per worker process (the exporter thread does not survive a fork).

    `exporter` replaces the OTLP exporter (tests pass an in-memory one); tracing is on when it
    or `settings.otlp_endpoint` is given.
    """
    settings = settings or TracingSettings()
    if exporter is None and not settings.otlp_endpoint:
        return DISABLED
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint)
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
        resource=Resource.create({SERVICE_NAME: settings.service_name}),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return OtelTracer(provider)
