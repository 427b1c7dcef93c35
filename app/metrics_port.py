"""The metrics port: Prometheus scrapes answered apart from the API, by `bentoml serve`'s own process.

Triton serves its metrics on a port of their own; so does this service (`RTSERVE_METRICS_PORT`,
3002). The API port then answers only what clients need, and a scrape costs the workers nothing:
`bentoml serve`'s own process (the one that starts and supervises the workers) binds the port in a
deployment hook, before any worker starts, and serves it from a thread with an event loop of its
own, reading the workers' multiprocess files (observability/metrics.py `Exposition`, cached for
`RTSERVE_METRICS_CACHE_S`, so a burst of scrapes renders once). A port that cannot be bound stops
the start with one line, as the gRPC port does.

The server is as small as the one thing it answers: `GET` or `HEAD /metrics` (a query string is
ignored), HTTP/1.1 with keep-alive, no request bodies. A request head must arrive whole within
`HEAD_TIMEOUT_S` and `MAX_HEAD_BYTES`, and at most `MAX_CONNECTIONS` are served at once; the rest
are closed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading

from observability.metrics import Exposition, MetricsSettings

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 8192
"""Largest request line and headers; Prometheus sends a few hundred bytes."""
HEAD_TIMEOUT_S = 10.0
"""Longest a connection may take to send a request head, or stay idle between requests."""
MAX_CONNECTIONS = 64
"""Connections served at once; Prometheus keeps one per target."""


class PortUnavailable(Exception):
    """The metrics port cannot be bound; the message is the one line to show."""


def bind(settings: MetricsSettings) -> socket.socket:
    """The listening socket, bound now (in `bentoml serve`'s process, before any worker starts)."""
    host, port = settings.host, settings.port
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
        sock.bind((host, port))
        sock.listen(64)
    except OSError as exc:
        raise PortUnavailable(
            f"metrics port {port} on {host} cannot be bound ({exc.strerror or exc}); "
            "set RTSERVE_METRICS_PORT to a free port, or 0 for none"
        ) from None
    sock.setblocking(False)
    return sock


class MetricsPort:
    """`GET /metrics` on a socket of its own, served by a daemon thread for the life of the process."""

    def __init__(self, exposition: Exposition) -> None:
        self.exposition = exposition
        self._connections = 0

    def start(self, sock: socket.socket) -> threading.Thread:
        thread = threading.Thread(target=asyncio.run, args=(self._serve(sock),), name="rtserve-metrics-port", daemon=True)
        thread.start()
        host, port = sock.getsockname()[:2]
        log.info("metrics (Prometheus) on %s:%d/metrics", host, port)
        return thread

    async def _serve(self, sock: socket.socket) -> None:
        server = await asyncio.start_server(self._connection, sock=sock, limit=MAX_HEAD_BYTES)
        async with server:
            await server.serve_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._connections >= MAX_CONNECTIONS:
            writer.close()
            return
        self._connections += 1
        try:
            while await self._request(reader, writer):
                pass
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._connections -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; whether the connection stays open for another."""
        async with asyncio.timeout(HEAD_TIMEOUT_S):
            head = await reader.readuntil(b"\r\n\r\n")
        line, *fields = head[:-4].decode("latin-1").split("\r\n")
        headers = {}
        for f in fields:
            name, _, value = f.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await _send(writer, 400, b"bad request\n", keep=False)
            return False
        method, target, version = parts
        keep = version == "HTTP/1.1" and headers.get("connection") != "close"
        if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
            await _send(writer, 400, b"no request bodies here\n", keep=False)
            return False
        if target.partition("?")[0] != "/metrics":
            await _send(writer, 404, b"only /metrics is served on this port\n", keep=keep)
        elif method not in ("GET", "HEAD"):
            await _send(writer, 405, b"GET /metrics\n", keep=keep, extra=b"Allow: GET, HEAD\r\n")
        else:
            body = self.exposition.text()  # on this thread's loop: a burst of scrapes waits for one render
            await _send(writer, 200, body, keep=keep, content_type=self.exposition.content_type, head_only=method == "HEAD")
        return keep


async def _send(
    writer: asyncio.StreamWriter, status: int, body: bytes, *, keep: bool, content_type: str = "text/plain; charset=utf-8",
    extra: bytes = b"", head_only: bool = False,
) -> None:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep else 'close'}\r\n"
    ).encode() + extra + b"\r\n"
    writer.write(head if head_only else head + body)
    await writer.drain()


def serve(settings: MetricsSettings, directory: str) -> None:
    """Bind the metrics port and serve it from now on (raises PortUnavailable); nothing when it is 0 or metrics are off."""
    if not settings.enabled or settings.port == 0:
        return
    sock = bind(settings)
    MetricsPort(Exposition(directory, settings.cache_s)).start(sock)
