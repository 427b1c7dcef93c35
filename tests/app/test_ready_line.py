"""The server logs one "ready" line with its addresses once every configured model is ready."""

from __future__ import annotations

import time

from app.ready_line import addresses, http_bind


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
