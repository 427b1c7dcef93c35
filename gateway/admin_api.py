"""The admin HTTP API (scope `admin`): routes, loaded versions, experiments, canaries, shadows.

    GET    /admin/models
    POST   /admin/models/{name}/versions/{version}/load | unload
    PUT    /admin/models/{name}/weights            {"weights": {"v1": 90, "v2": 10}}
    GET|POST|DELETE /admin/models/{name}/experiment   POST {"variants": {...}, "control": "v1", "mirror_fraction": 0.1}
    GET|POST|DELETE /admin/models/{name}/canary       POST {"version": "v2", "steps": [...], "hold_s": 30, ...}
    PUT|DELETE /admin/models/{name}/shadow         {"version": "v2", "fraction": 0.1}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.codec import parse_json
from gateway.errors import BadRequest, MethodNotAllowed, NotFound, Unavailable

if TYPE_CHECKING:
    from gateway.runtime import Runtime


async def handle(runtime: Runtime, method: str, parts: list[str], body: bytes) -> tuple[int, Any]:
    """(status, JSON document) for /admin/... ; `parts` is the path split on '/' without 'admin'."""
    admin = runtime.admin
    if admin is None:
        raise Unavailable("routing state is not available yet", headers={"Retry-After": "1"})
    if parts == ["models"]:
        _allow(method, "GET")
        return 200, await admin.describe()
    if len(parts) < 3 or parts[0] != "models":
        raise NotFound("no such admin route")
    name, rest = parts[1], parts[2:]
    if len(rest) == 3 and rest[0] == "versions" and rest[2] in ("load", "unload"):
        _allow(method, "POST")
        routes = await (admin.load if rest[2] == "load" else admin.unload)(name, rest[1])
        return 202, routes.model_dump(mode="json")
    if rest == ["weights"]:
        _allow(method, "PUT")
        weights = _object(body).get("weights")
        if not isinstance(weights, dict) or not all(isinstance(w, (int, float)) for w in weights.values()):
            raise BadRequest("'weights' must map versions to numbers")
        return 200, (await admin.set_weights(name, weights)).model_dump(mode="json")
    if rest == ["experiment"]:
        if method == "GET":
            return 200, await runtime.experiment_summary(name)
        if method == "POST":
            return 201, (await admin.start_experiment(name, _object(body))).model_dump(mode="json")
        _allow(method, "DELETE")
        return 200, (await admin.stop_experiment(name)).model_dump(mode="json")
    if rest == ["canary"]:
        if method == "GET":
            routes = await admin.store.get(name)
            if routes is None or routes.canary is None:
                raise NotFound(f"no canary of '{name}'")
            return 200, {"weights": routes.weights, **routes.canary.model_dump(mode="json")}
        if method == "POST":
            return 201, (await admin.start_canary(name, _object(body))).model_dump(mode="json")
        _allow(method, "DELETE")
        return 200, (await admin.abort_canary(name)).model_dump(mode="json")
    if rest == ["shadow"]:
        if method == "DELETE":
            return 200, (await admin.set_shadow(name, None, 0.0)).model_dump(mode="json")
        _allow(method, "PUT")
        doc = _object(body)
        if not isinstance(doc.get("version"), str) or not isinstance(doc.get("fraction"), (int, float)):
            raise BadRequest("'version' (string) and 'fraction' (number) are required")
        return 200, (await admin.set_shadow(name, doc["version"], float(doc["fraction"]))).model_dump(mode="json")
    raise NotFound("no such admin route")


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise MethodNotAllowed(f"use {allowed}", headers={"Allow": allowed})


def _object(body: bytes) -> dict[str, Any]:
    doc = parse_json(body) if body else {}
    if not isinstance(doc, dict):
        raise BadRequest("body must be a JSON object")
    return doc
