"""`POST /v2/models/{name}[/versions/{version}]/infer/stream`: many infer requests over one HTTP request.

The body is newline-delimited Open Inference Protocol infer requests (JSON); the response is one
JSON line per item, written as each completes (not in order): the infer response, which carries
the item's `id` (the client's, else `<X-Request-ID>-<n>`), or `{"id", "error", "code"}`. A bad
item fails alone. Credentials are checked and the version chosen once per stream (the user's
sticky choice holds for the whole stream); each item counts against the tenant's rate limit and
goes through the data plane like any request (validation, cache, batcher, metrics).

At most `max_in_flight` items are served at once: the body is not read further until one
completes, so a fast sender is slowed by TCP rather than queued here. The stream is exempt from
the whole-body read timeout and bounded instead by `idle_timeout_s` between items. It serves no
item past its token's expiry: a last `unauthorized` line ends it then, idle or not. A client that
disconnects has its items in flight cancelled (the batcher drops them) and nothing more is read.
Every item counts against the rate limit, one that fails to decode or is over the size limit too.

    curl -N -H "Authorization: Bearer $TOKEN" --data-binary @items.ndjson \\
         localhost:3000/v2/models/digits-sklearn/infer/stream
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from typing import Any

import orjson

from core.errors import (
    BadRequest,
    ClientDisconnected,
    PayloadTooLarge,
    RequestTimeout,
    ServingError,
)
from frontends.asgi import Receive, Send, dumps
from frontends.oip_codec import InferRequest, decode_infer, encode_infer
from frontends.parts import FrontendParts
from frontends.route_table import HttpRequest
from pipeline.dataplane import Answer, InferenceRequest, Tensors
from runners.registry import LoadedVersion

log = logging.getLogger(__name__)

NDJSON = b"application/x-ndjson"
SPAN = "POST /v2/models/{name}/infer/stream"
ITEM_SPAN = "POST /v2/models/{name}/infer/stream item"


async def serve(served: FrontendParts, request: HttpRequest) -> None:
    """Serve the stream to the path's model (and version), its caller admitted for the route's scope.

    A `ServingError` raised here comes before the response started: the caller answers it as usual."""
    name, asked = request.params["name"], request.params.get("version")
    pipeline = served.pipeline
    admitted = request.admitted
    entry, variant = pipeline.route(name, asked, admitted, "streaming")  # 403, 404, 503, 422 mode_not_supported
    receive = await _with_first_item(request.receive, served.stream.idle_timeout_s)
    send, headers = request.send, request.headers
    stream = _Stream(served, name, entry.version, variant, admitted, request.request_id, send, headers)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", NDJSON), (b"x-model-version", entry.version.encode()), *request.extra]})
    with pipeline.tracer.request(SPAN, headers, model=name, request_id=request.request_id) as span:
        span.set("version", entry.version)
        await stream.run(receive)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _with_first_item(receive: Receive, idle_timeout_s: float) -> Receive:
    """Wait for the body's first message before answering 200: a body without any item is a client
    mistake (400), one that does not come is 408, and a client gone before it has nothing to answer."""
    try:
        async with asyncio.timeout(idle_timeout_s):
            first = await receive()
    except TimeoutError:
        raise RequestTimeout(f"no item within {idle_timeout_s:g} s") from None
    if first["type"] == "http.disconnect":
        raise ClientDisconnected()
    if not first.get("body") and not first.get("more_body", False):
        raise BadRequest("the stream carries no item: send one OIP infer request per line")
    pending = [first]

    async def replay() -> MutableMapping[str, Any]:
        return pending.pop() if pending else await receive()

    return replay


class _Stream:
    def __init__(self, served: FrontendParts, name: str, version: str, variant: str, admitted: Any, request_id: str,
                 send: Send, headers: dict[bytes, bytes]) -> None:
        self.served = served
        self.settings = served.stream
        self.name, self.version, self.variant = name, version, variant
        self.admitted = admitted
        self.request_id = request_id
        self._send = send
        self._send_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(self.settings.max_in_flight)
        self._tasks: set[asyncio.Task] = set()
        self._count = 0
        self._use_cache = b"no-cache" not in headers.get(b"cache-control", b"")
        self._trace = headers  # each item's span joins the client's trace, as a gRPC stream's items do
        timeout = headers.get(b"x-request-timeout-ms")
        self._timeout_ms = int(timeout) if timeout and timeout.isdigit() and len(timeout) <= 12 else None

    async def run(self, receive: Receive) -> None:
        """Read items and start each as a task; on the body's end wait for them, on a disconnect cancel them."""
        try:
            if await self._read(receive):
                await self._finish(receive)
        finally:
            for task in self._tasks:
                task.cancel()

    async def _read(self, receive: Receive) -> bool:
        """False when the client went away."""
        buffer = b""
        skipping = False  # inside a line over the limit: drop it up to its newline
        limit = self.settings.max_line_bytes
        idle_s = self.settings.idle_timeout_s
        while True:
            token_s = self.admitted.seconds_left()
            try:
                async with asyncio.timeout(min(idle_s, token_s)):
                    message = await receive()
            except TimeoutError:
                ended = self.admitted.expired() if token_s < idle_s else RequestTimeout(f"no item within {idle_s:g} s; stream closed")
                await self._write(dumps(ended.body()))
                return True
            if message["type"] == "http.disconnect":
                return False
            buffer += message.get("body", b"")
            lines = buffer.split(b"\n")
            buffer = lines.pop()
            for line in lines:
                if skipping:
                    skipping = False
                    continue
                if not await self._start(line):
                    return True
            if len(buffer) > limit and not skipping:
                skipping, buffer = True, b""
                await self._write(dumps({"id": self._next_id(), **(await self._refusal(
                    PayloadTooLarge(f"item is over the limit of {limit} bytes"))).body()}))
            elif skipping:
                buffer = b""
            if not message.get("more_body", False):
                if buffer and not skipping:
                    await self._start(buffer)
                return True

    async def _still_admitted(self) -> bool:
        """Whether the stream's token is still valid; once it is not, a last line says so and nothing more is served."""
        if self.admitted.seconds_left() > 0:
            return True
        await self._write(dumps(self.admitted.expired().body()))
        return False

    async def _refusal(self, error: ServingError) -> ServingError:
        """What an item refused before it reaches the data plane answers: it counts against the tenant's rate
        like any item (a flood of bad items is no cheaper than good ones), so past the limit it is that."""
        try:
            await self.served.pipeline.admission.limit(self.admitted)
        except ServingError as exc:
            return exc
        return error

    async def _finish(self, receive: Receive) -> None:
        """Wait for the items in flight, unless the client leaves first."""
        if not self._tasks:
            return
        gone = asyncio.ensure_future(receive())
        try:
            while self._tasks and not gone.done():
                await asyncio.wait([gone, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()

    def _next_id(self) -> str:
        n = self._count
        self._count += 1
        return f"{self.request_id}-{n}"

    async def _start(self, line: bytes) -> bool:
        """Start serving a line; False when the stream's token has expired and the stream must end."""
        if not line.strip():
            return True
        await self._slots.acquire()  # back-pressure: no more reading while max_in_flight items run
        if not await self._still_admitted():
            self._slots.release()
            return False
        task = asyncio.get_running_loop().create_task(self._item(line, self._next_id()))
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return True

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _item(self, line: bytes, fallback_id: str) -> None:
        try:
            out = await self._infer(line, fallback_id)
        except ServingError as exc:
            out = dumps({"id": _item_id(line) or fallback_id, **exc.body()})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("stream %s: item %s failed", self.request_id, fallback_id)
            out = dumps({"id": _item_id(line) or fallback_id, "error": "internal error", "code": "internal_error"})
        await self._write(out)

    async def _infer(self, line: bytes, fallback_id: str) -> bytes:
        limits = self.served.limits
        decoded: InferRequest | None = None

        async def decode(entry: LoadedVersion) -> Tensors:
            nonlocal decoded
            decoded = decode_infer(line, limits)
            return Tensors(decoded.inputs, decoded.outputs, timeout_ms=self._timeout_ms)

        def encode(answer: Answer) -> bytes:
            return encode_infer(self.name, answer.version, decoded.id or fallback_id, answer.outputs, set())[0]

        return await self.served.pipeline.infer(InferenceRequest(
            decode, encode, self.name, self.version, admitted=self.admitted, variant=self.variant, mode="streaming",
            use_cache=self._use_cache, span=ITEM_SPAN, trace=self._trace, request_id=fallback_id))

    async def _write(self, line: bytes) -> None:
        async with self._send_lock:
            await self._send({"type": "http.response.body", "body": line + b"\n", "more_body": True})


def _item_id(line: bytes) -> str | None:
    """The client's id of an item that failed, when the line is JSON enough to have one."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    value = doc.get("id") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None
