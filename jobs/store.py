"""Where jobs live, so any worker and any replica can read a job's status and results, and cancel it.

Redis with REDIS_URL (every replica), else a local folder (the workers of one machine). A job is
its status document, its results (NDJSON chunks, one line per row, appended as the job runs) and
a cancel flag kept apart, so the running worker's progress writes never undo a cancel. Everything
of a job expires `retention_s` after its last write, which for a finished job is when it finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
from redis.exceptions import RedisError

from core.errors import Unavailable
from jobs.model import Job, is_job_id

if TYPE_CHECKING:
    from redis.asyncio import Redis


class JobStore(ABC):
    remote: bool = False
    """Shared by every replica (else by one machine's workers only)."""

    def __init__(self, retention_s: float) -> None:
        self.retention_s = retention_s

    @abstractmethod
    async def save(self, job: Job) -> None:
        """Create or overwrite the job's status document."""

    @abstractmethod
    async def get(self, job_id: str) -> Job | None: ...

    @abstractmethod
    async def append_results(self, job_id: str, chunk: bytes) -> None: ...

    @abstractmethod
    async def results(self, job_id: str) -> bytes: ...

    @abstractmethod
    async def cancel(self, job_id: str) -> None: ...

    @abstractmethod
    async def cancel_requested(self, job_id: str) -> bool: ...

    @abstractmethod
    async def of_tenant(self, tenant: str) -> list[Job]:
        """The tenant's jobs that are still kept."""


class LocalJobStore(JobStore):
    def __init__(self, directory: Path, retention_s: float) -> None:
        super().__init__(retention_s)
        self.directory = directory

    def _path(self, job_id: str, suffix: str) -> Path:
        return self.directory / f"{job_id}{suffix}"

    def _write(self, job: Job) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self._path(job.id, f".json.{os.getpid()}.tmp")
        tmp.write_bytes(orjson.dumps(job.to_dict()))
        tmp.replace(self._path(job.id, ".json"))  # readers never see half a document

    async def save(self, job: Job) -> None:
        await asyncio.to_thread(self._write, job)

    def _read(self, job_id: str) -> Job | None:
        try:
            job = Job.from_dict(orjson.loads(self._path(job_id, ".json").read_bytes()))
        except FileNotFoundError:
            return None
        if self._expired(job, time.time()):
            self._delete(job_id)
            return None
        return job

    def _expired(self, job: Job, now: float) -> bool:
        last = job.finished_at if job.finished_at is not None else job.heartbeat_at
        return now - last > self.retention_s

    def _delete(self, job_id: str) -> None:
        for suffix in (".json", ".ndjson", ".cancel"):
            self._path(job_id, suffix).unlink(missing_ok=True)

    async def get(self, job_id: str) -> Job | None:
        if not is_job_id(job_id):  # anything else could name another file, or one too long to open
            return None
        return await asyncio.to_thread(self._read, job_id)

    def _append(self, job_id: str, chunk: bytes) -> None:
        with open(self._path(job_id, ".ndjson"), "ab") as f:
            f.write(chunk)

    async def append_results(self, job_id: str, chunk: bytes) -> None:
        await asyncio.to_thread(self._append, job_id, chunk)

    def _results(self, job_id: str) -> bytes:
        try:
            return self._path(job_id, ".ndjson").read_bytes()
        except FileNotFoundError:
            return b""

    async def results(self, job_id: str) -> bytes:
        return await asyncio.to_thread(self._results, job_id)

    async def cancel(self, job_id: str) -> None:
        await asyncio.to_thread(self._path(job_id, ".cancel").touch)

    async def cancel_requested(self, job_id: str) -> bool:
        return await asyncio.to_thread(self._path(job_id, ".cancel").exists)

    def _of_tenant(self, tenant: str) -> list[Job]:
        jobs = []
        for path in self.directory.glob("*.json") if self.directory.exists() else ():
            job = self._read(path.name[: -len(".json")])  # also sweeps expired jobs away
            if job is not None and job.tenant == tenant:
                jobs.append(job)
        return jobs

    async def of_tenant(self, tenant: str) -> list[Job]:
        return await asyncio.to_thread(self._of_tenant, tenant)


class RedisJobStore(JobStore):
    remote = True

    def __init__(self, redis: Redis, prefix: str, retention_s: float) -> None:
        super().__init__(retention_s)
        self.redis = redis
        self.prefix = prefix
        self._ttl_ms = int(retention_s * 1000)

    def _key(self, job_id: str, part: str = "") -> str:
        return f"{self.prefix}job:{job_id}{part}"

    async def save(self, job: Job) -> None:
        tenant_key = f"{self.prefix}tenant:{job.tenant}"
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self._key(job.id), orjson.dumps(job.to_dict()), px=self._ttl_ms)
            pipe.pexpire(self._key(job.id, ":results"), self._ttl_ms)
            pipe.pexpire(self._key(job.id, ":cancel"), self._ttl_ms)
            pipe.sadd(tenant_key, job.id)
            pipe.pexpire(tenant_key, self._ttl_ms)
            await pipe.execute()

    async def get(self, job_id: str) -> Job | None:
        with _reachable():
            raw = await self.redis.get(self._key(job_id))
        return Job.from_dict(orjson.loads(raw)) if raw is not None else None

    async def append_results(self, job_id: str, chunk: bytes) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(self._key(job_id, ":results"), chunk)
            pipe.pexpire(self._key(job_id, ":results"), self._ttl_ms)
            await pipe.execute()

    async def results(self, job_id: str) -> bytes:
        """Chunk by chunk: one chunk (`flush_rows` lines) per round trip keeps each within the client's timeout."""
        key = self._key(job_id, ":results")
        with _reachable():
            return b"".join([chunk for i in range(await self.redis.llen(key)) for chunk in await self.redis.lrange(key, i, i)])

    async def cancel(self, job_id: str) -> None:
        with _reachable():
            await self.redis.set(self._key(job_id, ":cancel"), b"1", px=self._ttl_ms)

    async def cancel_requested(self, job_id: str) -> bool:
        return bool(await self.redis.exists(self._key(job_id, ":cancel")))

    async def of_tenant(self, tenant: str) -> list[Job]:
        tenant_key = f"{self.prefix}tenant:{tenant}"
        with _reachable():
            ids = sorted(m.decode() for m in await self.redis.smembers(tenant_key))
        if not ids:
            return []
        docs = await self.redis.mget([self._key(i) for i in ids])
        gone = [i for i, d in zip(ids, docs) if d is None]
        if gone:
            await self.redis.srem(tenant_key, *gone)
        return [Job.from_dict(orjson.loads(d)) for d in docs if d is not None]


@contextlib.contextmanager
def _reachable() -> Iterator[None]:
    """A request that needs the job store while Redis does not answer gets 503, not 500."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise Unavailable(f"job store unreachable ({type(exc).__name__}); try again", headers={"Retry-After": "1"}) from None
