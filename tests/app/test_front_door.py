"""Our HTTP paths are served in front of BentoML's middleware. Each of the front door's three patches is checked
by the behaviour it exists for, so a BentoML or uvicorn release that moves the internals it patches fails here."""

from __future__ import annotations

import asyncio
import socket
import tomllib

import bentoml
import httptools
import httpx
import pytest
import uvicorn
import yaml
from uvicorn.protocols.http import httptools_impl
from uvicorn.server import ServerState

from app.front_door import SUPPORTED_BENTOML, SUPPORTED_UVICORN, OneWriteCycle, _choose_loop
from gateway.settings import LimitSettings
from tests.helpers import ROOT, ServerProcess
from tests.inprocess import serve_in_process
from tests.routing.broken import build_broken_versions

ROW = [1.0] * 63 + [3.0]
CACHE_INDEPENDENT = pytest.mark.cache_independent
"""Patches, pins and server processes (which RTSERVE_TEST_CACHE does not reach): only the 504 test asks the data plane."""


@CACHE_INDEPENDENT
def test_the_pins_are_the_releases_the_front_door_was_checked_against():
    """pyproject.toml pins BentoML, uvicorn and httptools exactly, to the releases app/front_door.py names."""
    pins = dict(dep.split("==") for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
                if "==" in dep)
    assert pins["bentoml"] == SUPPORTED_BENTOML == bentoml.__version__
    assert pins["uvicorn"] == SUPPORTED_UVICORN == uvicorn.__version__
    assert pins["httptools"] == httptools.__version__
    for bentofile in ("bentofile.yaml", "deploy/container/bentofile.gpu.yaml"):
        packages = yaml.safe_load((ROOT / bentofile).read_text())["python"]["packages"]
        assert {f"uvicorn=={SUPPORTED_UVICORN}", f"httptools=={httptools.__version__}"} <= set(packages), bentofile


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


@CACHE_INDEPENDENT
@pytest.mark.parametrize(
    ("request_line", "writes"),
    [
        (b"GET / HTTP/1.1", [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]),
        (b"HEAD / HTTP/1.1", [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"]),
        (b"GET /stream HTTP/1.1", [(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n"
                                    b"2\r\n1\n\r\n"), b"2\r\n2\n\r\n0\r\n\r\n"]),
    ],
)
async def test_a_response_head_goes_out_with_the_first_body_write(monkeypatch, request_line, writes):
    """uvicorn's protocol creates its cycles from the module's class, which the front door replaces."""
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


@CACHE_INDEPENDENT
def test_the_worker_answers_in_one_write(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b'{"live":true}', answer


@CACHE_INDEPENDENT
def test_every_path_reaches_our_app_and_bentomls_probes_stay_bentomls(server):
    """The worker builds its app through `Service.to_asgi`, which the front door wraps: BentoML's router would
    answer these in plain text (tests/app/test_front_door_off.py)."""
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
    # The stuck version is fast at warm-up, so the batcher would run its batch on the event loop itself
    # (inline_max_ms), where nothing can interrupt it; the deadline is for work the loop waits on.
    served = {"digits-sklearn": {"versions": ["stuck"], "batching": {"inline_max_ms": 0}}}
    async with serve_in_process(tmp_path, served, auth=False, limits=limits) as s:
        body = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": ROW}]}
        r = await s.client.post("/v2/models/digits-sklearn/infer", json=body)
        assert r.status_code == 504 and r.json()["code"] == "deadline_exceeded", r.text
        assert s.runtime.registry.get("digits-sklearn", "stuck").active == 0


@CACHE_INDEPENDENT
@pytest.mark.parametrize(("name", "module"), [("asyncio", "asyncio"), ("uvloop", "uvloop")])
def test_uvicorns_auto_loop_becomes_the_one_rtserve_event_loop_names(monkeypatch, name, module):
    """What BentoML's worker asks uvicorn for (`auto`) gets the loop the setting names."""
    monkeypatch.setattr(uvicorn.Config, "get_loop_factory", uvicorn.Config.get_loop_factory)  # undone after the test
    monkeypatch.setenv("RTSERVE_EVENT_LOOP", name)
    _choose_loop()
    factory = uvicorn.Config(app_streaming_two_parts, loop="auto").get_loop_factory()
    loop = factory()
    try:
        assert type(loop).__module__.split(".")[0] == module, type(loop)
    finally:
        loop.close()


@CACHE_INDEPENDENT
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
