"""Our HTTP paths are served in front of BentoML's middleware; the module that does it fails loudly on another BentoML."""

from __future__ import annotations

import asyncio
import inspect
import socket

import bentoml
import httpx
import pytest
import uvicorn
from _bentoml_impl.worker import service as bentoml_worker
from uvicorn import config as uvicorn_config
from uvicorn.protocols.http import httptools_impl
from uvicorn.server import ServerState

from app.front_door import SUPPORTED_BENTOML, SUPPORTED_UVICORN, OneWriteCycle
from gateway.settings import LimitSettings
from tests.helpers import ServerProcess
from tests.inprocess import serve_in_process
from tests.routing.broken import build_broken_versions

ROW = [1.0] * 63 + [3.0]


def test_bentoml_still_builds_the_worker_app_where_the_front_door_hooks_in():
    assert bentoml.__version__.startswith(SUPPORTED_BENTOML), "re-check app/front_door.py against this BentoML"
    assert "service.to_asgi(" in inspect.getsource(bentoml_worker), "BentoML's worker no longer builds its app with Service.to_asgi"


def test_uvicorn_still_creates_the_request_cycles_the_front_door_replaces():
    assert uvicorn.__version__.startswith(SUPPORTED_UVICORN), "re-check app/front_door.py's OneWriteCycle against this uvicorn"
    source = inspect.getsource(httptools_impl.HttpToolsProtocol.on_headers_complete)
    assert "self.cycle = RequestResponseCycle(" in source, "uvicorn no longer creates its cycles from the module's class"


class CountingTransport:
    """What uvicorn's protocol writes to a connection, one entry per write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_extra_info(self, name: str):
        return ("127.0.0.1", 4321) if name in ("peername", "sockname") else None

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app_streaming_two_parts(scope, receive, send) -> None:
    await receive()
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/x-ndjson")]})
        await send({"type": "http.response.body", "body": b"1\n", "more_body": True})
        await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b"2\n"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


@pytest.mark.parametrize(
    ("request_line", "writes"),
    [
        (b"GET / HTTP/1.1", [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]),
        (b"HEAD / HTTP/1.1", [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"]),
        (b"GET /stream HTTP/1.1", [b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n"
                                   b"2\r\n1\n\r\n", b"2\r\n2\n\r\n0\r\n\r\n"]),
    ],
)
async def test_a_response_head_goes_out_with_the_first_body_write(monkeypatch, request_line, writes):
    monkeypatch.setattr(httptools_impl, "RequestResponseCycle", OneWriteCycle)
    config = uvicorn.Config(app_streaming_two_parts, lifespan="off", log_level="warning")
    config.load()
    protocol = httptools_impl.HttpToolsProtocol(config, ServerState(), {})
    transport = CountingTransport()
    protocol.connection_made(transport)
    protocol.data_received(request_line + b"\r\nHost: x\r\n\r\n")
    for _ in range(20):
        await asyncio.sleep(0)
    assert transport.writes == writes


def test_the_worker_answers_in_one_write(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b'{"live":true}', answer


def test_every_path_reaches_our_app_and_bentomls_probes_stay_bentomls(server):
    # a newline in a path parameter never matched BentoML's mount, which answered in plain text
    r = httpx.get(server.url + "/v2/models/a%0Ab/ready")
    assert r.status_code == 404 and r.json()["code"] == "model_not_found", r.text
    r = httpx.get(server.url + "/nothing-here")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert httpx.get(server.url + "/readyz").status_code == 200  # BentoML's own probe


@pytest.mark.asyncio
async def test_a_request_past_its_time_is_cancelled_and_answered_504(model_store, tmp_path):
    build_broken_versions()  # digits-sklearn:stuck sleeps 1 s a call on real inputs
    limits = LimitSettings(request_timeout_s=0.01)  # cut within frontends/deadlines.py's resolution, long before
    async with serve_in_process(tmp_path, {"digits-sklearn": {"versions": ["stuck"]}}, auth=False, limits=limits) as s:
        body = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": ROW}]}
        r = await s.client.post("/v2/models/digits-sklearn/infer", json=body)
        assert r.status_code == 504 and r.json()["code"] == "deadline_exceeded", r.text
        assert s.runtime.registry.get("digits-sklearn", "stuck").active == 0


def test_uvicorn_still_picks_the_loop_where_the_front_door_hooks_in():
    assert uvicorn.__version__.startswith(SUPPORTED_UVICORN), "re-check app/front_door.py's loop choice against this uvicorn"
    assert "LOOP_FACTORIES[self.loop]" in inspect.getsource(uvicorn_config.Config.get_loop_factory)
    assert {"asyncio", "uvloop"} <= set(uvicorn_config.LOOP_FACTORIES)


def test_the_worker_serves_on_the_loop_rtserve_event_loop_names(model_store, tmp_path):
    log = tmp_path / "server.log"
    server = ServerProcess(env={"REDIS_URL": "", "RTSERVE_EVENT_LOOP": "asyncio"}, log_path=log).start()
    try:
        r = httpx.post(server.url + "/v2/models/digits-sklearn/infer",
                       json={"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": ROW}]})
        assert r.status_code == 200, r.text
    finally:
        server.stop()
    lines = [line for line in log.read_text().splitlines() if "worker event loop" in line]
    assert lines and all("asyncio" in line and "uvloop" not in line for line in lines), lines
