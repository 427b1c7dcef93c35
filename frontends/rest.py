"""The HTTP front end: the Open Inference Protocol (KServe V2) REST API and `/predict`, as one raw ASGI app
mounted into the BentoML service.

Raw ASGI rather than a framework because every microsecond here is paid on every request;
routing is a split of the path and a match on its parts. Inference goes through the data plane
(pipeline/dataplane.py); this module only reads HTTP and writes HTTP.
Authentication is decided by the route: inference and admin routes always need a token
(when auth is on), other routes unless they match the configured open paths.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from core.errors import (
    BadRequest,
    ClientDisconnected,
    DeadlineExceeded,
    MethodNotAllowed,
    NotFound,
    ServingError,
    Unavailable,
    shown,
)
from frontends import admin_api, extensions, jobs_api, openapi, stream
from frontends.asgi import JSON, OCTETS, Receive, Scope, Send, dumps, header_map, read_body, send_response
from frontends.deadlines import deadlines
from frontends.oip_codec import InferRequest, decode_infer, encode_infer, parse_json
from frontends.parts import FrontendParts
from frontends.predict_codec import outputs_to_json, rows_request, rows_to_inputs
from frontends.request_ids import request_id_of
from pipeline.dataplane import Answer, InferenceRequest, Tensors, earliest
from runners.registry import LoadedVersion

log = logging.getLogger(__name__)

INFER_SPAN = "POST /v2/models/{name}/infer"  # the route, not the path: one span name for every model
PREDICT_SPAN = "POST /predict"
SERVER_NAME = "rtserve"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "health", "model_metadata", "model_repository", "statistics", "schedule_policy"]


class InferenceApp:
    """ASGI callable; `bind` gives it the worker's parts once the service instance exists."""

    def __init__(self) -> None:
        self.parts: FrontendParts | None = None

    def bind(self, parts: FrontendParts) -> None:
        self.parts = parts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = header_map(scope)
        request_id = request_id_of(headers)
        extra = [(b"x-request-id", request_id.encode("ascii"))]
        try:
            if self.parts is None:
                raise Unavailable("service is starting", headers={"Retry-After": "1"})
            if (where := stream.target(scope)) is not None:
                await stream.serve(self.parts, scope, receive, send, headers, extra, request_id, where)
                return
            budget = deadlines.start(self.parts.limits.request_timeout_s)
            try:
                status, body, content_type = await self._route(scope, receive, headers, extra, request_id)
            except asyncio.CancelledError:
                if deadlines.expired(budget):  # our own request timeout, not the server going away
                    raise DeadlineExceeded(f"request took longer than {self.parts.limits.request_timeout_s:g} s") from None
                raise
            finally:
                deadlines.stop(budget)
        except ServingError as exc:
            status, body, content_type = exc.status.value, dumps(exc.body()), JSON
            extra.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items())
            # One line per error, with the request id; client mistakes at INFO so they do not page anyone.
            level = logging.WARNING if exc.status >= 500 else logging.INFO
            log.log(level, "request %s %s %s: %d %s: %s", request_id, scope["method"], shown(scope["path"]),
                    exc.status.value, exc.code, exc.message)
        except ClientDisconnected:
            log.info("request %s %s %s: client disconnected", request_id, scope["method"], shown(scope["path"]))
            return
        except Exception:
            log.exception("request %s %s failed", request_id, shown(scope["path"]))
            status, body, content_type = 500, dumps({"error": "internal error", "code": "internal_error"}), JSON
        await send_response(send, status, body, extra, content_type)

    async def _route(
        self, scope: Scope, receive: Receive, headers: dict[bytes, bytes], extra: list[tuple[bytes, bytes]], request_id: str
    ) -> tuple[int, bytes | AsyncIterator[bytes], bytes]:
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        parts = path.strip("/").split("/")
        method = scope["method"]
        served = self.parts
        admission = served.pipeline.admission
        if served.on_request is not None:
            served.on_request()
        if parts[0] == "admin":
            if not served.auth_enabled:  # without authentication nobody may change routes
                raise NotFound(f"no route for {path}")
            admission.authorize(headers.get(b"authorization"), "admin")
            body = await read_body(receive, headers, served.limits.max_body_bytes, served.limits.body_read_timeout_s)
            status, doc = await admin_api.handle(served.admin, method, parts[1:], body, served.repository,
                                                 scope.get("query_string", b""))
            return status, dumps(doc), JSON
        if (answer := await extensions.route(served, scope, receive, headers, path, parts)) is not None:
            return answer
        if parts == ["predict"]:
            _expect(method, "POST")
            return await self._predict(receive, headers, extra, request_id)
        infer = _infer_route(parts)
        if infer is not None:
            _expect(method, "POST")
            return await self._infer(*infer, receive, headers, extra, request_id)
        if parts[:2] == ["v2", "jobs"]:
            return await jobs_api.handle(served, method, parts[2:], scope, receive, headers, extra)
        admitted = None if served.open_paths.fullmatch(path) else admission.authorize(headers.get(b"authorization"), "predict")
        _expect(method, "GET")
        if parts == ["openapi.json"]:
            return 200, openapi.document_json(), JSON
        if parts == ["metrics"] and served.metrics is not None and served.metrics.on_api_port:
            served.metrics_current()
            body, content_type = await asyncio.to_thread(served.metrics.exposition)
            return 200, body, content_type.encode()
        if parts[0] != "v2":
            raise NotFound(f"no route for {path}")
        rest = parts[1:]
        if rest and rest[0] == "models" and len(rest) >= 2:
            name, tail = rest[1], rest[2:]
            if admitted is not None:
                admitted.permit(name)
            version = None
            if len(tail) >= 2 and tail[0] == "versions":
                version, tail = tail[1], tail[2:]
            if tail == []:
                return _json(served.catalog.metadata(name, version))
            if tail == ["ready"]:
                ready = served.catalog.ready(name, version)
                return (200 if ready else 503), dumps({"name": name, "ready": ready}), JSON
            raise NotFound(f"no route for {path}")
        if rest == []:
            return _json({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS})
        if rest == ["health", "live"]:
            return _json({"live": True})
        if rest == ["health", "ready"]:
            ready, why = served.readiness()
            doc: dict[str, Any] = {"ready": ready}
            authorization = headers.get(b"authorization")
            if admitted is None and admission.shows_detail(authorization):
                admitted = admission.identify(authorization, None, "predict")
            if admitted is not None:  # open without a token: the status only; a caller sees only the models it may use
                models = {m: reason for m, reason in why.pop("models", {}).items() if admitted.may_use(m)}
                doc |= {**why, **({"models": models} if models else {}), "background": served.health.report()}
            return (200 if ready else 503), dumps(doc), JSON
        raise NotFound(f"no route for {path}")

    async def _infer(
        self,
        name: str,
        version: str | None,
        receive: Receive,
        headers: dict[bytes, bytes],
        extra: list[tuple[bytes, bytes]],
        request_id: str,
    ) -> tuple[int, bytes, bytes]:
        limits = self.parts.limits
        decoded: InferRequest | None = None

        async def decode(entry: LoadedVersion) -> Tensors:
            nonlocal decoded
            body = await read_body(receive, headers, limits.max_body_bytes, limits.body_read_timeout_s)
            decoded = decode_infer(body, limits, _int_header(headers, b"inference-header-content-length"))
            timeout_ms = earliest(_timeout_ms(headers), decoded.timeout_us and decoded.timeout_us / 1000)
            return Tensors(decoded.inputs, decoded.outputs, decoded.priority, timeout_ms)

        def encode(answer: Answer) -> tuple[bytes, int | None]:
            return encode_infer(name, answer.version, decoded.id, answer.outputs, decoded.binary_outputs)

        payload, header_length = await self.parts.pipeline.infer(InferenceRequest(
            decode, encode, name, version, credentials=headers.get(b"authorization"), user=headers.get(b"x-user-id"),
            use_cache=_use_cache(headers), span=INFER_SPAN, trace=headers, request_id=request_id, headers=extra))
        if header_length is None:
            return 200, payload, JSON
        extra.append((b"inference-header-content-length", str(header_length).encode()))
        return 200, payload, OCTETS

    async def _predict(
        self, receive: Receive, headers: dict[bytes, bytes], extra: list[tuple[bytes, bytes]], request_id: str
    ) -> tuple[int, bytes, bytes]:
        """`{"model": ..., "inputs": [[...], ...], "version": optional}`: rows in, named outputs as lists out."""
        limits = self.parts.limits
        rows = None

        async def target() -> tuple[str, str | None]:
            nonlocal rows
            body = await read_body(receive, headers, limits.max_body_bytes, limits.body_read_timeout_s)
            model, version, rows = rows_request(parse_json(body), "request")
            return model, version

        async def decode(entry: LoadedVersion) -> Tensors:
            return Tensors(rows_to_inputs(entry.runner.input_spec, rows, limits), timeout_ms=_timeout_ms(headers))

        def encode(answer: Answer) -> bytes:
            return dumps({"model": answer.model, "version": answer.version, "outputs": outputs_to_json(answer.outputs)})

        return 200, await self.parts.pipeline.infer(InferenceRequest(
            decode, encode, target=target, credentials=headers.get(b"authorization"), user=headers.get(b"x-user-id"),
            use_cache=_use_cache(headers), span=PREDICT_SPAN, trace=headers, request_id=request_id, headers=extra)), JSON


def _infer_route(parts: list[str]) -> tuple[str, str | None] | None:
    """(model, version) for `/v2/models/{name}[/versions/{version}]/infer`, else None."""
    if len(parts) == 4 and parts[:2] == ["v2", "models"] and parts[3] == "infer":
        return parts[2], None
    if len(parts) == 6 and parts[:2] == ["v2", "models"] and parts[3] == "versions" and parts[5] == "infer":
        return parts[2], parts[4]
    return None


def _expect(method: str, allowed: str) -> None:
    if method != allowed and not (allowed == "GET" and method == "HEAD"):
        raise MethodNotAllowed(f"use {allowed}", headers={"Allow": allowed})


def _json(doc: Any) -> tuple[int, bytes, bytes]:
    return 200, dumps(doc), JSON


def _int_header(headers: dict[bytes, bytes], name: bytes) -> int | None:
    """A non-negative integer header; at most 12 ASCII digits, so no value can overflow what uses it."""
    raw = headers.get(name)
    if raw is None:
        return None
    raw = raw.strip()
    if not (raw.isdigit() and raw.isascii() and len(raw) <= 12):
        raise BadRequest(f"header {name.decode()} must be a non-negative integer of at most 12 digits")
    return int(raw)


def _timeout_ms(headers: dict[bytes, bytes]) -> int | None:
    return _int_header(headers, b"x-request-timeout-ms")


def _use_cache(headers: dict[bytes, bytes]) -> bool:
    return b"no-cache" not in headers.get(b"cache-control", b"")
