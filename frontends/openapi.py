"""The OpenAPI 3 document of the whole HTTP API (frontends/openapi.yaml), parsed once and served as JSON.

The YAML file is the one source: people edit it, tests check it against the running server,
and `GET /openapi.json` serves it to clients and to schemathesis.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import orjson
import yaml

DOCUMENT_PATH = Path(__file__).with_name("openapi.yaml")


@functools.cache
def document() -> dict[str, Any]:
    """The parsed document; YAML anchors are resolved, so the result is plain JSON data."""
    with DOCUMENT_PATH.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


@functools.cache
def document_json() -> bytes:
    """The response body of `GET /openapi.json`, encoded once per process."""
    return orjson.dumps(document())
