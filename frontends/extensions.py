"""REST routes of Triton's model repository and statistics extensions, in Triton's JSON.

    POST /v2/repository/index                              {"ready": true} optional          scope admin
    POST /v2/repository/models/{name}/load                 {"parameters": {...}} optional    scope admin
    POST /v2/repository/models/{name}/unload               {"parameters": {...}} optional    scope admin
    GET  /v2/models/stats
    GET  /v2/models/{name}[/versions/{version}]/stats                                        scope predict

The routes are declared in frontends/routes.py; these are their handlers.
Load and unload name versions in their parameters (`{"version": "v2"}`, or tritonclient's `config`
with a version policy; see pipeline/repository.py) or in the query (`?version=v2`, which tritonclient
sends with `query_params`). A load may bring the model's files instead (tritonclient's
`load_model(name, config=..., files=...)`: `config` plus `file:<version>/<name>` in base64; see
pipeline/triton_files.py), within a body limit of its own, RTSERVE_REPOSITORY_MAX_LOAD_BYTES.
They change routes, so, like the admin API, they need authentication on.
The work is done by pipeline/repository.py and pipeline/statistics.py, which the gRPC front end shares.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qs

from core.errors import BadRequest, Forbidden, Unavailable, shown
from frontends.asgi import JSON, Scope, dumps, read_body
from frontends.oip_codec import parse_json
from frontends.parts import FrontendParts
from frontends.route_table import HttpRequest
from pipeline.repository import ModelRepository, repository_unavailable, requested_versions
from pipeline.statistics import VersionStats
from pipeline.triton_files import load_with_files, split_files


async def statistics(served: FrontendParts, request: HttpRequest) -> tuple[int, bytes, bytes]:
    """Every model's, one model's or one version's statistics, of the models the caller may use."""
    name = request.params.get("name")
    admitted = request.admitted
    if admitted is not None and name is not None:
        admitted.permit(name)
    if served.statistics is None:
        raise Unavailable("statistics are not served by this front end's parts")
    served.metrics_current()
    found = await asyncio.to_thread(served.statistics.read, name, request.params.get("version"))
    if admitted is not None:
        found = [s for s in found if admitted.may_use(s.name)]
    return 200, dumps({"model_stats": [_triton_stats(s) for s in found]}), JSON


async def index(served: FrontendParts, request: HttpRequest) -> tuple[int, bytes, bytes]:
    body = await _body(served, request)
    repository = _repository(served)
    _only(body, {"ready"})
    ready = body.get("ready", False)
    if not isinstance(ready, bool):
        raise BadRequest("'ready' must be true or false")
    return 200, dumps([asdict(e) for e in await repository.index(ready_only=ready)]), JSON


async def load(served: FrontendParts, request: HttpRequest) -> tuple[int, bytes, bytes]:
    return await _load_or_unload(served, request, load=True)


async def unload(served: FrontendParts, request: HttpRequest) -> tuple[int, bytes, bytes]:
    return await _load_or_unload(served, request, load=False)


async def _load_or_unload(served: FrontendParts, request: HttpRequest, load: bool) -> tuple[int, bytes, bytes]:
    if not served.auth_enabled:
        raise Forbidden("model loads and unloads change routes and need authentication on (RTSERVE_AUTH_ENABLED)")
    repository = _repository(served)
    body = await _body(served, request, repository.settings.max_load_bytes if load else None)
    _only(body, {"parameters"})
    parameters = body.get("parameters")
    parameters = {} if parameters is None else parameters
    if not isinstance(parameters, dict):
        raise BadRequest("'parameters' must be an object")
    name = request.params["name"]
    files, parameters = split_files(parameters)
    if files and load:
        if served.deployer is None:
            raise repository_unavailable()
        if _query_version(request.scope, {}):
            raise BadRequest("a load with files takes its versions from the folders and the config's version_policy, "
                             "not ?version=")
        done = await load_with_files(served.deployer, name, parameters, {k: _base64(k, v) for k, v in files.items()})
        return 200, dumps({"name": name, "versions": done}), JSON
    versions = requested_versions({**parameters, **files, **_query_version(request.scope, parameters)}, load=load)
    done = await (repository.load(name, versions) if load else repository.unload(name, versions))
    return 200, dumps({"name": name, "versions": done}), JSON


async def _body(served: FrontendParts, request: HttpRequest, limit: int | None = None) -> dict[str, Any]:
    """The JSON body, at most `limit` bytes (the inference body limit when None)."""
    limits = served.limits
    limit = limits.max_body_bytes if limit is None else limit
    return _object(await read_body(request.receive, request.headers, limit, limits.body_read_timeout_s))


def _base64(key: str, value: Any) -> bytes:
    """A file's contents, base64 in the JSON body as tritonclient sends them."""
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            pass
    raise BadRequest(f"parameters {shown(key)} must be the file's contents in base64")


def _repository(served: FrontendParts) -> ModelRepository:
    if served.repository is None:
        raise repository_unavailable()
    return served.repository


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
