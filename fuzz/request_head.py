"""atheris target: request heads of any size and split, through the worker's HTTP protocol (`HeadLimitedProtocol`).

The input's first byte chooses how the rest arrives (read sizes of 1 to 256 bytes); the rest is
what a client sends. The limit is 1 KiB here so that small inputs reach it. A crash is an exception
out of the protocol, or a head over the limit that neither got a 431 nor was refused by the parser
(a 400 that closes the connection): the limit must hold however the bytes are split."""

from __future__ import annotations

import asyncio
import re

import atheris
import httptools  # noqa: F401 - imported before instrumentation: only the project's code is instrumented
import orjson  # noqa: F401
from uvicorn.config import Config
from uvicorn.server import ServerState

with atheris.instrument_imports():
    from app.head_limit import HeadLimitedProtocol

from fuzz.common import main

LIMIT = 1024
HEAD_END = re.compile(rb"\n\r?\n")
LOOP = asyncio.new_event_loop()


async def _app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


CONFIG = Config(app=_app, log_level="critical")
CONFIG.load()
HeadLimitedProtocol.configure(LIMIT)


class Transport:
    """What the protocol writes and whether it closed: a socket's transport, in memory."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name, default)

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def set_protocol(self, protocol: object) -> None: ...


async def _settle(tasks: set[asyncio.Task]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)


def target(data: bytes) -> None:
    if not data:
        return
    step, stream = data[0] + 1, data[1:]
    protocol = HeadLimitedProtocol(config=CONFIG, server_state=ServerState(), app_state={}, _loop=LOOP)
    transport = Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    for start in range(0, len(stream), step):
        if transport.closing:
            break
        protocol.data_received(stream[start : start + step])
    head_end = HEAD_END.search(stream)  # the parser also ends a head at a bare blank line
    first_head = len(stream) if head_end is None else head_end.end()
    if first_head > LIMIT and not (protocol.refused or transport.closing):
        raise AssertionError(f"a head of {first_head} bytes passed a limit of {LIMIT}")
    if protocol.refused and not transport.written.startswith(b"HTTP/1.1 431") and protocol.cycle is None:
        raise AssertionError(f"refused without a 431: {bytes(transport.written[:60])!r}")
    tasks = asyncio.all_tasks(LOOP)  # requests the parser completed: their app cycles, never run here
    for task in tasks:
        task.cancel()
    if tasks:
        LOOP.run_until_complete(_settle(tasks))


if __name__ == "__main__":
    main(target)
