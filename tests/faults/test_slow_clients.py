"""Slow clients: a trickled body is cut off by the body read timeout, and a few hundred slow or
idle connections leave the p99 of normal requests within 20 %.

uvicorn (as BentoML runs it) has no timeout for a connection that has not finished its request
headers: idle and header-trickling connections are held until the client goes, bounded only by
the worker's file descriptors. The p99 test measures what holding them costs."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

from loadtest.slowclients import compare
from tests.faults.conftest import BODY_READ_TIMEOUT_S


async def trickle_body(url: str, token: str, gap_s: float = 0.2) -> tuple[bytes, float, bool]:
    """Declare a 1000-byte body and send a byte every `gap_s`: (the answer's head, seconds to it,
    whether the server closed the connection after answering)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(
        f"POST /v2/models/digits-sklearn/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n".encode()
    )
    start = time.monotonic()

    async def send() -> None:
        for _ in range(1000):
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(gap_s)

    sender = asyncio.create_task(send())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BODY_READ_TIMEOUT_S + 10)
        answered = time.monotonic() - start
        try:
            await asyncio.wait_for(reader.read(), 5)  # the JSON error, then the end of the stream
            closed = True
        except ConnectionResetError:  # closed with trickled bytes still unread, so the kernel sent a reset
            closed = True
        except TimeoutError:
            closed = False
    finally:
        sender.cancel()
        writer.close()
    return head, answered, closed


def test_a_trickled_body_is_answered_408_after_the_body_read_timeout(file_gateway):
    head, seconds, closed = asyncio.run(trickle_body(file_gateway.url, file_gateway.token(ttl=600)))
    print(
        f"\ntrickled body: {head.splitlines()[0].decode()} after {seconds:.2f} s (timeout {BODY_READ_TIMEOUT_S} s); "
        f"connection closed by the server: {closed}"
    )
    assert head.startswith(b"HTTP/1.1 408"), head
    assert BODY_READ_TIMEOUT_S <= seconds < BODY_READ_TIMEOUT_S + 1.5
    assert closed


def test_normal_p99_holds_with_300_slow_connections(file_gateway):
    """Pooled p99 over alternating blocks with and without slow clients. On a shared 2-core machine one
    comparison can be thrown by a neighbour's burst (runs measured 1.06-1.22), so up to three are taken
    before failing; a real cost shows in all of them."""
    headers = file_gateway.headers(ttl=600)
    results = []
    for _ in range(3):
        result = compare(file_gateway.url, headers, per_kind=100, requests=300, rounds=5, gap_s=1.0)
        results.append(result)
        print("\n" + result.report())
        if result.ratio <= 1.2:
            break
    assert results[-1].ratio <= 1.2, [round(r.ratio, 2) for r in results]
