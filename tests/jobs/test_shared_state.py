"""Jobs in Redis: status, results and cancel work through a worker other than the one running the job; all of a
job expires its retention after it finished."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest
from redis.asyncio import Redis

from gateway.admission import Admitted
from gateway.settings import LimitSettings
from jobs.model import JobState
from jobs.rows import from_json
from jobs.runner import JobRunner
from jobs.settings import JobSettings
from jobs.store import RedisJobStore
from tests.helpers import REDIS_URL
from tests.jobs.support import read_all

pytestmark = pytest.mark.cache_independent
"""Job state in Redis; a job's rows pass the prediction cache by."""

ALICE = Admitted("acme", "alice")


@pytest.fixture
async def redis_prefix():
    prefix = f"rtserve-test:{uuid.uuid4().hex}:jobs:"
    yield prefix
    client = Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def runner(app, prefix: str) -> JobRunner:
    """A worker's job runner of its own, with its own Redis connection: as another replica would have."""
    settings = JobSettings(retention_s=60, flush_rows=512, heartbeat_s=0.05)
    store = RedisJobStore(Redis.from_url(REDIS_URL), prefix, settings.retention_s)
    return JobRunner(app.runtime.pipeline, store, settings)


async def finished(other: JobRunner, job_id: str) -> None:
    while not (await other.get(job_id)).state.finished:
        await asyncio.sleep(0.01)


async def test_another_worker_reads_status_and_results_and_cancels(app, digits, redis_prefix):
    a, b = runner(app, redis_prefix), runner(app, redis_prefix)
    entry = a.choose("digits-sklearn", "v1", None)
    small = await a.submit(entry, ALICE, from_json(entry.runner.input_spec, digits[:1000].tolist(), 10_000, LimitSettings()))
    await asyncio.wait_for(finished(b, small.id), 30)
    seen = await b.get(small.id)
    assert (seen.state, seen.rows_done, seen.tenant) == (JobState.SUCCEEDED, 1000, "acme"), seen.error
    assert (await read_all(b.store.results(small.id))).count(b"\n") == 1000
    assert [j.id for j in await b.store.of_tenant("acme")] == [small.id]
    ttl = await b.store.redis.pttl(f"{redis_prefix}job:{small.id}:results")
    assert 0 < ttl <= 60_000

    rows = from_json(entry.runner.input_spec, np.tile(digits, (40, 1)).tolist(), 100_000, LimitSettings())
    big = await a.submit(entry, ALICE, rows)
    while (await b.get(big.id)).rows_done == 0:  # progress reaches the other worker through the heartbeat
        await asyncio.sleep(0.01)
    await b.store.cancel(big.id)
    await asyncio.wait_for(finished(b, big.id), 30)
    seen = await b.get(big.id)
    assert seen.state is JobState.CANCELLED and seen.rows_done < seen.rows
    assert (await read_all(b.store.results(big.id))).count(b"\n") == seen.rows_done


async def test_a_job_whose_worker_stopped_reads_as_failed(app, digits, redis_prefix):
    a, b = runner(app, redis_prefix), runner(app, redis_prefix)
    entry = a.choose("digits-sklearn", "v1", None)
    rows = from_json(entry.runner.input_spec, np.tile(digits, (40, 1)).tolist(), 100_000, LimitSettings())
    job = await a.submit(entry, ALICE, rows)
    while (await a.get(job.id)).rows_done == 0:  # its own copy: the store's lags a heartbeat, and the job is fast
        await asyncio.sleep(0.001)
    await a.stop()  # the worker goes away mid-job: no more heartbeats
    await asyncio.wait_for(finished(b, job.id), 10)  # ten missed heartbeats of 0.05 s
    seen = await b.get(job.id)
    assert seen.state is JobState.FAILED and "worker running this job stopped" in seen.error
    assert seen.rows_done < seen.rows
