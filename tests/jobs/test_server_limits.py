"""Against a real `bentoml serve`: what a client can make a worker hold (memory, jobs, stored results) stays bounded."""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from fuzz.seeds import npy, npy_header, npz_bomb

pytestmark = pytest.mark.cache_independent
"""Server processes, which RTSERVE_TEST_CACHE does not reach."""


def peak_rss(process: psutil.Process) -> int:
    """The process's resident high-water mark since `reset_peak` (VmHWM): a transient allocation shows here."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def reset_peak(process: psutil.Process) -> None:
    Path(f"/proc/{process.pid}/clear_refs").write_text("5")


def test_a_zip_bomb_is_refused_with_the_worker_memory_flat(jobs_server):
    headers = jobs_server.headers(scopes="batch", tenant=f"bomb-{uuid.uuid4().hex[:8]}")
    url = f"{jobs_server.url}/v2/jobs?model=digits-sklearn"
    bomb = npz_bomb("pixels", (4_000_000, 64), "<f4", 1 << 30)  # 1 MB; np.load made it 1 GiB before it checked rows
    worker = jobs_server.server.worker()
    with httpx.Client(timeout=60) as client:
        r = client.post(url, headers=headers, content=npy_header((10**12, 64)))  # also warms the upload path
        assert (r.status_code, r.json()["code"]) == (422, "invalid_input"), r.text
        before = worker.memory_info().rss
        reset_peak(worker)
        r = client.post(url, headers=headers, content=bomb)
        peak = peak_rss(worker)
        after = worker.memory_info().rss
    assert (r.status_code, r.json()["code"]) == (422, "invalid_input"), r.text
    assert "4000000 rows is over the job limit" in r.json()["error"]
    print(f"zip bomb ({len(bomb):,} bytes, 1 GiB inflated): worker RSS {before / 2**20:.0f} MiB before, "
          f"peak {peak / 2**20:.0f} MiB, {after / 2**20:.0f} MiB after")
    assert peak - before < 64 << 20, (before, peak)


def submit_in_parallel(url: str, headers: dict[str, str], body: bytes, n: int) -> list[httpx.Response]:
    """`n` submissions at once, each on a connection of its own (so a two-worker server spreads them)."""
    def one(_: int) -> httpx.Response:
        with httpx.Client(timeout=120) as client:
            return client.post(f"{url}/v2/jobs?model=digits-sklearn&version=v1", headers=headers, content=body)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def held_to_the_active_limit(url: str, headers: dict[str, str], limit: int) -> tuple[int, int]:
    """30 parallel submissions of jobs long enough to stay queued or running: when they have all been answered, at
    most `limit` are queued or running (a job that already finished freed its place); the rest got 429.
    Returns (accepted, active when all had been answered)."""
    rows = np.tile(np.arange(64, dtype=np.uint8) % 17, (50_000, 1))  # 3.2 MB, 50,000 rows: seconds of work each
    responses = submit_in_parallel(url, headers, npy(rows), 30)
    accepted = [r.json()["id"] for r in responses if r.status_code == 202]
    with httpx.Client(timeout=60) as client:
        states = [client.get(f"{url}/v2/jobs/{job_id}", headers=headers).json()["state"] for job_id in accepted]
        for job_id in accepted:  # leave nothing running for the tests after this one
            client.post(f"{url}/v2/jobs/{job_id}/cancel", headers=headers)
    refused = [r for r in responses if r.status_code != 202]
    assert all((r.status_code, r.json()["code"]) == (429, "rate_limited") for r in refused), [r.text for r in refused]
    active = sum(state in ("queued", "running") for state in states)
    assert 0 < active <= limit, (len(accepted), states)
    return len(accepted), active


def test_parallel_submissions_are_held_to_the_active_limit_in_the_folder(jobs_server):
    headers = jobs_server.headers(scopes="batch", tenant=f"burst-{uuid.uuid4().hex[:8]}")
    accepted, active = held_to_the_active_limit(jobs_server.url, headers, 8)
    print(f"folder: 30 parallel submissions, {accepted} accepted, {30 - accepted} refused, {active} active after (limit 8)")


def test_parallel_submissions_to_two_workers_are_held_to_the_active_limit_in_redis(gateway):
    headers = gateway.headers(scopes="batch", tenant=f"burst-{uuid.uuid4().hex[:8]}")
    accepted, active = held_to_the_active_limit(gateway.url, headers, 8)
    print(f"redis, two workers: 30 parallel submissions, {accepted} accepted, {30 - accepted} refused, {active} active after "
          "(limit 8)")


def test_results_held_by_clients_that_do_not_read_cost_the_worker_no_memory(jobs_server):
    """Four clients ask for a large result and do not read it: the worker sends a piece at a time as the socket
    takes it, so its memory stays flat (it read the whole file per client before: +1.2 GiB for four)."""
    headers = jobs_server.headers(scopes="batch", tenant=f"reader-{uuid.uuid4().hex[:8]}")
    rows = np.tile(np.arange(64, dtype=np.uint8) % 17, (60_000, 1))
    with httpx.Client(base_url=jobs_server.url, headers=headers, timeout=120) as client:
        job_id = client.post("/v2/jobs?model=digits-sklearn&version=v1", content=npy(rows)).json()["id"]
        deadline = time.monotonic() + 120
        while client.get(f"/v2/jobs/{job_id}").json()["state"] != "succeeded":
            assert time.monotonic() < deadline, "job did not finish"
            time.sleep(0.1)
        with client.stream("GET", f"/v2/jobs/{job_id}/results") as response:
            assert "content-length" not in response.headers
            size = sum(len(piece) for piece in response.iter_bytes())
    assert size > 15 << 20
    worker = jobs_server.server.worker()
    before = worker.memory_info().rss
    reset_peak(worker)
    host, port = jobs_server.url.removeprefix("http://").split(":")
    request = (f"GET /v2/jobs/{job_id}/results HTTP/1.1\r\nHost: {host}\r\nAuthorization: {headers['Authorization']}\r\n"
               "\r\n").encode()
    sockets = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect((host, int(port)))
            s.sendall(request)
            sockets.append(s)
        for s in sockets:  # the response has started on each: the worker is sending, and the client does not read
            deadline = time.monotonic() + 30
            while _unread(s) == 0:
                assert time.monotonic() < deadline, "no response started"
                time.sleep(0.02)
        assert b"transfer-encoding: chunked" in sockets[0].recv(4096).lower()
        peak = peak_rss(worker)
    finally:
        for s in sockets:
            s.close()
    print(f"4 clients not reading {size / 2**20:.0f} MiB of results: worker RSS {before / 2**20:.0f} MiB before, "
          f"peak {peak / 2**20:.0f} MiB")
    assert peak - before < 16 << 20, (before, peak)


def _unread(s: socket.socket) -> int:
    """Bytes waiting in the socket's receive buffer."""
    return struct.unpack("i", fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
