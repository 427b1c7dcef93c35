"""The Open Inference Protocol (KServe V2) REST API as one raw ASGI app, mounted into the BentoML service.

Raw ASGI rather than a framework because every microsecond here is paid on every request;
routing is a split of the path and a match on its parts.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from typing import Any

from gateway import admin_api, openapi
from gateway.asgi import JSON, OCTETS, Receive, Scope, Send, dumps, header_map, read_body, send_response
from gateway.codec import decode_infer, encode_infer
from gateway.errors import BadRequest, MethodNotAllowed, NotFound, ServingError, Unavailable
from gateway.runtime import Runtime
from observability.context import current, start_request
from observability.exporter import StatsExporter
from observability.tracing import Span
from runners.registry import VersionState

log = logging.getLogger(__name__)

INFER_SPAN = "POST /v2/models/{name}/infer"  # the route, not the path: one span name for every model
SERVER_NAME = "rtserve"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "health", "model_metadata"]


_ID_PREFIX = ""
_ID_COUNTER = itertools.count()


def new_request_id() -> str:
    """Unique across processes and replicas: a random per-process prefix and a counter (no syscall per request)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"


def _new_id_prefix() -> None:
    global _ID_PREFIX
    _ID_PREFIX = os.urandom(4).hex()


_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)  # forked workers must not share a prefix


class InferenceApp:
    """ASGI callable; `bind` gives it the worker's Runtime once the service instance exists."""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self.exporter: StatsExporter | None = None

    def bind(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.exporter = StatsExporter(runtime) if runtime.metrics is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        start = time.perf_counter()
        labels = start_request()
        headers = header_map(scope)
        request_id = (headers.get(b"x-request-id") or b"").decode("latin-1")[:128] or new_request_id()
        extra = [(b"x-request-id", request_id.encode("latin-1"))]
        code = ""
        try:
            if self.runtime is None:
                raise Unavailable("service is starting")
            status, body, content_type = await self._route(scope, receive, headers, extra, request_id)
        except ServingError as exc:
            status, body, content_type, code = exc.status.value, dumps(exc.body()), JSON, exc.code
            extra.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items())
            # One line per error, with the request id; client mistakes at INFO so they do not page anyone.
            level = logging.WARNING if exc.status >= 500 else logging.INFO
            log.log(level, "request %s %s %s: %d %s: %s", request_id, scope["method"], scope["path"], exc.status.value, exc.code, exc.message)
        except Exception:
            log.exception("request %s %s failed", request_id, scope["path"])
            status, body, content_type, code = 500, dumps({"error": "internal error", "code": "internal_error"}), JSON, "internal_error"
        await send_response(send, status, body, extra, content_type)
        labels.release()
        if labels.model and self.runtime is not None and self.runtime.metrics is not None:
            metrics = self.runtime.metrics
            metrics.observe_request(labels.model, labels.version, labels.variant, status, labels.cache, time.perf_counter() - start)
            if code:
                metrics.error_child(labels.model, labels.version, code).inc()

    async def _route(
        self, scope: Scope, receive: Receive, headers: dict[bytes, bytes], extra: list[tuple[bytes, bytes]], request_id: str
    ) -> tuple[int, bytes, bytes]:
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        parts = path.strip("/").split("/")
        method = scope["method"]
        runtime = self.runtime
        if parts[0] == "admin":
            runtime.admission.authorize(headers.get(b"authorization"), "admin")
            body = await read_body(receive, headers, runtime.limits.max_body_bytes)
            status, doc = await admin_api.handle(runtime, method, parts[1:], body)
            return status, dumps(doc), JSON
        if not runtime.open_paths.fullmatch(path) and parts[-1:] != ["infer"]:  # infer is admitted in _infer
            runtime.admission.authorize(headers.get(b"authorization"), "predict")
        if self.exporter is not None:
            self.exporter.ensure_running()
        if parts == ["openapi.json"]:
            _expect(method, "GET")
            return 200, openapi.document_json(), JSON
        if parts == ["metrics"] and self.exporter is not None:
            _expect(method, "GET")
            self.exporter.sync()
            body, content_type = await asyncio.to_thread(runtime.metrics.exposition)
            return 200, body, content_type.encode()
        if parts[0] != "v2":
            raise NotFound(f"no route for {path}")
        rest = parts[1:]
        if rest and rest[0] == "models" and len(rest) >= 2:
            name, tail = rest[1], rest[2:]
            version = None
            if len(tail) >= 2 and tail[0] == "versions":
                version, tail = tail[1], tail[2:]
            if tail == ["infer"]:
                _expect(method, "POST")
                with runtime.tracer.request(INFER_SPAN, headers, model=name, request_id=request_id) as span:
                    return await self._infer(name, version, receive, headers, extra, span)
            _expect(method, "GET")
            if tail == []:
                return _json(self.runtime.model_metadata(name, version))
            if tail == ["ready"]:
                return self._model_ready(name, version)
            raise NotFound(f"no route for {path}")
        _expect(method, "GET")
        if rest == []:
            return _json({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS})
        if rest == ["health", "live"]:
            return _json({"live": True})
        if rest == ["health", "ready"]:
            ready = self.runtime.ready
            return (200 if ready else 503), dumps({"ready": ready}), JSON
        raise NotFound(f"no route for {path}")

    def _model_ready(self, name: str, version: str | None) -> tuple[int, bytes, bytes]:
        versions = self.runtime.registry.versions(name)
        entry = versions.get(version) if version else None
        if version and entry is None:
            raise NotFound(f"model '{name}' has no version '{version}'")
        ready = entry.state is VersionState.READY if entry else any(v.state is VersionState.READY for v in versions.values())
        return (200 if ready else 503), dumps({"name": name, "ready": ready}), JSON

    async def _infer(
        self,
        name: str,
        version: str | None,
        receive: Receive,
        headers: dict[bytes, bytes],
        extra: list[tuple[bytes, bytes]],
        span: Span,
    ) -> tuple[int, bytes, bytes]:
        runtime = self.runtime
        admitted = await runtime.admission.admit(headers.get(b"authorization"), headers.get(b"x-user-id"), "predict")
        extra.extend(admitted.headers)
        entry = runtime.resolve(name, version, admitted.user)
        span.set("version", entry.version)
        tracer = runtime.tracer
        with tracer.span("decode"):
            body = await read_body(receive, headers, runtime.limits.max_body_bytes)
            json_length = _int_header(headers, b"inference-header-content-length")
            request = decode_infer(body, json_length)
        timeout_ms = _int_header(headers, b"x-request-timeout-ms")
        deadline = runtime.deadline_after(timeout_ms) if timeout_ms is not None else None
        use_cache = b"no-cache" not in headers.get(b"cache-control", b"")
        outputs, hit = await runtime.infer(entry, request.inputs, deadline=deadline, use_cache=use_cache)
        current().cache = "hit" if hit else ("miss" if runtime.cache is not None else "bypass")
        extra.append((b"x-cache", b"hit" if hit else b"miss"))
        if request.outputs is not None:
            unknown = set(request.outputs) - set(outputs)
            if unknown:
                raise BadRequest(f"unknown output(s) {sorted(unknown)}")
            outputs = {k: outputs[k] for k in request.outputs}
        with tracer.span("encode"):
            payload, header_length = encode_infer(name, entry.version, request.id, outputs, request.binary_outputs)
        extra.append((b"x-model-version", entry.version.encode()))
        if header_length is None:
            return 200, payload, JSON
        extra.append((b"inference-header-content-length", str(header_length).encode()))
        return 200, payload, OCTETS


def _expect(method: str, allowed: str) -> None:
    if method != allowed and not (allowed == "GET" and method == "HEAD"):
        raise MethodNotAllowed(f"use {allowed}", headers={"Allow": allowed})


def _json(doc: Any) -> tuple[int, bytes, bytes]:
    return 200, dumps(doc), JSON


def _int_header(headers: dict[bytes, bytes], name: bytes) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    if not raw.strip().isdigit():
        raise BadRequest(f"header {name.decode()} must be a non-negative integer")
    return int(raw)
