"""REST routes of Triton's model repository and statistics extensions, in Triton's JSON.

    POST /v2/repository/index                              {"ready": true} optional          scope admin
    POST /v2/repository/models/{name}/load                 {"parameters": {...}} optional    scope admin
    POST /v2/repository/models/{name}/unload               {"parameters": {...}} optional    scope admin
    GET  /v2/models/stats
    GET  /v2/models/{name}[/versions/{version}]/stats                                        scope predict

Load and unload name versions in their parameters (`{"version": "v2"}`, or tritonclient's `config`
with a version policy; see pipeline/repository.py) or in the query (`?version=v2`, which tritonclient
sends with `query_params`). They change routes, so, like the admin API, they need authentication on.
The work is done by pipeline/repository.py and pipeline/statistics.py, which the gRPC front end shares.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qs

from core.errors import BadRequest, Forbidden, MethodNotAllowed, NotFound, Unavailable, shown
from frontends.asgi import JSON, Receive, Scope, dumps, read_body
from frontends.oip_codec import parse_json
from frontends.parts import FrontendParts
from pipeline.repository import repository_unavailable, requested_versions
from pipeline.statistics import VersionStats


async def route(
    served: FrontendParts, scope: Scope, receive: Receive, headers: dict[bytes, bytes], path: str, parts: list[str]
) -> tuple[int, bytes, bytes] | None:
    """The answer when the path is one of these extensions' routes, else None."""
    if parts[:2] == ["v2", "repository"]:
        return await _repository(served, scope, receive, headers, parts[2:])
    stats = _stats_route(parts)
    if stats is None:
        return None
    admitted = None if served.open_paths.fullmatch(path) else served.pipeline.admission.authorize(headers.get(b"authorization"), "predict")
    if admitted is not None and stats[0] is not None:
        admitted.permit(stats[0])
    _allow(scope["method"], "GET", "HEAD")
    if served.statistics is None:
        raise Unavailable("statistics are not served by this front end's parts")
    served.metrics_current()
    found = await asyncio.to_thread(served.statistics.read, *stats)
    if admitted is not None:
        found = [s for s in found if admitted.may_use(s.name)]
    return 200, dumps({"model_stats": [_triton_stats(s) for s in found]}), JSON


async def _repository(
    served: FrontendParts, scope: Scope, receive: Receive, headers: dict[bytes, bytes], rest: list[str]
) -> tuple[int, bytes, bytes]:
    served.pipeline.admission.authorize(headers.get(b"authorization"), "admin")
    if rest == ["index"]:
        action, name = "index", None
    elif len(rest) == 3 and rest[0] == "models" and rest[2] in ("load", "unload"):
        action, name = rest[2], rest[1]
    else:
        raise NotFound(f"no route for /v2/repository/{'/'.join(rest)}")
    _allow(scope["method"], "POST")
    if action != "index" and not served.auth_enabled:
        raise Forbidden("model loads and unloads change routes and need authentication on (RTSERVE_AUTH_ENABLED)")
    limits = served.limits
    body = _object(await read_body(receive, headers, limits.max_body_bytes, limits.body_read_timeout_s))
    repository = served.repository
    if repository is None:
        raise repository_unavailable()
    if action == "index":
        _only(body, {"ready"})
        ready = body.get("ready", False)
        if not isinstance(ready, bool):
            raise BadRequest("'ready' must be true or false")
        return 200, dumps([asdict(e) for e in await repository.index(ready_only=ready)]), JSON
    _only(body, {"parameters"})
    parameters = body.get("parameters")
    parameters = {} if parameters is None else parameters
    if not isinstance(parameters, dict):
        raise BadRequest("'parameters' must be an object")
    versions = requested_versions({**parameters, **_query_version(scope, parameters)}, load=action == "load")
    if action == "load":
        done = await repository.load(name, versions)
    else:
        done = await repository.unload(name, versions)
    return 200, dumps({"name": name, "versions": done}), JSON


def _stats_route(parts: list[str]) -> tuple[str | None, str | None] | None:
    """(model, version) for the statistics routes (None for all), else None."""
    if len(parts) < 3 or parts[:2] != ["v2", "models"] or parts[-1] != "stats":
        return None
    if len(parts) == 3:
        return None, None
    if len(parts) == 4:
        return parts[2], None
    if len(parts) == 6 and parts[3] == "versions":
        return parts[2], parts[4]
    return None


def _triton_stats(s: VersionStats) -> dict[str, Any]:
    phases = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")
    return {
        "name": s.name,
        "version": s.version,
        "last_inference": s.last_inference,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {p: asdict(getattr(s, p)) for p in phases},
        "batch_stats": [asdict(b) for b in s.batch_stats],
    }


def _query_version(scope: Scope, parameters: dict) -> dict[str, str]:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    unknown = set(query) - {"version"}
    if unknown:
        raise BadRequest(f"unknown query parameter(s) {shown(sorted(unknown))}; accepted: version")
    if "version" not in query:
        return {}
    if len(query["version"]) > 1 or ("version" in parameters and parameters["version"] != query["version"][0]):
        raise BadRequest("name the version once (the query and the parameters differ)")
    return {"version": query["version"][0]}


def _object(body: bytes) -> dict[str, Any]:
    doc = parse_json(body) if body.strip() else {}
    if not isinstance(doc, dict):
        raise BadRequest("body must be a JSON object")
    return doc


def _only(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(body) - allowed
    if unknown:
        raise BadRequest(f"unknown field(s) {shown(sorted(unknown))}; accepted: {', '.join(sorted(allowed))}")


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise MethodNotAllowed(f"use {allowed[0]}", headers={"Allow": ", ".join(allowed)})

