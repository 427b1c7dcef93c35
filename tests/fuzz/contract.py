"""The error contract every response must keep, as schemathesis checks.

The allowed (status, code) pairs are read from the error table of docs/api.md, so the table and the
server cannot drift apart unnoticed. A 500 is never allowed, even with its documented code: a
fuzzed request must not make the model (or anything else) fail.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import schemathesis

ERRORS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "api.md"
_ROW = re.compile(r"^\| (\d{3}) \| ([^|]+) \|")


def error_table(path: Path = ERRORS_PAGE) -> dict[int, set[str]]:
    """status -> codes, from the table that follows "Errors are JSON" in docs/api.md."""
    text = path.read_text(encoding="utf-8")
    start = text.index("Errors are JSON")
    table: dict[int, set[str]] = {}
    for line in text[start:].splitlines()[1:]:
        if table and not line.startswith("|"):
            break
        match = _ROW.match(line)
        if match:
            table.setdefault(int(match.group(1)), set()).update(re.findall(r"`([a-z_]+)`", match.group(2)))
    if not table:
        raise ValueError(f"no error table after 'Errors are JSON' in {path}")
    return table


ALLOWED_ERRORS = {status: codes for status, codes in error_table().items() if status != 500}


def error_problem(status: int, body: bytes) -> str | None:
    """Why this error response breaks the contract, or None when it keeps it."""
    if status < 400:
        return None
    if status not in ALLOWED_ERRORS:
        return f"status {status} is not in the error table of docs/api.md (allowed: {sorted(ALLOWED_ERRORS)})"
    try:
        doc: Any = json.loads(body)
    except ValueError:
        return f"status {status} with a body that is not JSON: {body[:200]!r}"
    if not (isinstance(doc, dict) and set(doc) == {"error", "code"} and all(isinstance(v, str) for v in doc.values())):
        return f"status {status}: body is not {{\"error\": str, \"code\": str}}: {body[:200]!r}"
    if doc["code"] not in ALLOWED_ERRORS[status]:
        return f"status {status} with code {doc['code']!r}; docs/api.md allows {sorted(ALLOWED_ERRORS[status])}"
    return None


@schemathesis.check
def error_contract(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> bool | None:
    """No 500, no status outside the error table of docs/api.md, every error in the one JSON shape with its code."""
    problem = error_problem(response.status_code, response.content)
    if problem is not None:
        raise AssertionError(problem)
    return None


def protected(operation: schemathesis.APIOperation) -> bool:
    """Whether the document says the operation needs a token (its own `security`, else the root's)."""
    security = operation.definition.raw.get("security", operation.schema.raw_schema.get("security", []))
    return bool(security)


def reaches_its_route(case: schemathesis.Case) -> bool:
    """False when a path parameter would change which route the server sees ('/' or dot segments in a name)."""
    values = [str(v) for v in (case.path_parameters or {}).values()]
    return all("/" not in v and v not in (".", "..") for v in values)


def refusal_problem(case: schemathesis.Case, status: int, body: bytes, credentials: str) -> str | None:
    """For a request without a token (`none`) or with one lacking the scope (`scope`): a protected
    operation must refuse it (401 / 403) before looking at anything else."""
    if not protected(case.operation) or not reaches_its_route(case):
        return None
    if case.method.upper() != case.operation.method.upper():
        return None  # a method the operation does not have (coverage phase): 405 may come first
    expected = {"none": (401, "unauthorized"), "scope": (403, "forbidden")}[credentials]
    code = None
    try:
        code = json.loads(body).get("code")
    except (ValueError, AttributeError):
        pass
    if (status, code) != expected:
        return f"{credentials} credentials on a protected operation: expected {expected}, got {status} {code!r}"
    return None
