"""A request's line and headers are limited while they arrive: past the limit, 431 and the connection closes.

uvicorn's httptools protocol has no limit on a request's head, and its parser joins every piece of
a header (and of the URL) it reads to the pieces before: the cost grows with the square of the
size. One client sending a 64 MB header held a worker's CPU for 5 s; an unterminated one of 300 MB
for two minutes, and half a gigabyte of memory. `HeadLimitedProtocol` counts the bytes of the head
it feeds the parser and never feeds more than `RTSERVE_LIMIT_MAX_HEADER_BYTES`: past it, the
client gets a 431 with the service's JSON error and the connection closes. A body is not counted
(its limit is the app's, `RTSERVE_LIMIT_MAX_BODY_BYTES`).

Counting is by what reaches the parser: a read that finishes one request and starts the next (a
pipelining client) starts the next head uncounted, so a head can get at most one read (256 KB
under uvloop) past the limit before it is cut.

The protocol is uvicorn's own, subclassed, and uvicorn picks it as its `auto` HTTP protocol (what
BentoML's worker asks for); it holds with the front door on or off (app/front_door.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import orjson
from uvicorn.protocols.http import auto, httptools_impl

from core.errors import HeaderTooLarge

LINGER_S = 1.0
"""How long a refused connection's further bytes are read and dropped before it closes."""


class HeadLimitedProtocol(httptools_impl.HttpToolsProtocol):
    """uvicorn's httptools protocol, feeding its parser at most `limit` bytes of a request's head."""

    limit: ClassVar[int] = 64 * 1024
    counters: ClassVar[list[Callable[[], None]]] = []
    """Called once per refused head (the worker counts it in its metrics)."""

    @classmethod
    def configure(cls, limit: int, on_refused: Callable[[], None] | None = None) -> None:
        """The worker's limit and what counts a refusal, set once its configuration is read."""
        cls.limit = limit
        cls.counters = [on_refused] if on_refused is not None else []

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.head_bytes: int | None = 0  # bytes of the current head so far; None while a body is read
        self.refused = False
        super().connection_made(transport)

    def on_headers_complete(self) -> None:
        self.head_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.head_bytes = 0

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # read and dropped until the connection closes
        if self.head_bytes is None:
            super().data_received(data)
            return
        room = self.limit - self.head_bytes
        if len(data) <= room:
            self.head_bytes += len(data)
            super().data_received(data)
            return
        self.head_bytes = self.limit
        super().data_received(data[:room])  # the head may end within it
        if self.transport.is_closing():
            return
        if self.head_bytes == self.limit:
            self.refuse()
        else:
            self.data_received(data[room:])

    def refuse(self) -> None:
        """431 with the service's error body (unless a response is under way), and close.

        Closing a socket with unread bytes sends a reset, which can destroy the 431 before the client
        reads it; so, where the transport can, the answer ends with a half-close and what the client
        still sends is read and dropped for `LINGER_S` (no parsing) before the connection closes."""
        self.refused = True
        self._unset_keepalive_if_required()
        for count in self.counters:
            count()
        if self.cycle is None or self.cycle.response_complete:
            error = HeaderTooLarge(f"the request line and headers exceed {self.limit} bytes")
            body = orjson.dumps(error.body())
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
            )
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()


def install() -> None:
    """uvicorn's `auto` HTTP protocol (resolved when a worker's server starts) becomes the limited one."""
    auto.AutoHTTPProtocol = HeadLimitedProtocol
