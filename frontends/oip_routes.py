"""Handlers of the Open Inference Protocol (KServe V2) REST routes and of `/predict` (frontends/routes.py
declares them). Inference goes through the data plane (pipeline/dataplane.py); these only read HTTP and
write HTTP."""

from __future__ import annotations

from typing import Any

from core.errors import BadRequest
from frontends.asgi import JSON, OCTETS, dumps, read_body
from frontends.oip_codec import InferRequest, decode_infer, encode_infer, parse_json
from frontends.parts import FrontendParts
from frontends.predict_codec import outputs_to_json, rows_request, rows_to_inputs
from frontends.route_table import HttpRequest
from pipeline.dataplane import Answer, InferenceRequest, Tensors, earliest
from runners.registry import LoadedVersion

INFER_SPAN = "POST /v2/models/{name}/infer"  # the route, not the path: one span name for every model
PREDICT_SPAN = "POST /predict"
SERVER_NAME = "rtserve"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "health", "model_metadata", "model_configuration", "model_repository", "statistics",
              "schedule_policy"]


async def server_metadata(served: FrontendParts, request: HttpRequest) -> tuple[int, bytes, bytes]:
    return _json({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS})


async def live(served: FrontendParts, request: HttpRequest) -> tuple[int, bytes, bytes]:
    return _json({"live": True})


async def ready(served: FrontendParts, request: HttpRequest) -> tuple[int, bytes, bytes]:
    """The status only on an open path without a token; with one, why not ready, for the models the caller may use."""
    ready, why = served.readiness()
    doc: dict[str, Any] = {"ready": ready}
    admission = served.pipeline.admission
    admitted = request.admitted
    authorization = request.headers.get(b"authorization")
    if admitted is None and admission.shows_detail(authorization):
        admitted = admission.identify(authorization, None, "predict")
    if admitted is not None:
        models = {m: reason for m, reason in why.pop("models", {}).items() if admitted.may_use(m)}
        doc |= {**why, **({"models": models} if models else {}), "background": served.health.report()}
    return (200 if ready else 503), dumps(doc), JSON


async def model_metadata(served: FrontendParts, request: HttpRequest) -> tuple[int, bytes, bytes]:
    name, version = permitted_model(request)
    return _json(served.catalog.metadata(name, version))


async def model_config(served: FrontendParts, request: HttpRequest) -> tuple[int, bytes, bytes]:
    """Triton's JSON model config (tritonclient's `get_model_config`)."""
    name, version = permitted_model(request)
    return _json(served.catalog.config(name, version))


async def model_ready(served: FrontendParts, request: HttpRequest) -> tuple[int, bytes, bytes]:
    name, version = permitted_model(request)
    ready = served.catalog.ready(name, version)
    return (200 if ready else 503), dumps({"name": name, "ready": ready}), JSON


def permitted_model(request: HttpRequest) -> tuple[str, str | None]:
    """(model, version) of the path; 403 first for a caller that may not use the model, whether it exists or not."""
    name = request.params["name"]
    if request.admitted is not None:
        request.admitted.permit(name)
    return name, request.params.get("version")


async def infer(served: FrontendParts, request: HttpRequest) -> tuple[int, bytes, bytes]:
    limits = served.limits
    headers = request.headers
    decoded: InferRequest | None = None
    name = request.params["name"]

    async def decode(entry: LoadedVersion) -> Tensors:
        nonlocal decoded
        body = await read_body(request.receive, headers, limits.max_body_bytes, limits.body_read_timeout_s)
        decoded = decode_infer(body, limits, _int_header(headers, b"inference-header-content-length"))
        timeout_ms = _timeout_ms(headers)
        if decoded.timeout_us:
            timeout_ms = earliest(timeout_ms, decoded.timeout_us / 1000)
        return Tensors(decoded.inputs, decoded.outputs, decoded.priority, timeout_ms)

    def encode(answer: Answer) -> tuple[bytes, int | None]:
        return encode_infer(name, answer.version, decoded.id, answer.outputs, decoded.binary_outputs)

    payload, header_length = await served.pipeline.infer(InferenceRequest(
        decode, encode, name, request.params.get("version"), credentials=headers.get(b"authorization"),
        user=headers.get(b"x-user-id"), use_cache=_use_cache(headers), span=INFER_SPAN, trace=headers,
        request_id=request.request_id, headers=request.extra))
    if header_length is None:
        return 200, payload, JSON
    request.extra.append((b"inference-header-content-length", str(header_length).encode()))
    return 200, payload, OCTETS


async def predict(served: FrontendParts, request: HttpRequest) -> tuple[int, bytes, bytes]:
    """`{"model": ..., "inputs": [row, ...], "version": optional}`: rows in, named outputs as lists out; a row is a
    list of values, or an object keyed by feature (or input) name (see `rows_to_inputs`)."""
    limits = served.limits
    headers = request.headers
    rows = None

    async def target() -> tuple[str, str | None]:
        nonlocal rows
        body = await read_body(request.receive, headers, limits.max_body_bytes, limits.body_read_timeout_s)
        model, version, rows = rows_request(parse_json(body), "request")
        return model, version

    async def decode(entry: LoadedVersion) -> Tensors:
        runner = entry.runner
        return Tensors(rows_to_inputs(runner.signature, rows, limits, runner.feature_names), timeout_ms=_timeout_ms(headers))

    def encode(answer: Answer) -> bytes:
        return dumps({"model": answer.model, "version": answer.version, "outputs": outputs_to_json(answer.outputs)})

    return 200, await served.pipeline.infer(InferenceRequest(
        decode, encode, target=target, credentials=headers.get(b"authorization"), user=headers.get(b"x-user-id"),
        use_cache=_use_cache(headers), span=PREDICT_SPAN, trace=headers, request_id=request.request_id,
        headers=request.extra)), JSON


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
