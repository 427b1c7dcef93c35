"""Against a real `bentoml serve`: what a client can make a worker hold (memory, jobs, stored results) stays bounded."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import psutil

from fuzz.seeds import npy_header, npz_bomb


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
