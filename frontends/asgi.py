"""Minimal ASGI plumbing: read a bounded body, send a response. No framework on the hot path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from core.errors import ClientDisconnected, PayloadTooLarge, RequestTimeout
from frontends.deadlines import deadlines
from gateway.auth import combine_credentials

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

JSON = b"application/json"
OCTETS = b"application/octet-stream"


def header_map(scope: Scope) -> dict[bytes, bytes]:
    raw = scope["headers"]
    headers = dict(raw)
    if len(headers) != len(raw):
        combine_credentials(headers, raw)
    return headers


async def read_body(receive: Receive, headers: dict[bytes, bytes], limit: int, timeout_s: float) -> bytes:
    """The whole body, at most `limit` bytes, within `timeout_s` (413 and 408 otherwise).

    A client that disconnects mid-body raises `ClientDisconnected`: there is no one left to answer.
    """
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and len(declared) < 20 and int(declared) > limit:
        raise PayloadTooLarge(f"body of {int(declared)} bytes is over the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    limit_read = deadlines.start(timeout_s)
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
    except asyncio.CancelledError:
        if deadlines.expired(limit_read):
            # Closing the connection frees it: else uvicorn keeps reading the rest of the slow body.
            raise RequestTimeout(f"request body not received within {timeout_s:g} s", headers={"Connection": "close"}) from None
        raise
    finally:
        deadlines.stop(limit_read)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_response(
    send: Send, status: int, body: bytes | AsyncIterator[bytes], headers: list[tuple[bytes, bytes]], content_type: bytes = JSON
) -> None:
    """One response; a body given as pieces goes out chunked, each piece once the server took the one before
    (uvicorn's `send` waits while the client is not reading), so a slow reader holds one piece, not the body."""
    if not isinstance(body, bytes):
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type), *headers]})
        async for piece in body:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def dumps(doc: Any) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
