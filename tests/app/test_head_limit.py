"""A request's line and headers are cut at their limit while they arrive: 431 within milliseconds, others unaffected."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

ROW = [1.0] * 63 + [3.0]
INFER = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": ROW}]}


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def send_head(port: int, head: bytes) -> tuple[bytes, float]:
    """Send `head` (from a thread: the server stops reading it) and read the answer; (answer, seconds to it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        def push() -> None:
            try:
                sock.sendall(head)
            except OSError:  # the server closed on it: expected past the limit
                pass

        started = time.perf_counter()
        sender = threading.Thread(target=push, daemon=True)
        sender.start()
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < answer.index(b"\r\n\r\n") + 4 + _length(answer):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        seconds = time.perf_counter() - started
        sender.join(10)
    return answer, seconds


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def big_head(size: int, terminated: bool = True) -> bytes:
    head = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size
    return head + b"\r\n\r\n" if terminated else head


def assert_refused(answer: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"connection: close" in head.lower()
    assert json.loads(body)["code"] == "request_header_too_large"


def test_a_header_past_the_limit_is_answered_431_at_once(server):
    for head in (big_head(1 << 20), big_head(1 << 20, terminated=False)):
        answer, seconds = send_head(server.port, head)
        assert_refused(answer)
        assert seconds < 1.0, seconds  # milliseconds when the machine is not loaded
    answer, _ = send_head(server.port, b"GET /" + b"a" * (1 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n")  # the request line too
    assert_refused(answer)


def test_a_header_within_the_limit_is_served(server):
    answer, _ = send_head(server.port, big_head(60_000))
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


def test_a_huge_unterminated_header_leaves_other_requests_unaffected(server, http):
    """Before the limit, a 32 MB header held the worker's CPU for seconds (the cost grows with its square)."""
    attack = threading.Thread(target=send_head, args=(server.port, big_head(32 << 20, terminated=False)), daemon=True)
    assert http.post("/v2/models/digits-sklearn/infer", json=INFER).status_code == 200  # a warm connection
    attack.start()
    slowest = 0.0
    while attack.is_alive():
        started = time.perf_counter()
        assert http.post("/v2/models/digits-sklearn/infer", json=INFER).status_code == 200
        slowest = max(slowest, time.perf_counter() - started)
    attack.join()
    assert slowest < 0.5, slowest


def test_refused_heads_are_counted(server):
    send_head(server.port, big_head(1 << 20))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        metrics = httpx.get(server.metrics_url).text
        if 'code="request_header_too_large"' in metrics:
            return
        time.sleep(0.1)
    raise AssertionError("no rtserve_errors_total sample with code request_header_too_large")
