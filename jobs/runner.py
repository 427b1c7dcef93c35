"""Runs batch jobs in the worker that accepted them, a batch of rows at a time through the data plane.

Each batch is one background request to `DataPlane.infer`, pinned to the job's version in mode
`batch`: the data plane validates it against the version's signature, holds the version while it
runs and counts it in the request metrics (variant `batch`, which the canary analysis leaves out).
Its caller was admitted once, when the job was submitted, so its rows are not rate limited again,
and they pass the prediction cache by.

A job runs at lower priority than real-time traffic. It runs a batch (the version's
`max_batch_size` rows, within what one request may hold) only in a gap in real-time traffic: when
no real-time request is in flight in the worker (the data plane counts them), so a real-time
request waits at most for the one job batch that started before it arrived. Under sustained
real-time load with no gap, it still runs a batch every `busy_step_s`. Its batches go in at the
batcher's lowest priority level (`priority_levels`), one in flight per version, so real-time
requests overtake them there too. A batcher that refuses the job's batch (queue full, latency
budget) is busy with real-time traffic: the data plane waits and tries again, the job does not fail.

Unloading a version that a job runs on does not wait for the job: the unload waits for the
job's batch in flight only, and the job then fails its remaining rows with `model_not_ready`
("... was unloaded while the job ran") and ends `failed`. Results hold one line per row either way.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable

import numpy as np
import orjson

from core.errors import ModelNotFound, ModelNotReady, ServingError
from gateway.admission import Admitted
from gateway.settings import LimitSettings
from jobs.metrics import JobMetrics
from jobs.model import Job, JobState, is_job_id, new_job_id
from jobs.rows import Rows
from jobs.settings import JobSettings
from jobs.store import JobStore, Quota
from models.signature import TensorSpec
from observability.logs import event
from pipeline.dataplane import Answer, DataPlane, InferenceRequest, Tensors
from runners.batcher import Outputs
from runners.registry import LoadedVersion, VersionState

log = logging.getLogger(__name__)

VARIANT = "batch"
"""The variant label of a job's batches in the request metrics."""
SPAN = "job_batch"


class VersionGone(Exception):
    """The job's version was unloaded (or is draining) while the job ran."""


class JobRunner:
    def __init__(self, plane: DataPlane, store: JobStore, settings: JobSettings, metrics: JobMetrics | None = None) -> None:
        self.plane = plane
        self.registry = plane.registry
        self.limits = plane.limits
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self._slots: asyncio.Semaphore | None = None
        self._mine: dict[str, Job] = {}
        self._tasks: set[asyncio.Task] = set()
        self._heartbeat: asyncio.Task | None = None
        self._version_locks: dict[str, asyncio.Lock] = {}

    def choose(self, name: str, version: str | None, caller: Admitted | None) -> LoadedVersion:
        """The version a job runs on for its whole life: the one asked for, else the route's choice for
        this caller (or, while that is not ready here, the heaviest ready one). It must declare `batch`;
        a model the caller may not use is 403 first."""
        return self.plane.route(name, version, caller, "batch").entry

    async def submit(self, entry: LoadedVersion, caller: Admitted, rows: Rows) -> Job:
        """Record the job and start it here; 429 when the tenant already has its limit of jobs queued or running,
        of jobs kept, or of result bytes kept (counted and recorded in one step of the store). `caller`, admitted
        once here, is the caller of every batch of the job."""
        settings = self.settings
        tenant, subject = caller.tenant, caller.user
        quota = Quota(settings.max_active_per_tenant, settings.max_stored_per_tenant, settings.max_result_bytes_per_tenant,
                      stale_s=10 * settings.heartbeat_s)
        job = Job(new_job_id(), tenant, entry.name, entry.version, len(rows), subject=subject)
        usage = await self.store.create(job, quota)
        self._mine[job.id] = job
        self._count(job, JobState.QUEUED, +1)
        budget = settings.max_result_bytes_per_tenant - usage.result_bytes
        task = asyncio.get_running_loop().create_task(self._run(job, caller, rows, budget), name=f"job-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat(), name="job-heartbeat")
        event(log, "job_submitted", job=job.id, tenant=tenant, model=entry.name, version=entry.version, rows=len(rows))
        return job

    async def get(self, job_id: str) -> Job | None:
        """The freshest view: this worker's own copy of a job it runs, else the store's; None for an id
        that is not one this server makes (it never reaches the store)."""
        if not is_job_id(job_id):
            return None
        job = self._mine.get(job_id) or await self.store.get(job_id)
        return job.seen_at(time.time(), self.settings.heartbeat_s) if job is not None else None

    async def stop(self) -> None:
        for task in [*self._tasks, *([self._heartbeat] if self._heartbeat else [])]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _count(self, job: Job, state: JobState, delta: int) -> None:
        if self.metrics is None:
            return
        if delta > 0:
            self.metrics.jobs.labels(state.value).inc()
        if not state.finished:
            self.metrics.active.labels(state.value).inc(delta)

    async def _run(self, job: Job, caller: Admitted, rows: Rows, budget: int) -> None:
        """`budget`: the result bytes the job may write, what its tenant had left when it was submitted."""
        self._slots = self._slots or asyncio.Semaphore(self.settings.max_running)
        try:
            async with self._slots:
                self._count(job, JobState.QUEUED, -1)
                if await self.store.cancel_requested(job.id):
                    await self._finish(job, JobState.CANCELLED, "cancelled before it started")
                    return
                job.state, job.started_at = JobState.RUNNING, time.time()
                self._count(job, JobState.RUNNING, +1)
                await self.store.save(job)
                try:
                    state, error = await self._rows(job, caller, rows, budget)
                finally:
                    self._count(job, JobState.RUNNING, -1)
                await self._finish(job, state, error)
        except asyncio.CancelledError:  # the worker is stopping
            raise
        except Exception as exc:  # a broken job must not take the worker down
            log.exception("job %s failed", job.id)
            await self._finish(job, JobState.FAILED, f"internal error: {type(exc).__name__}")
        finally:
            self._mine.pop(job.id, None)

    async def _rows(self, job: Job, caller: Admitted, rows: Rows, budget: int) -> tuple[JobState, str | None]:
        """Every row in order, a batch at a time, until the results outgrow `budget`; returns how the job ended."""
        entry = self.registry.get(job.model, job.version)
        step = batch_rows(entry.batcher.max_batch_size, rows.spec, self.limits)
        pending: list[bytes] = []
        pending_rows = 0
        start = 0
        try:
            while start < len(rows):
                await self._gap()
                self._check_served(job)
                end = min(start + step, len(rows))
                data, index, errors = rows.batch(start, end, self.limits)
                outputs, failure = None, None
                if data is not None:
                    try:
                        outputs = await self._batch(job, caller, data)
                    except (ModelNotFound, ModelNotReady):
                        raise VersionGone() from None
                    except ServingError as exc:
                        failure = exc
                lines, failed = _lines(range(start, end), index, outputs, errors, failure)
                pending.append(lines)
                pending_rows += end - start
                self._done(job, end - start, failed)
                start = end
                if pending_rows >= self.settings.flush_rows:
                    chunk = b"".join(pending)
                    await self.store.append_results(job.id, chunk)
                    pending, pending_rows, budget = [], 0, budget - len(chunk)
                    if budget < 0:
                        return JobState.FAILED, (f"results reached the tenant's limit of {self.settings.max_result_bytes_per_tenant} "
                                                 f"bytes kept after {job.rows_done} of {job.rows} rows")
                    if await self.store.cancel_requested(job.id):
                        return JobState.CANCELLED, f"cancelled after {job.rows_done} of {job.rows} rows"
            return JobState.SUCCEEDED, None
        except VersionGone:
            reason = f"model '{job.model}:{job.version}' was unloaded while the job ran"
            gone = ModelNotReady(f"{reason}; row not run")
            rest = range(start, len(rows))
            lines, failed = _lines(rest, [], None, {}, gone)
            pending.append(lines)
            self._done(job, len(rest), failed)
            return JobState.FAILED, f"{reason}: {len(rest)} rows not run"
        finally:
            if pending:
                await self.store.append_results(job.id, b"".join(pending))

    async def _gap(self) -> None:
        """Give way to real-time requests: those ready to run go first, then wait for a moment with none
        in flight (at most `busy_step_s`)."""
        await asyncio.sleep(0)
        await self.plane.pause(self.settings.busy_step_s)

    def _check_served(self, job: Job) -> None:
        entry = self.registry.versions(job.model).get(job.version)
        if entry is None or entry.state is not VersionState.READY:
            raise VersionGone()

    async def _batch(self, job: Job, caller: Admitted, data: np.ndarray | dict[str, tuple[str, np.ndarray]]) -> Outputs:
        """One batch through the data plane at the batcher's lowest priority, one in flight per version. The
        version is held while the batch runs: an unload waits for this batch, not for the whole job."""

        async def decode(entry: LoadedVersion) -> Tensors:
            if isinstance(data, dict):  # decoded rows: named tensors already
                return Tensors(data, priority=entry.batcher.priority_levels)
            spec = entry.runner.input_spec
            return Tensors({spec.name: (spec.datatype, data)}, priority=entry.batcher.priority_levels)

        def encode(answer: Answer) -> Outputs:
            return answer.outputs

        lock = self._version_locks.setdefault(f"{job.model}:{job.version}", asyncio.Lock())
        async with lock:
            return await self.plane.infer(InferenceRequest(
                decode, encode, model=job.model, version=job.version, admitted=caller, variant=VARIANT, mode="batch",
                span=SPAN, request_id=job.id, background=True))

    def _done(self, job: Job, rows: int, failed: int) -> None:
        job.rows_done += rows
        job.rows_failed += failed
        if self.metrics is not None:
            if rows - failed:
                self.metrics.rows.labels(job.model, job.version, "ok").inc(rows - failed)
            if failed:
                self.metrics.rows.labels(job.model, job.version, "failed").inc(failed)

    async def _finish(self, job: Job, state: JobState, error: str | None) -> None:
        job.state, job.error, job.finished_at = state, error, time.time()
        self._count(job, state, +1)
        await self.store.save(job)
        event(log, "job_finished", job=job.id, state=state.value, rows=job.rows_done, failed=job.rows_failed,
              rows_per_second=job.rows_per_second(job.finished_at), error=error)

    async def _beat(self) -> None:
        """Record the progress of this worker's jobs, so other workers show it and can tell this one is alive."""
        while self._mine:
            await asyncio.sleep(self.settings.heartbeat_s)
            now = time.time()
            for job in list(self._mine.values()):
                if not job.state.finished:
                    job.heartbeat_at = now
                    try:
                        await self.store.save(job)
                    except Exception as exc:  # noqa: BLE001 - try again at the next beat
                        log.warning("job %s: progress not recorded (%s: %s)", job.id, type(exc).__name__, exc)


def batch_rows(max_batch_size: int, spec: TensorSpec, limits: LimitSettings) -> int:
    """Rows in one job batch: the version's batch size, within the rows and elements one request may hold
    (the data plane checks a job's batch as it checks any request; a variable dimension counts at its longest)."""
    per_row = math.prod(limits.max_sequence_length if d == -1 else d for d in spec.row_shape)
    return max(1, min(max_batch_size, limits.max_rows, limits.max_elements // per_row))


def _lines(
    rows: Iterable[int], index: list[int], outputs: Outputs | None, errors: dict[int, str], failure: ServingError | None
) -> tuple[bytes, int]:
    """One NDJSON line per row, in row order: its outputs (as `/predict` writes them), or its error; and the failures."""
    position = {i: k for k, i in enumerate(index)}
    columns = {name: arr.tolist() for name, arr in outputs.items()} if outputs is not None else {}
    out: list[bytes] = []
    failed = 0
    for i in rows:
        if i in errors:
            out.append(orjson.dumps({"row": i, "error": errors[i], "code": "invalid_input"}))
            failed += 1
        elif i not in position or failure is not None:
            problem = failure or ModelNotReady("row not run")
            out.append(orjson.dumps({"row": i, "error": problem.message, "code": problem.code}))
            failed += 1
        else:
            k = position[i]
            out.append(orjson.dumps({"row": i, "outputs": {name: col[k] for name, col in columns.items()}}))
    return b"\n".join(out) + b"\n", failed
