"""`/v2/jobs`: batch jobs over REST (scope `batch`), each job visible only to its tenant.

    POST /v2/jobs                      submit: JSON rows, or an .npy/.npz upload with ?model=&version=  -> 202
    GET  /v2/jobs/{id}                 status: state, rows done and failed, rows per second
    GET  /v2/jobs/{id}/results         one NDJSON line per row, once the job has finished (409 before)
    POST /v2/jobs/{id}/cancel          stop after the rows in flight; results so far are kept -> 202

Submissions, results and cancels count against the tenant's rate limit; status reads need the scope only. Another tenant's
job answers 404, as if it did not exist.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

from core.errors import BadRequest, Conflict, MethodNotAllowed, NotFound
from frontends.asgi import JSON, Receive, Scope, dumps, read_body
from frontends.oip_codec import parse_json
from frontends.parts import FrontendParts
from frontends.predict_codec import rows_request
from gateway.admission import Admitted
from jobs import npy
from jobs import rows as job_rows
from jobs.model import Job
from jobs.runner import JobRunner

NDJSON = b"application/x-ndjson"
SCOPE = "batch"


async def handle(
    served: FrontendParts, method: str, parts: list[str], scope: Scope, receive: Receive,
    headers: dict[bytes, bytes], extra: list[tuple[bytes, bytes]],
) -> tuple[int, bytes | AsyncIterator[bytes], bytes]:
    """`parts`: the path after /v2/jobs."""
    jobs = served.jobs
    if jobs is None:
        raise NotFound("batch jobs are not enabled here")
    admission = served.pipeline.admission
    if parts == []:
        _allow(method, "POST")
        admitted = admission.identify(headers.get(b"authorization"), headers.get(b"x-user-id"), SCOPE)
        await admission.limit(admitted)
        extra.extend(admitted.headers)
        job = await _submit(served, jobs, admitted, scope, receive, headers)
        extra.append((b"location", f"/v2/jobs/{job.id}".encode()))
        return 202, dumps(_public(jobs, job)), JSON
    if len(parts) == 1 or (len(parts) == 2 and parts[1] in ("results", "cancel")):
        action = parts[1] if len(parts) == 2 else None
        _allow(method, "POST" if action == "cancel" else "GET")
        admitted = admission.identify(headers.get(b"authorization"), None, SCOPE)
        job = await _owned(jobs, parts[0], admitted.tenant)
        if action is None:
            return 200, dumps(_public(jobs, job)), JSON
        if action == "results":
            if not job.state.finished:
                raise Conflict(f"job '{job.id}' is {job.state.value}; its results are ready when it finishes")
            await admission.limit(admitted)
            extra.extend(admitted.headers)
            extra.append((b"x-job-state", job.state.value.encode()))
            return 200, jobs.store.results(job.id), NDJSON  # sent a piece at a time
        if job.state.finished:
            raise Conflict(f"job '{job.id}' already {job.state.value}")
        await admission.limit(admitted)
        await jobs.store.cancel(job.id)
        return 202, dumps({**_public(jobs, job), "cancel_requested": True}), JSON
    raise NotFound(f"no route for /v2/jobs/{'/'.join(parts)}")


async def _submit(
    served: FrontendParts, jobs: JobRunner, admitted: Admitted, scope: Scope, receive: Receive, headers: dict[bytes, bytes]
) -> Job:
    settings = jobs.settings
    body = await read_body(receive, headers, settings.max_body_bytes, settings.upload_timeout_s)
    upload = npy.is_upload(body)
    if upload:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        model, version = _one(query, "model"), _one(query, "version")
        if model is None:
            raise BadRequest("an .npy or .npz upload names its model in the query: /v2/jobs?model=NAME[&version=V]")
        inputs: Any = None
    else:
        doc = await asyncio.to_thread(parse_json, body) if len(body) > 65536 else parse_json(body)
        model, version, inputs = rows_request(doc, "a job (or an .npy / .npz upload)")
    entry = jobs.choose(model, version, admitted)
    spec = entry.runner.input_spec
    if upload:
        rows = await asyncio.to_thread(job_rows.from_upload, spec, body, settings.max_rows, served.limits,
                                       settings.max_body_bytes)
    else:
        rows = await asyncio.to_thread(job_rows.from_json, spec, inputs, settings.max_rows, served.limits)
    return await jobs.submit(entry, admitted, rows)


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if values is None:
        return None
    if len(values) != 1 or not values[0]:
        raise BadRequest(f"query parameter '{name}' must be given once, not empty")
    return values[0]


async def _owned(jobs: JobRunner, job_id: str, tenant: str) -> Job:
    job = await jobs.get(job_id)
    if job is None or job.tenant != tenant:
        raise NotFound(f"no job '{job_id[:64]}'")
    return job


def _public(jobs: JobRunner, job: Job) -> dict[str, Any]:
    return job.public(time.time(), jobs.settings.retention_s)


def _allow(method: str, allowed: str) -> None:
    if method != allowed and not (allowed == "GET" and method == "HEAD"):
        raise MethodNotAllowed(f"use {allowed}", headers={"Allow": allowed})
