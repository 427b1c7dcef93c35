"""The metrics port of a real `bentoml serve`: served by its own process, apart from the API, cached, and
refused to a second service."""

from __future__ import annotations

import math
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.helpers import ServerProcess


def renders(text: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith("rtserve_metrics_renders_total ")]
    return float(line.split()[1])


def test_a_burst_of_scrapes_costs_one_render_per_cache_interval(server):
    """The `server` fixture caches the exposition for 1 s (RTSERVE_METRICS_CACHE_S)."""
    before = renders(httpx.get(server.metrics_url, timeout=10).text)
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: httpx.get(server.metrics_url, timeout=10), range(64)))
    elapsed = time.monotonic() - started
    assert all(r.status_code == 200 and b"rtserve_model_version_state" in r.content for r in answers)
    rendered = max(renders(r.text) for r in answers) - before
    assert rendered <= 1 + math.ceil(elapsed), (rendered, elapsed)  # at most one render per second begun


def test_the_metrics_port_answers_get_metrics_only(server):
    base = server.metrics_url.removesuffix("/metrics")
    assert httpx.get(base + "/v2/health/ready", timeout=10).status_code == 404
    post = httpx.post(server.metrics_url, timeout=10)
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
    assert httpx.post(server.metrics_url, content=b"x", timeout=10).status_code == 400
    head = httpx.head(server.metrics_url, timeout=10)
    assert head.status_code == 200 and int(head.headers["content-length"]) > 0 and head.content == b""
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:  # a head past 8 KiB: closed, unanswered
        sock.sendall(b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        assert sock.recv(100) == b""
    assert httpx.get(server.metrics_url, timeout=10).status_code == 200


def test_a_second_service_on_a_taken_metrics_port_stops_with_one_line(server, tmp_path):
    port = server.env["RTSERVE_METRICS_PORT"]
    second = ServerProcess(env={"RTSERVE_METRICS_PORT": port}, log_path=tmp_path / "second.log").start(wait_ready=False)
    try:
        assert second.proc.wait(120) == 2
    finally:
        second.stop()
    log = (tmp_path / "second.log").read_text()
    assert f"rtserve: metrics port {port} on 0.0.0.0 cannot be bound" in log and "RTSERVE_METRICS_PORT" in log
