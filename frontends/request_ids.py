"""Request ids for every front end: the client's own when it is a plain token, else a new one.

The id is echoed to the client and written in logs, so a client's value is taken only when it
cannot smuggle anything into either.
"""

from __future__ import annotations

import itertools
import os
import re

_CLIENT_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")

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


def request_id_from(given: bytes | None) -> str:
    """The client's id when it is a plain token (it is echoed and logged), else a new one."""
    return given.decode("ascii") if given and _CLIENT_REQUEST_ID.fullmatch(given) else new_request_id()


def request_id_of(headers: dict[bytes, bytes]) -> str:
    """The request id for a request with these (lower-case) headers or metadata."""
    return request_id_from(headers.get(b"x-request-id"))
