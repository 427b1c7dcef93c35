"""The OpenAPI 3 document of the whole HTTP API: its paths and methods are the route table's
(frontends/routes.py), each operation's text is frontends/openapi.yaml's.

People edit the YAML file; `build` checks it against the table both ways (an operation no route serves,
or a route without its operation, is an error, so neither can drift), and `GET /openapi.json` serves the
result to clients and to schemathesis.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from frontends.route_table import Route
from gateway.settings import GatewaySettings

DOCUMENT_PATH = Path(__file__).with_name("openapi.yaml")
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@functools.cache
def written() -> dict[str, Any]:
    """The YAML file, parsed; anchors are resolved, so the result is plain JSON data."""
    with DOCUMENT_PATH.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def build(routes: Iterable[Route]) -> dict[str, Any]:
    """The document of the documented `routes`, in their order.

    An operation is open (`security: []`) exactly where the route is `openable` and the default
    `RTSERVE_OPEN_PATHS` open its path; the YAML must say so, as schemathesis reads it directly."""
    doc = written()
    open_by_default = GatewaySettings.model_construct().open_path_pattern()
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not route.documented:
            continue
        item = doc["paths"].get(route.path, {})
        built = paths.setdefault(route.path, {k: v for k, v in item.items() if k not in METHODS})
        for method in route.methods:
            operation = item.get(method.lower())
            if operation is None:
                raise ValueError(f"{method} {route.path} is routed but {DOCUMENT_PATH.name} has no operation for it")
            is_open = route.openable and open_by_default.fullmatch(route.path) is not None
            if (operation.get("security") == []) != is_open:
                raise ValueError(f"{method} {route.path}: {DOCUMENT_PATH.name} says security "
                                 f"{operation.get('security', 'bearerAuth')}, the route is {'open' if is_open else 'scope ' + route.scope}")
            built[method.lower()] = operation
    unrouted = sorted(f"{m.upper()} {p}" for p, item in doc["paths"].items() for m in item
                      if m in METHODS and m not in paths.get(p, {}))
    if unrouted:
        raise ValueError(f"{DOCUMENT_PATH.name} documents operations no route serves: {', '.join(unrouted)}")
    return {**doc, "paths": paths}
