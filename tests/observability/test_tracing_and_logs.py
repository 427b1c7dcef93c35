"""Tracing (span tree, propagation, sampling, a real OTLP/HTTP export) and structured logs."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
import subprocess
import sys
import threading
import time
import timeit
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, get_current_span
from pydantic import ValidationError

from core.errors import BadRequest, ModelFailed
from observability.logs import PACKAGES, LogSettings, event, setup_logging
from observability.tracing import DISABLED, NOOP_SPAN, OtelTracer, TracingSettings, setup_tracing

REQUEST = "POST /v2/models/{name}/infer"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> Iterator[OtelTracer]:
    tracer = setup_tracing(TracingSettings(), exporter=exporter)
    yield tracer
    tracer.shutdown()


def finished(tracer: OtelTracer, exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    """The spans ended since the last call, by name (each name once)."""
    assert tracer.flush()
    spans = exporter.get_finished_spans()
    exporter.clear()
    by_name = {s.name: s for s in spans}
    assert len(by_name) == len(spans), [s.name for s in spans]
    return by_name


# --- disabled -----------------------------------------------------------------------------


def test_without_endpoint_tracing_is_the_shared_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RTSERVE_TRACING_OTLP_ENDPOINT", raising=False)
    tracer = setup_tracing(TracingSettings())
    assert tracer is DISABLED and not tracer.enabled
    first = tracer.span("decode", model="m")
    assert first is NOOP_SPAN and tracer.span("encode") is first
    assert tracer.request(REQUEST, {b"traceparent": b"x"}, request_id="r") is NOOP_SPAN
    with tracer.request(REQUEST, {}) as span:
        span.set("version", "v1")
        span.error("ignored")
        assert tracer.current() is None
    tracer.record("queue_wait", 1, 2, {"rows": 1}, parent=None)
    assert not get_current_span().get_span_context().is_valid
    with pytest.raises(KeyError), tracer.span("decode"):  # exceptions pass through untouched
        raise KeyError("x")


def test_disabled_span_costs_no_more_than_a_bare_with() -> None:
    """Relative to the cheapest Python span site possible, so a slow or busy machine does not fail it."""

    class Bare:
        __slots__ = ()

        def __enter__(self) -> Bare:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    bare = Bare()

    def span(name: str, /, **attributes: object) -> Bare:
        return bare

    def best(stmt: str, **names: object) -> float:
        return min(timeit.repeat(stmt, globals=names, number=20_000, repeat=7)) / 20_000

    tracer = setup_tracing(TracingSettings())
    ours = best("with tracer.span('decode', model='m'):\n    pass", tracer=tracer)
    floor = best("with span('decode', model='m'):\n    pass", span=span)
    assert ours < 2 * floor, f"disabled span {ours * 1e9:.0f} ns, bare with {floor * 1e9:.0f} ns"


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTSERVE_TRACING_OTLP_ENDPOINT", "http://127.0.0.1:4318/v1/traces")
    monkeypatch.setenv("RTSERVE_TRACING_SERVICE_NAME", "rtserve-canary")
    monkeypatch.setenv("RTSERVE_TRACING_SAMPLE_RATIO", "0.25")
    settings = TracingSettings()
    assert (settings.otlp_endpoint, settings.service_name, settings.sample_ratio) == (
        "http://127.0.0.1:4318/v1/traces",
        "rtserve-canary",
        0.25,
    )
    monkeypatch.setenv("RTSERVE_TRACING_SAMPLE_RATIO", "1.5")
    with pytest.raises(ValidationError):
        TracingSettings()


# --- enabled --------------------------------------------------------------------------------


def test_request_span_parents_the_hot_path_spans(tracer: OtelTracer, exporter: InMemorySpanExporter) -> None:
    box: dict[str, object] = {}
    with tracer.request(REQUEST, {}, model="m", request_id="r1") as request:
        for name in ("decode", "auth", "rate_limit", "cache"):
            with tracer.span(name, model="m"):
                pass
        request.set("version", "v2")
        parent = tracer.current()
        assert parent is not None
        with tracer.span("encode"):
            pass

    # The batcher records after the fact, on another thread where no span is current.
    def worker() -> None:
        box["current"] = tracer.current()
        tracer.record("queue_wait", 1_000_000_000, 1_002_000_000, {"batch_size": 4}, parent=parent)
        tracer.record("batch_execution", 1_002_000_000, 1_005_500_000, {"batch_size": 4}, parent=parent)
        tracer.record("orphan", 10, 20)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert box["current"] is None

    spans = finished(tracer, exporter)
    root = spans[REQUEST]
    assert root.parent is None and root.kind is SpanKind.SERVER
    assert dict(root.attributes) == {"model": "m", "request_id": "r1", "version": "v2"}
    assert root.resource.attributes["service.name"] == "rtserve"
    children = ["decode", "auth", "rate_limit", "cache", "queue_wait", "batch_execution", "encode"]
    for name in children:
        span = spans[name]
        assert span.parent is not None and span.parent.span_id == root.context.span_id, name
        assert span.context.trace_id == root.context.trace_id, name
    assert spans["decode"].attributes["model"] == "m"
    queue, execution = spans["queue_wait"], spans["batch_execution"]
    assert (queue.start_time, queue.end_time) == (1_000_000_000, 1_002_000_000)
    assert (execution.start_time, execution.end_time) == (1_002_000_000, 1_005_500_000)
    assert execution.attributes["batch_size"] == 4
    orphan = spans["orphan"]
    assert orphan.parent is None and orphan.context.trace_id != root.context.trace_id
    assert (orphan.start_time, orphan.end_time) == (10, 20)
    assert root.start_time <= spans["decode"].start_time <= spans["encode"].end_time <= root.end_time


def test_spans_leave_the_context_as_they_found_it(tracer: OtelTracer, exporter: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError), tracer.request(REQUEST, {}):
        with tracer.span("decode"):
            raise ValueError("bad tensor")
    assert not get_current_span().get_span_context().is_valid
    assert tracer.current() is None
    spans = finished(tracer, exporter)
    decode = spans["decode"]
    assert decode.status.status_code is StatusCode.ERROR
    assert "ValueError: bad tensor" in decode.status.description
    assert [e.name for e in decode.events] == ["exception"]
    assert decode.attributes["error.type"] == "ValueError"
    with tracer.request(REQUEST, {}) as request:
        request.error("503 model unavailable")
    assert finished(tracer, exporter)[REQUEST].status.status_code is StatusCode.ERROR


def test_a_client_error_is_noted_but_not_a_failed_span(tracer: OtelTracer, exporter: InMemorySpanExporter) -> None:
    with pytest.raises(BadRequest), tracer.span("decode"):
        raise BadRequest("input 'x' has the wrong shape")
    with pytest.raises(ModelFailed), tracer.span("batch_execution"):
        raise ModelFailed("digits:v1: RuntimeError")
    spans = finished(tracer, exporter)
    client, server = spans["decode"], spans["batch_execution"]
    assert client.attributes["error.type"] == "BadRequest"
    assert client.status.status_code is StatusCode.UNSET and client.events == ()
    assert server.attributes["error.type"] == "ModelFailed" and server.status.status_code is StatusCode.ERROR


async def test_concurrent_requests_keep_their_own_trees(tracer: OtelTracer, exporter: InMemorySpanExporter) -> None:
    async def one(request_id: str) -> None:
        with tracer.request(REQUEST, {}, request_id=request_id):
            await asyncio.sleep(0)
            with tracer.span("decode", request_id=request_id):
                await asyncio.sleep(0.001)
            await asyncio.sleep(0)
            with tracer.span("encode", request_id=request_id):
                await asyncio.sleep(0)

    await asyncio.gather(*(one(f"r{i}") for i in range(8)))
    assert tracer.flush()
    spans = exporter.get_finished_spans()
    roots = {s.attributes["request_id"]: s for s in spans if s.name == REQUEST}
    assert len(roots) == 8 and len(spans) == 24
    for span in spans:
        if span.name != REQUEST:
            root = roots[span.attributes["request_id"]]
            assert span.parent.span_id == root.context.span_id
            assert span.context.trace_id == root.context.trace_id


def test_traceparent_joins_the_clients_trace(tracer: OtelTracer, exporter: InMemorySpanExporter) -> None:
    headers = {b"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01".encode(), b"tracestate": b"vendor=abc"}
    with tracer.request(REQUEST, headers):
        with tracer.span("decode"):
            pass
    spans = finished(tracer, exporter)
    root = spans[REQUEST]
    assert f"{root.context.trace_id:032x}" == CLIENT_TRACE
    assert f"{root.parent.span_id:016x}" == CLIENT_SPAN and root.parent.is_remote
    assert root.context.trace_state.get("vendor") == "abc"
    assert spans["decode"].context.trace_id == root.context.trace_id


def test_a_malformed_traceparent_starts_a_new_trace(tracer: OtelTracer, exporter: InMemorySpanExporter) -> None:
    with tracer.request(REQUEST, {b"traceparent": b"00-not-a-trace-01"}):
        pass
    root = finished(tracer, exporter)[REQUEST]
    assert root.parent is None and f"{root.context.trace_id:032x}" != CLIENT_TRACE


def test_ratio_zero_records_nothing_but_honours_a_sampled_client() -> None:
    exporter = InMemorySpanExporter()
    tracer = setup_tracing(TracingSettings(sample_ratio=0.0), exporter=exporter)
    try:
        with tracer.request(REQUEST, {}):
            with tracer.span("decode"):
                pass
            assert tracer.current() is None  # so the batcher skips timestamps and record()
        tracer.record("queue_wait", 1, 2)
        assert tracer.flush() and exporter.get_finished_spans() == ()
        sampled = {b"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01".encode()}
        with tracer.request(REQUEST, sampled):
            tracer.record("queue_wait", 1, 2, parent=tracer.current())
        assert tracer.flush()
        assert sorted(s.name for s in exporter.get_finished_spans()) == sorted([REQUEST, "queue_wait"])
    finally:
        tracer.shutdown()


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that keeps what it is sent."""

    received: list[tuple[str, dict[str, str], bytes]]

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.received.append((self.path, headers, body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def test_spans_reach_a_real_otlp_http_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        settings = TracingSettings(
            otlp_endpoint=f"http://127.0.0.1:{server.server_port}/v1/traces", service_name="rtserve-test"
        )
        tracer = setup_tracing(settings)
        assert tracer.enabled
        with tracer.request(REQUEST, {}, model="m", request_id="r9"):
            with tracer.span("decode"):
                pass
            tracer.record("batch_execution", time.time_ns() - 1000, time.time_ns(), {"batch_size": 2}, parent=tracer.current())
        assert tracer.flush(10)
        tracer.shutdown()
    finally:
        server.shutdown()
        server.server_close()

    received = server.received  # type: ignore[attr-defined]
    assert received, "the exporter sent nothing"
    spans, services = {}, set()
    for path, headers, body in received:
        assert path == "/v1/traces"
        assert headers["content-type"] == "application/x-protobuf"
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            services |= {a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"}
            for scope_spans in resource_spans.scope_spans:
                spans |= {s.name: s for s in scope_spans.spans}
    assert services == {"rtserve-test"}
    assert set(spans) == {REQUEST, "decode", "batch_execution"}
    root = spans[REQUEST]
    assert {a.key: a.value.string_value for a in root.attributes} == {"model": "m", "request_id": "r9"}
    for name in ("decode", "batch_execution"):
        assert spans[name].parent_span_id == root.span_id and spans[name].trace_id == root.trace_id


# --- logs -----------------------------------------------------------------------------------


@pytest.fixture
def restore_loggers() -> Iterator[None]:
    """Put the package loggers back, so other tests' caplog (on the root logger) still sees them."""
    saved = {p: (logging.getLogger(p).handlers[:], logging.getLogger(p).level, logging.getLogger(p).propagate) for p in PACKAGES}
    yield
    for package, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(package)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_logs_are_one_object_a_line_with_the_extra_fields(restore_loggers: None) -> None:
    stream = io.StringIO()
    setup_logging(LogSettings(format="json"), stream=stream)
    log = logging.getLogger("frontends.rest")
    log.info("request %s done", "r1", extra={"request_id": "r1", "model": "m", "version": "v1"})
    log.debug("not at INFO")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("runners.batcher").exception("batch failed")
    first, second = json_lines(stream)
    assert first["level"] == "INFO" and first["logger"] == "frontends.rest" and first["message"] == "request r1 done"
    assert (first["request_id"], first["model"], first["version"]) == ("r1", "m", "v1")
    assert time.strptime(first["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert "trace_id" not in first
    assert second["level"] == "ERROR" and "RuntimeError: boom" in second["exception"]


def test_json_logs_carry_the_current_trace(restore_loggers: None, tracer: OtelTracer, exporter: InMemorySpanExporter) -> None:
    stream = io.StringIO()
    setup_logging(LogSettings(format="json"), stream=stream)
    with tracer.request(REQUEST, {}):
        logging.getLogger("frontends.rest").warning("slow")
    (line,) = json_lines(stream)
    root = finished(tracer, exporter)[REQUEST]
    assert line["trace_id"] == f"{root.context.trace_id:032x}" and line["span_id"] == f"{root.context.span_id:016x}"


def test_text_logs_append_fields_and_write_to_stderr(restore_loggers: None, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(LogSettings(format="text", level="debug"))
    logging.getLogger("routing.canary").debug("weights %d/%d", 90, 10, extra={"model": "m"})
    logging.getLogger("models.build").info("plain")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].endswith("DEBUG routing.canary: weights 90/10 model=m")
    assert err[1].endswith("INFO models.build: plain")


def test_package_loggers_get_one_handler_and_stay_off_the_root() -> None:
    """In a fresh interpreter, as in a worker: the suite's other tests (and the libraries they load) change
    the logging tree of this process in ways that are theirs, not the service's."""
    script = """
import io, json, logging
from observability.logs import PACKAGES, LogSettings, setup_logging
stream, root = io.StringIO(), io.StringIO()
logging.getLogger().addHandler(logging.StreamHandler(root))  # the root logger, which BentoML owns
setup_logging(LogSettings(format="json"), stream=stream)
setup_logging(LogSettings(format="json"), stream=stream)
logging.getLogger("observability.metrics").info("once")
print(json.dumps({"lines": len(stream.getvalue().splitlines()), "root": root.getvalue(),
                  "handlers": sorted({len(logging.getLogger(p).handlers) for p in PACKAGES}),
                  "propagate": any(logging.getLogger(p).propagate for p in PACKAGES)}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[2])
    assert json.loads(out.stdout) == {"lines": 1, "root": "", "handlers": [1], "propagate": False}


def test_event_logs_its_name_and_fields(restore_loggers: None) -> None:
    stream = io.StringIO()
    setup_logging(LogSettings(format="json", level="INFO"), stream=stream)
    log = logging.getLogger("routing.canary")
    event(log, "canary_decision", model="m", version="v2", decision="promote", error_rate=0.001)
    event(log, "weights", level=logging.WARNING, model="m", weights={"v1": 0, "v2": 100}, module="x", event="y")
    event(log, "debug_only", level=logging.DEBUG, model="m")
    decision, weights = json_lines(stream)
    assert decision["event"] == "canary_decision" and decision["message"] == "canary_decision"
    assert (decision["model"], decision["version"], decision["decision"], decision["error_rate"]) == ("m", "v2", "promote", 0.001)
    assert weights["level"] == "WARNING" and weights["weights"] == {"v1": 0, "v2": 100}
    assert weights["event"] == "weights" and weights["module_"] == "x" and weights["event_"] == "y"

    text = io.StringIO()
    setup_logging(LogSettings(format="text"), stream=text)
    event(logging.getLogger("runners.registry"), "load", model="m", version="v1", seconds=1.5)
    assert text.getvalue().rstrip().endswith("INFO runners.registry: load event=load model=m version=v1 seconds=1.5")


def test_log_settings_validate_and_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTSERVE_LOG_FORMAT", "json")
    monkeypatch.setenv("RTSERVE_LOG_LEVEL", "warning")
    settings = LogSettings()
    assert (settings.format, settings.level) == ("json", "WARNING")
    with pytest.raises(ValidationError):
        LogSettings(level="LOUD")
    with pytest.raises(ValidationError):
        LogSettings(format="xml")
