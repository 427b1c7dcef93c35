"""A multipart/form-data upload streamed to files in a folder, never held in memory, under a size cap.

    received = await receive_form(receive, headers, folder, max_bytes=2**31, idle_timeout_s=30,
                                  files={"model", "config", "sample"}, fields={"options"})
    received.files["model"]  -> Path(folder / "model" / "iris.skops")   (the client's file name, checked)
    received.fields["options"] -> b'{"allow_code": true}'

Each file part is written to `folder/<part name>/<its file name>` as it arrives; the parser and the
writes run off the event loop. A field part is small by definition (at most 64 KiB). Parts with other
names, a second part of one name, a file name with path characters: 400. Over `max_bytes`: 413 (from
Content-Length at once when the client sends one). No message for `idle_timeout_s`: 408.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.multipart import MultipartParser, parse_options_header

from core.errors import BadRequest, ClientDisconnected, PayloadTooLarge, RequestTimeout, shown
from frontends.asgi import Receive

MAX_FIELD_BYTES = 64 * 1024
FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,200}$")
"""A part's file name: one name, no folders, nothing a shell or a path would read specially."""
BATCH = 1 << 20
"""Bytes handed to the parser (and the disk) at once."""


@dataclass
class Received:
    files: dict[str, Path] = field(default_factory=dict)
    fields: dict[str, bytes] = field(default_factory=dict)


async def receive_form(
    receive: Receive, headers: dict[bytes, bytes], folder: Path, *, max_bytes: int, idle_timeout_s: float,
    files: set[str], fields: set[str],
) -> Received:
    content_type, params = parse_options_header(headers.get(b"content-type", b""))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise BadRequest("send the model as multipart/form-data: a 'model' file part, optional 'config' and 'sample' "
                         "file parts and an 'options' JSON part (rtserve deploy and app/client.py do)")
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and len(declared) < 20 and int(declared) > max_bytes:
        raise PayloadTooLarge(f"upload of {int(declared)} bytes is over the limit of {max_bytes} "
                              "(RTSERVE_IMPORT_MAX_UPLOAD_BYTES)")
    form = _Form(folder, files, fields)
    parser = MultipartParser(params[b"boundary"], form.callbacks())
    size = 0
    pending = bytearray()
    try:
        while True:
            try:
                message = await asyncio.wait_for(receive(), idle_timeout_s)
            except TimeoutError:
                raise RequestTimeout(f"no part of the upload arrived for {idle_timeout_s:g} s",
                                     headers={"Connection": "close"}) from None
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"upload is over the limit of {max_bytes} bytes (RTSERVE_IMPORT_MAX_UPLOAD_BYTES)",
                                      headers={"Connection": "close"})
            pending += chunk
            more = message.get("more_body", False)
            if len(pending) >= BATCH or not more:
                await asyncio.to_thread(parser.write, bytes(pending))
                pending.clear()
            if not more:
                break
        await asyncio.to_thread(parser.finalize)
    finally:
        form.close()
    if form.error is not None:
        raise form.error
    return form.received


class _Form:
    """The parser's callbacks: each part's headers, then its bytes to a file (or a small buffer for a field)."""

    def __init__(self, folder: Path, files: set[str], fields: set[str]) -> None:
        self.folder = folder
        self.files = files
        self.fields = fields
        self.received = Received()
        self.error: BadRequest | None = None
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._name: str | None = None
        self._out: IO[bytes] | None = None
        self._field: bytearray | None = None

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda data, start, end: self._header_name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self._disposition = b""
        self._name = None

    def _header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        if self.error is not None:
            return
        _, params = parse_options_header(self._disposition)
        name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        if name in self.received.files or name in self.received.fields:
            self.error = BadRequest(f"part {shown(name)} is sent twice")
        elif name in self.files:
            base = (filename or b"").decode("utf-8", "replace")
            if not FILE_NAME.fullmatch(base):
                self.error = BadRequest(f"part {shown(name)} needs a file name of letters, digits, '_', '-', '.' and '+' "
                                        f"without folders, not {shown(base)}")
                return
            path = self.folder / name / base
            path.parent.mkdir(parents=True)
            self._out = path.open("wb")
            self._name = name
            self.received.files[name] = path
        elif name in self.fields:
            self._field = bytearray()
            self._name = name
        else:
            self.error = BadRequest(f"unknown part {shown(name)}; parts: {', '.join(sorted(self.files | self.fields))}")

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._out is not None:
            self._out.write(data[start:end])
        elif self._field is not None:
            self._field.extend(data[start:end])
            if len(self._field) > MAX_FIELD_BYTES and self.error is None:
                self.error = BadRequest(f"part {shown(self._name)} is over {MAX_FIELD_BYTES} bytes")
                self._field = None

    def _end(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        if self._field is not None and self._name is not None:
            self.received.fields[self._name] = bytes(self._field)
        self._field = None
        self._name = None

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
