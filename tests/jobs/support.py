"""Polling a job to its end, and the real-time answers to compare jobs and streams with."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

FINISHED = ("succeeded", "failed", "cancelled")


async def wait_finished(client: httpx.AsyncClient, job_id: str, headers: dict[str, str], timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = await client.get(f"/v2/jobs/{job_id}", headers=headers)
        assert r.status_code == 200, r.text
        doc = r.json()
        if doc["state"] in FINISHED:
            return doc
        assert time.monotonic() < deadline, f"job {job_id} still {doc['state']} after {timeout} s"
        await asyncio.sleep(0.02)


def lines(body: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in body.splitlines() if line]


async def predict(client: httpx.AsyncClient, headers: dict[str, str], model: str, version: str, rows: list) -> dict[str, list]:
    """Real-time outputs of `/predict` for these rows, pinned to one version."""
    r = await client.post("/predict", headers=headers, json={"model": model, "version": version, "inputs": rows})
    assert r.status_code == 200, r.text
    return r.json()["outputs"]


async def read_all(pieces: AsyncIterator[bytes]) -> bytes:
    """A job's results as the store hands them out, a piece at a time, joined."""
    return b"".join([piece async for piece in pieces])
