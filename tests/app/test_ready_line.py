"""The server logs one "ready" line with its addresses once every configured model is ready."""

from __future__ import annotations

import http.server
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from app.ready_line import MARK_PREFIX, addresses, announce_when_ready, http_bind


def test_the_http_address_is_read_as_bentoml_serve_reads_it(monkeypatch):
    monkeypatch.delenv("BENTOML_PORT", raising=False)
    monkeypatch.delenv("BENTOML_HOST", raising=False)
    assert http_bind(["serve", ".", "--host", "127.0.0.1", "--port", "3005"], 3000) == ("127.0.0.1", 3005)
    assert http_bind(["serve", "-p", "3006", "--api-workers", "2"], 3000) == ("0.0.0.0", 3006)
    assert http_bind(["serve", "--port=3007"], 3000) == ("0.0.0.0", 3007)
    monkeypatch.setenv("BENTOML_PORT", "3008")
    assert http_bind(["serve"], 3000) == ("0.0.0.0", 3008)


def test_the_line_names_every_address():
    shown = addresses(["--host", "::", "--port", "3000"], 3000, tls=True, grpc=("0.0.0.0", 3001), metrics=("0.0.0.0", 3002))
    assert shown.line() == ("ready: every configured model is loaded; HTTP https://[::]:3000 (API page https://[::]:3000/docs), "
                            "gRPC 0.0.0.0:3001, metrics http://0.0.0.0:3002/metrics")
    assert addresses([], 3000, tls=False, grpc=None, metrics=None).line().endswith("HTTP http://0.0.0.0:3000 (API page http://0.0.0.0:3000/docs)")


def test_a_served_server_logs_one_ready_line_with_its_urls(server):
    deadline = time.monotonic() + 30  # ready is polled from the server's own process, every half second
    while not (lines := [line for line in server.log_path.read_text().splitlines() if "ready: every configured model" in line]):
        assert time.monotonic() < deadline, "no ready line in the server's log"
        time.sleep(0.2)
    assert len(lines) == 1
    assert f"HTTP {server.url} (API page {server.url}/docs)" in lines[0]
    assert f"metrics http://0.0.0.0:{server.env['RTSERVE_METRICS_PORT']}/metrics" in lines[0] and "gRPC 0.0.0.0:" in lines[0]


class _Probes(http.server.BaseHTTPRequestHandler):
    """A server that is ready at the HTTP port and counts how often it was asked."""

    asked = 0

    def do_GET(self) -> None:
        type(self).asked += 1
        self.send_response(200 if self.path == "/v2/health/ready" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def ready_port() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Probes)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()


def _probed(times: int) -> None:
    """Until the line's thread has asked readiness `times` more times: it has looked at the workers as often."""
    target = _Probes.asked + times
    deadline = time.monotonic() + 10
    while _Probes.asked < target:
        assert time.monotonic() < deadline, "readiness was not polled"
        time.sleep(0.01)


def test_the_line_waits_for_every_worker_not_the_first_that_answers(ready_port, tmp_path, caplog):
    """The HTTP port answers ready as soon as one worker is: the line also needs a live ready mark from each."""
    caplog.set_level(logging.INFO, logger="app.ready_line")
    thread = announce_when_ready(addresses(["--host", "127.0.0.1", "--port", str(ready_port)], 3000, tls=False, grpc=None,
                                           metrics=None), workers=2, directory=str(tmp_path), interval_s=0.02)

    def lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "ready: every configured model" in r.getMessage()]

    (tmp_path / f"{MARK_PREFIX}{os.getpid()}").write_text("1\n")  # the first worker
    _probed(3)
    assert lines() == []
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / f"{MARK_PREFIX}{gone.pid}").write_text("1\n")  # a worker that was replaced: its mark stays behind
    _probed(3)
    assert lines() == []
    second = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / f"{MARK_PREFIX}{second.pid}").write_text("1\n")
        deadline = time.monotonic() + 10
        while not lines():
            assert time.monotonic() < deadline, "no ready line with both workers ready"
            time.sleep(0.02)
        thread.join(10)
        assert not thread.is_alive() and len(lines()) == 1  # once, and done
    finally:
        second.kill()
        second.wait()


def test_with_two_workers_the_line_comes_after_both_loaded_their_models(gateway):
    """The production-shaped server runs two workers: each logs when its models are loaded, then the one line."""
    log = gateway.server.log_path
    deadline = time.monotonic() + 30
    while not any("ready: every configured model" in line for line in log.read_text().splitlines()):
        assert time.monotonic() < deadline, "no ready line in the server's log"
        time.sleep(0.2)
    lines = log.read_text().splitlines()
    loaded = [i for i, line in enumerate(lines) if re.search(r"loaded (\d+) of \1 model versions", line)]
    ready = [i for i, line in enumerate(lines) if "ready: every configured model" in line]
    assert len(loaded) == 2, "one 'loaded' line per worker"
    assert len(ready) == 1 and ready[0] > max(loaded), lines[min(loaded + ready):]
