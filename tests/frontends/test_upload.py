"""A deploy's multipart upload goes to files as it arrives, under its own cap, with checked part and file names."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from core.errors import BadRequest, PayloadTooLarge
from frontends.upload import receive_form


def multipart(files: dict, data: dict | None = None) -> tuple[dict[bytes, bytes], bytes]:
    """Headers and body as httpx (the rtserve client) sends them."""
    request = httpx.Request("PUT", "http://x/", files=files, data=data)
    body = request.read()
    return {k.lower().encode(): v.encode() for k, v in request.headers.items()}, body


def receive_in(body: bytes, chunk: int = 1000):
    pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)] or [b""]

    async def receive() -> dict:
        piece = pieces.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(pieces)}

    return receive


def receive(tmp_path, headers, body, max_bytes=1 << 20, chunk=1000):
    return asyncio.run(receive_form(receive_in(body, chunk), headers, tmp_path, max_bytes=max_bytes, idle_timeout_s=5,
                                    files={"model", "config"}, fields={"options"}))


def test_files_land_on_disk_by_part_and_name(tmp_path):
    model = bytes(range(256)) * 40
    headers, body = multipart({"model": ("iris.skops", model), "config": ("model.yaml", b"task: tensors\n")},
                              {"options": '{"allow_code": true}'})
    got = receive(tmp_path, headers, body, chunk=333)
    assert got.files["model"] == tmp_path / "model" / "iris.skops" and got.files["model"].read_bytes() == model
    assert got.files["config"].read_text() == "task: tensors\n"
    assert got.fields == {"options": b'{"allow_code": true}'}


@pytest.mark.parametrize("files, data, words", [
    ({"model": ("../../etc/passwd", b"x")}, None, "file name"),
    ({"model": (".hidden", b"x")}, None, "file name"),
    ({"weights": ("w.bin", b"x")}, None, "unknown part"),
    ({"model": ("a.onnx", b"x")}, {"options": "x" * 70_000}, "over 65536 bytes"),
])
def test_refused_parts(tmp_path, files, data, words):
    headers, body = multipart(files, data)
    with pytest.raises(BadRequest, match=words):
        receive(tmp_path, headers, body)


def test_over_the_cap_with_and_without_a_length(tmp_path):
    headers, body = multipart({"model": ("big.onnx", b"\0" * 5000)})
    with pytest.raises(PayloadTooLarge, match="upload of"):
        receive(tmp_path, headers, body, max_bytes=4000)
    del headers[b"content-length"]
    with pytest.raises(PayloadTooLarge, match="over the limit"):
        receive(tmp_path / "again", headers, body, max_bytes=4000)


def test_not_multipart(tmp_path):
    with pytest.raises(BadRequest, match="multipart/form-data"):
        receive(tmp_path, {b"content-type": b"application/octet-stream"}, b"x")
