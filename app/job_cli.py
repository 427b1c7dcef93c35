"""`rtserve job submit|status|get|cancel`: batch jobs from a shell.

The token is RTSERVE_TOKEN, or one minted with the `batch` scope for tenant RTSERVE_TENANT
(default `rtserve-cli`) from the configured key; a job is visible to its tenant only, so every
command of one job must run as the same tenant.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from app.cli_client import CommandError, command, group, request
from app.progress import LiveLine, bar

FINISHED = ("succeeded", "failed", "cancelled")
WATCH_INTERVAL_S = 1.0
WATCH_INTERVAL_TTY_S = 0.25  # a bar on a terminal moves smoothly; a line per change needs no faster poll


def register(sub: argparse._SubParsersAction) -> None:
    job = group(sub, "job", "batch jobs: rows in, results kept for a while")
    s = command(job, "submit", _submit, "submit rows (.json list of rows, .npy or .npz) to a model")
    s.add_argument("model", help="the model's name")
    s.add_argument("file", type=Path, help="the rows: .json (a list of rows, or {\"inputs\": ...}), .npy or .npz")
    s.add_argument("--version", help="pin a version (default: the route's choice, fixed for the job)")
    s.add_argument("--wait", action="store_true", help="watch the job until it finishes: a bar of rows done on a terminal, else a line each time "
                   "its state or counts change (default: print its id and return)")
    st = command(job, "status", _status, "state, rows done and failed, rows per second")
    st.add_argument("id", help="the job's id, as submit printed it")
    st.add_argument("--watch", action="store_true", help="show progress until the job finishes, as --wait does (default: print it once)")
    g = command(job, "get", _get, "the results: one JSON line per row, in row order")
    g.add_argument("id", help="the job's id, as submit printed it")
    g.add_argument("-o", "--output", type=Path, help="write to this file (default: standard output)")
    command(job, "cancel", _cancel, "stop a job after the rows in flight; results so far are kept").add_argument(
        "id", help="the job's id, as submit printed it")


def _request(method: str, path: str, **kwargs: Any) -> httpx.Response:
    return request(method, path, scopes="batch", tenant=os.environ.get("RTSERVE_TENANT", "rtserve-cli"), ttl_s=3600,
                   timeout=120, **kwargs)


def _submit(a: argparse.Namespace) -> None:
    try:
        data = a.file.read_bytes()
    except OSError as exc:
        raise CommandError(f"{a.file}: {exc.strerror}") from None
    if a.file.suffix in (".npy", ".npz"):
        params = {"model": a.model, **({"version": a.version} if a.version else {})}
        r = _request("POST", "/v2/jobs", params=params, content=data, headers={"Content-Type": "application/octet-stream"})
    else:
        try:
            rows = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise CommandError(f"{a.file}: not JSON ({exc})") from None
        rows = rows["inputs"] if isinstance(rows, dict) and "inputs" in rows else rows
        body = {"model": a.model, "inputs": rows, **({"version": a.version} if a.version else {})}
        r = _request("POST", "/v2/jobs", content=orjson.dumps(body), headers={"Content-Type": "application/json"})
    doc = r.json()
    print(f"job {doc['id']}: {doc['rows']} rows on {doc['model']}:{doc['version']}, {doc['state']}")
    if a.wait:
        _watch(doc["id"])


def _line(doc: dict[str, Any], rate: bool = True) -> str:
    rate_text = f", {doc['rows_per_second']:,.0f} rows/s" if rate and doc.get("rows_per_second") else ""
    line = (f"job {doc['id']}: {doc['state']}, {doc['rows_done']}/{doc['rows']} rows, {doc['rows_failed']} failed{rate_text}"
            f" ({doc['model']}:{doc['version']})")
    return line + (f"; {doc['error']}" if doc.get("error") else "")


def _watch(job_id: str) -> dict[str, Any]:
    """Until the job finishes: a bar of rows done on a terminal, else a line each time its state or counts change."""
    live = LiveLine(sys.stdout)
    while True:
        doc = _request("GET", f"/v2/jobs/{job_id}").json()
        finished = doc["state"] in FINISHED
        if live.tty:
            rate = f", {doc['rows_per_second']:,.0f} rows/s" if doc.get("rows_per_second") else ""
            live.show(f"job {job_id} {bar(doc['rows_done'], doc['rows'])} {doc['rows_done']:,}/{doc['rows']:,} rows, "
                      f"{doc['rows_failed']:,} failed{rate}, {doc['state']}")
        elif not finished:
            live.show(_line(doc, rate=False))  # printed when it changes; the rate alone moves on every poll
        if finished:
            live.close(_line(doc))
        if doc["state"] == "failed":  # the server reports a failure: the command fails with it
            raise CommandError(f"job {job_id} failed" + (f": {doc['error']}" if doc.get("error") else ""))
        if finished:
            return doc
        time.sleep(WATCH_INTERVAL_TTY_S if live.tty else WATCH_INTERVAL_S)


def _status(a: argparse.Namespace) -> None:
    if a.watch:
        _watch(a.id)
    else:
        print(_line(_request("GET", f"/v2/jobs/{a.id}").json()))


def _get(a: argparse.Namespace) -> None:
    body = _request("GET", f"/v2/jobs/{a.id}/results").content
    if a.output is None:
        sys.stdout.buffer.write(body)
    else:
        a.output.write_bytes(body)
        lines = body.count(b"\n")
        print(f"{lines} result lines written to {a.output}", file=sys.stderr)


def _cancel(a: argparse.Namespace) -> None:
    doc = _request("POST", f"/v2/jobs/{a.id}/cancel").json()
    print(f"job {doc['id']}: cancel requested ({doc['rows_done']}/{doc['rows']} rows done)")
