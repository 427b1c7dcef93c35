"""The job stores (a folder, Redis): a tenant's quota counted and the job recorded in one step, a tenant's
own jobs read through its index, and every status write through a temporary file of its own."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from redis.asyncio import Redis

from core.errors import RateLimited
from jobs.model import Job, JobState, new_job_id
from jobs.store import JobStore, LocalJobStore, Quota, RedisJobStore
from tests.helpers import REDIS_URL
from tests.jobs.support import read_all

pytestmark = pytest.mark.cache_independent
"""The job stores alone."""

QUOTA = Quota(max_active=8, max_stored=1000, max_result_bytes=10**9, stale_s=20)


def job(tenant: str, state: JobState = JobState.QUEUED) -> Job:
    return Job(new_job_id(), tenant, "digits-sklearn", "v1", 10, state=state)


@pytest.fixture(params=["folder", "redis"])
async def store(request, tmp_path):
    if request.param == "folder":
        yield LocalJobStore(tmp_path / "jobs", retention_s=60)
        return
    prefix = f"rtserve-test:{uuid.uuid4().hex}:jobs:"
    client = Redis.from_url(REDIS_URL)
    yield RedisJobStore(client, prefix, retention_s=60)
    keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_parallel_creates_are_held_to_the_active_limit(store: JobStore):
    outcomes = await asyncio.gather(*(store.create(job("acme"), QUOTA) for _ in range(30)), return_exceptions=True)
    assert sum(not isinstance(o, Exception) for o in outcomes) == 8
    assert all(isinstance(o, RateLimited) for o in outcomes if isinstance(o, Exception))
    assert len(await store.of_tenant("acme")) == 8
    assert len(await store.of_tenant("globex")) == 0
    await store.create(job("globex"), QUOTA)  # another tenant's room is its own


def test_parallel_creates_from_many_threads_are_held_to_the_active_limit(tmp_path):
    """The folder is shared by the workers of a machine: the lock is a file lock, not the event loop."""
    store = LocalJobStore(tmp_path / "jobs", retention_s=60)

    def create() -> bool:
        try:
            store._create(job("acme"), QUOTA)
        except RateLimited:
            return False
        return True

    with ThreadPoolExecutor(30) as pool:
        assert sum(pool.map(lambda _: create(), range(30))) == 8


async def test_finished_and_stale_jobs_are_not_active_but_still_kept(store: JobStore):
    quota = Quota(max_active=1, max_stored=3, max_result_bytes=10**9, stale_s=20)
    done = job("acme", JobState.SUCCEEDED)
    await store.create(done, quota)
    stale = job("acme", JobState.RUNNING)
    stale.heartbeat_at = time.time() - 30  # its worker stopped (stale after 20 s, kept for 60)
    await store.create(stale, quota)
    usage = await store.create(job("acme"), quota)
    assert (usage.active, usage.stored) == (0, 2)
    with pytest.raises(RateLimited, match="has 1 jobs queued or running, the limit is 1"):
        await store.create(job("acme"), quota)
    with pytest.raises(RateLimited, match="keeps 3 jobs, the limit is 3"):
        await store.create(job("acme"), Quota(max_active=5, max_stored=3, max_result_bytes=10**9, stale_s=20))


async def test_result_bytes_kept_count_against_the_tenant(store: JobStore):
    quota = Quota(max_active=8, max_stored=100, max_result_bytes=1000, stale_s=20)
    first = job("acme", JobState.SUCCEEDED)
    await store.create(first, quota)
    await store.append_results(first.id, b"x" * 600)
    await store.append_results(first.id, b"y" * 400)
    assert await read_all(store.results(first.id)) == b"x" * 600 + b"y" * 400
    with pytest.raises(RateLimited, match="1000 bytes of results, the limit is 1000"):
        await store.create(job("acme"), quota)
    assert (await store.create(job("globex"), quota)).result_bytes == 0


async def test_a_submission_reads_its_tenants_jobs_only(tmp_path, monkeypatch):
    store = LocalJobStore(tmp_path / "jobs", retention_s=60)
    for _ in range(1500):  # another tenant's jobs, recorded as `create` records them
        other = job("globex", JobState.SUCCEEDED)
        store._write(other)
        (store._index("globex") / other.id).parent.mkdir(parents=True, exist_ok=True)
        (store._index("globex") / other.id).touch()
    for _ in range(3):
        await store.create(job("acme"), QUOTA)
    read: list[str] = []
    original = store._read
    monkeypatch.setattr(store, "_read", lambda job_id: read.append(job_id) or original(job_id))
    await store.create(job("acme"), QUOTA)
    assert len(read) == 3  # acme's three jobs, none of globex's 1,500
    assert len(await store.of_tenant("globex")) == 1500


def test_every_status_write_has_a_temporary_file_of_its_own(tmp_path):
    """The heartbeat and the job's own thread write the same job at once: a shared temporary name let one
    rename the other's file away (FileNotFoundError), and the job failed."""
    store = LocalJobStore(tmp_path / "jobs", retention_s=60)
    one = job("acme")
    errors: list[BaseException] = []

    def write() -> None:
        for _ in range(200):
            try:
                store._write(one)
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store._read(one.id) == one
    assert not list(store.directory.glob("*.tmp"))
