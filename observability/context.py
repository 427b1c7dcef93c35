"""The labels of the request being served, set where they are decided and read where metrics are recorded.

The HTTP layer starts a `RequestLabels` per request; the router fills in model, version and
variant, the cache its outcome. Nothing has to thread them through every call.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class RequestLabels:
    model: str = ""
    version: str = ""
    variant: str = "stable"
    cache: str = "bypass"
    entry: Any = None  # the LoadedVersion serving the request, held until the response is sent

    def release(self) -> None:
        """The response is out: the version no longer waits for this request before unloading."""
        if self.entry is not None:
            self.entry.active -= 1
            self.entry = None


_current: ContextVar[RequestLabels | None] = ContextVar("rtserve_request_labels", default=None)


def start_request() -> RequestLabels:
    labels = RequestLabels()
    _current.set(labels)
    return labels


def current() -> RequestLabels:
    """This request's labels; a throwaway object outside a request, so callers never check."""
    return _current.get() or RequestLabels()
