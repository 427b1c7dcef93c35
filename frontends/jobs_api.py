"""`/v2/jobs`: batch jobs over REST (scope `batch`), each job visible only to its tenant.

    POST /v2/jobs                      submit: JSON rows, or an .npy/.npz upload with ?model=&version=  -> 202
    GET  /v2/jobs/{id}                 status: state, rows done and failed, rows per second
    GET  /v2/jobs/{id}/results         one NDJSON line per row, once the job has finished (409 before)
    POST /v2/jobs/{id}/cancel          stop after the rows in flight; results so far are kept -> 202

Submissions, results and cancels count against the tenant's rate limit; status reads need the scope only. Another tenant's
job answers 404, as if it did not exist. The routes are declared in frontends/routes.py; these are their handlers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import numpy as np

from core.errors import BadRequest, Conflict, NotFound
from frontends.asgi import JSON, Receive, Scope, dumps, read_body
from frontends.oip_codec import parse_json
from frontends.parts import FrontendParts
from frontends.predict_codec import rows_request, rows_to_inputs
from frontends.route_table import HttpRequest
from gateway.admission import Admitted
from gateway.settings import LimitSettings
from gateway.validate import check_inputs
from jobs import npy
from jobs import rows as job_rows
from jobs.decoded_rows import Decode, DecodedRows, takes_decoded_rows
from jobs.model import Job
from jobs.runner import JobRunner
from runners.base import Runner

NDJSON = b"application/x-ndjson"


async def submit(served: FrontendParts, request: HttpRequest) -> tuple[int, bytes, bytes]:
    jobs, admitted = _runner(served), request.admitted
    await served.pipeline.admission.limit(admitted)
    request.extra.extend(admitted.headers)
    job = await _submit(served, jobs, admitted, request.scope, request.receive, request.headers)
    request.extra.append((b"location", f"/v2/jobs/{job.id}".encode()))
    return 202, dumps(_public(jobs, job)), JSON


async def status(served: FrontendParts, request: HttpRequest) -> tuple[int, bytes, bytes]:
    jobs = _runner(served)
    return 200, dumps(_public(jobs, await _owned(jobs, request))), JSON


async def results(served: FrontendParts, request: HttpRequest) -> tuple[int, AsyncIterator[bytes], bytes]:
    jobs = _runner(served)
    job = await _owned(jobs, request)
    if not job.state.finished:
        raise Conflict(f"job '{job.id}' is {job.state.value}; its results are ready when it finishes")
    await served.pipeline.admission.limit(request.admitted)
    request.extra.extend(request.admitted.headers)
    request.extra.append((b"x-job-state", job.state.value.encode()))
    return 200, jobs.store.results(job.id), NDJSON  # sent a piece at a time


async def cancel(served: FrontendParts, request: HttpRequest) -> tuple[int, bytes, bytes]:
    jobs = _runner(served)
    job = await _owned(jobs, request)
    if job.state.finished:
        raise Conflict(f"job '{job.id}' already {job.state.value}")
    await served.pipeline.admission.limit(request.admitted)
    await jobs.store.cancel(job.id)
    return 202, dumps({**_public(jobs, job), "cancel_requested": True}), JSON


def enabled(served: FrontendParts) -> bool:
    """Batch jobs are switched on here: else their routes answer 404."""
    return served.jobs is not None


def _runner(served: FrontendParts) -> JobRunner:
    assert served.jobs is not None, "routed only where jobs are enabled"
    return served.jobs


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
    specs = entry.runner.signature.inputs
    if upload and len(specs) > 1:
        rows = await asyncio.to_thread(job_rows.from_named_upload, specs, body, settings.max_rows, served.limits,
                                       settings.max_body_bytes)
    elif upload:
        rows = await asyncio.to_thread(job_rows.from_upload, spec, body, settings.max_rows, served.limits,
                                       settings.max_body_bytes)
    elif takes_decoded_rows(entry.runner.signature, inputs):
        rows = DecodedRows.of(entry.runner.signature, inputs, _row_decoder(entry.runner, served.limits), settings.max_rows,
                              served.limits)
    else:
        rows = await asyncio.to_thread(job_rows.from_json, spec, inputs, settings.max_rows, served.limits)
    return await jobs.submit(entry, admitted, rows)


def _row_decoder(runner: Runner, limits: LimitSettings) -> Decode:
    """JSON rows to the model's tensors as `/predict` reads them, checked as the data plane will check them."""

    def decode(rows: list[Any]) -> dict[str, tuple[str, np.ndarray]]:
        tensors = rows_to_inputs(runner.signature, rows, limits, runner.feature_names)
        check_inputs(runner.signature, tensors, limits)
        return tensors

    return decode


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if values is None:
        return None
    if len(values) != 1 or not values[0]:
        raise BadRequest(f"query parameter '{name}' must be given once, not empty")
    return values[0]


async def _owned(jobs: JobRunner, request: HttpRequest) -> Job:
    """The path's job, when it is the caller's tenant's: another tenant's is 404, as if it did not exist."""
    job_id = request.params["job"]
    job = await jobs.get(job_id)
    if job is None or job.tenant != request.admitted.tenant:
        raise NotFound(f"no job '{job_id[:64]}'")
    return job


def _public(jobs: JobRunner, job: Job) -> dict[str, Any]:
    return job.public(time.time(), jobs.settings.retention_s)
