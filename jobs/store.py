"""Where jobs live, so any worker and any replica can read a job's status and results, and cancel it.

Redis with REDIS_URL (every replica), else a local folder (the workers of one machine). A job is
its status document, its results (NDJSON chunks, one line per row, appended as the job runs) and
a cancel flag kept apart, so the running worker's progress writes never undo a cancel. Everything
of a job expires `retention_s` after its last write, which for a finished job is when it finished.

Each tenant has an index of its jobs, so a submission reads the tenant's own jobs only, and
`create` counts them against the tenant's quota and records the new job in one atomic step (a Lua
script in Redis; a lock file held across the workers of the machine in the folder): parallel
submissions cannot all see room for one more.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
from redis.exceptions import RedisError

from core.errors import RateLimited, Unavailable
from jobs.model import Job, is_job_id

if TYPE_CHECKING:
    from redis.asyncio import Redis

READ_CHUNK_BYTES = 256 * 1024
"""Results are sent a piece at a time: one piece of a file held per reader, whatever the results' size."""
SWEEP_S = 600.0
"""How often a worker deletes the expired jobs of every tenant from the folder (tenants that stopped coming back)."""


@dataclass(frozen=True)
class Quota:
    """What one tenant may have at once."""

    max_active: int
    max_stored: int
    max_result_bytes: int
    stale_s: float
    """A job not finished whose heartbeat is older than this belonged to a worker that stopped: not active."""


@dataclass(frozen=True)
class Usage:
    active: int
    stored: int
    result_bytes: int

    def refusal(self, quota: Quota) -> RateLimited | None:
        """Why one more job does not fit, if it does not."""
        if self.active >= quota.max_active:
            return RateLimited(f"tenant has {self.active} jobs queued or running, the limit is {quota.max_active}",
                               headers={"Retry-After": "5"})
        if self.stored >= quota.max_stored:
            return RateLimited(f"tenant keeps {self.stored} jobs, the limit is {quota.max_stored}; jobs are deleted "
                               "when their retention after finishing ends", headers={"Retry-After": "60"})
        if self.result_bytes >= quota.max_result_bytes:
            return RateLimited(f"tenant keeps {self.result_bytes} bytes of results, the limit is {quota.max_result_bytes}; "
                               "jobs are deleted when their retention after finishing ends", headers={"Retry-After": "60"})
        return None


def _usage(jobs: list[tuple[Job, int]], quota: Quota, now: float) -> Usage:
    active = sum(1 for job, _ in jobs if not job.state.finished and now - job.heartbeat_at <= quota.stale_s)
    return Usage(active, len(jobs), sum(size for _, size in jobs))


class JobStore(ABC):
    remote: bool = False
    """Shared by every replica (else by one machine's workers only)."""

    def __init__(self, retention_s: float) -> None:
        self.retention_s = retention_s

    @abstractmethod
    async def create(self, job: Job, quota: Quota) -> Usage:
        """Record a new job if its tenant's usage (returned) leaves room for it; else raise 429."""

    @abstractmethod
    async def save(self, job: Job) -> None:
        """Overwrite the status document of a job `create` recorded."""

    @abstractmethod
    async def get(self, job_id: str) -> Job | None: ...

    @abstractmethod
    async def append_results(self, job_id: str, chunk: bytes) -> None: ...

    @abstractmethod
    def results(self, job_id: str) -> AsyncIterator[bytes]:
        """The results a piece at a time, each read when the one before has been sent."""

    @abstractmethod
    async def cancel(self, job_id: str) -> None: ...

    @abstractmethod
    async def cancel_requested(self, job_id: str) -> bool: ...

    @abstractmethod
    async def of_tenant(self, tenant: str) -> list[Job]:
        """The tenant's jobs that are still kept."""


class LocalJobStore(JobStore):
    """`<id>.json`, `<id>.ndjson`, `<id>.cancel` in the folder; `tenants/<hash>/<id>` marks the tenant's jobs."""

    def __init__(self, directory: Path, retention_s: float) -> None:
        super().__init__(retention_s)
        self.directory = directory
        self._swept = time.monotonic()

    def _path(self, job_id: str, suffix: str) -> Path:
        return self.directory / f"{job_id}{suffix}"

    def _index(self, tenant: str) -> Path:
        return self.directory / "tenants" / hashlib.sha256(tenant.encode("utf-8", "surrogatepass")).hexdigest()[:32]

    def _write(self, job: Job) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # A temporary file of this write's own: the heartbeat and the job's own writes may overlap.
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f"{job.id}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(orjson.dumps(job.to_dict()))
            os.replace(tmp, self._path(job.id, ".json"))  # readers never see half a document
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _create(self, job: Job, quota: Quota) -> Usage:
        index = self._index(job.tenant)
        index.mkdir(parents=True, exist_ok=True)
        with open(index.with_suffix(".lock"), "wb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # every worker of the machine counts and records in turn
            usage = _usage(self._tenant_jobs(job.tenant), quota, time.time())
            refusal = usage.refusal(quota)
            if refusal is not None:
                raise refusal
            self._write(job)
            (index / job.id).touch()
        return usage

    async def create(self, job: Job, quota: Quota) -> Usage:
        usage = await asyncio.to_thread(self._create, job, quota)
        if time.monotonic() - self._swept > SWEEP_S:
            self._swept = time.monotonic()
            asyncio.get_running_loop().run_in_executor(None, self._sweep)
        return usage

    async def save(self, job: Job) -> None:
        await asyncio.to_thread(self._write, job)

    def _read(self, job_id: str) -> Job | None:
        try:
            job = Job.from_dict(orjson.loads(self._path(job_id, ".json").read_bytes()))
        except FileNotFoundError:
            return None
        if self._expired(job, time.time()):
            self._delete(job)
            return None
        return job

    def _expired(self, job: Job, now: float) -> bool:
        last = job.finished_at if job.finished_at is not None else job.heartbeat_at
        return now - last > self.retention_s

    def _delete(self, job: Job) -> None:
        for suffix in (".json", ".ndjson", ".cancel"):
            self._path(job.id, suffix).unlink(missing_ok=True)
        (self._index(job.tenant) / job.id).unlink(missing_ok=True)

    def _sweep(self) -> None:
        for path in self.directory.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                self._read(path.name.removesuffix(".json"))

    async def get(self, job_id: str) -> Job | None:
        if not is_job_id(job_id):  # anything else could name another file, or one too long to open
            return None
        return await asyncio.to_thread(self._read, job_id)

    def _append(self, job_id: str, chunk: bytes) -> None:
        with open(self._path(job_id, ".ndjson"), "ab") as f:
            f.write(chunk)

    async def append_results(self, job_id: str, chunk: bytes) -> None:
        await asyncio.to_thread(self._append, job_id, chunk)

    async def results(self, job_id: str) -> AsyncIterator[bytes]:
        try:
            f = await asyncio.to_thread(open, self._path(job_id, ".ndjson"), "rb")
        except FileNotFoundError:
            return
        try:
            while piece := await asyncio.to_thread(f.read, READ_CHUNK_BYTES):
                yield piece
        finally:
            f.close()

    async def cancel(self, job_id: str) -> None:
        await asyncio.to_thread(self._path(job_id, ".cancel").touch)

    async def cancel_requested(self, job_id: str) -> bool:
        return await asyncio.to_thread(self._path(job_id, ".cancel").exists)

    def _tenant_jobs(self, tenant: str) -> list[tuple[Job, int]]:
        """The tenant's kept jobs with the size of their results, from its index (sweeps its expired jobs away)."""
        index = self._index(tenant)
        jobs = []
        for marker in index.iterdir() if index.exists() else ():
            job = self._read(marker.name)
            if job is None:
                marker.unlink(missing_ok=True)
                continue
            try:
                size = self._path(job.id, ".ndjson").stat().st_size
            except FileNotFoundError:
                size = 0
            jobs.append((job, size))
        return jobs

    async def of_tenant(self, tenant: str) -> list[Job]:
        return [job for job, _ in await asyncio.to_thread(self._tenant_jobs, tenant)]


# KEYS: the tenant's index (a set of job ids), the new job's document.
# ARGV: key prefix, job id, document, ttl ms, now, stale s, max active, max stored, max result bytes.
# Returns {verdict, active, stored, result bytes}: verdict 1 when the job was recorded.
_CREATE = """
local index, prefix = KEYS[1], ARGV[1]
local now, stale = tonumber(ARGV[5]), tonumber(ARGV[6])
local active, stored, bytes = 0, 0, 0
for _, id in ipairs(redis.call('SMEMBERS', index)) do
  local doc = redis.call('GET', prefix .. 'job:' .. id)
  if doc then
    stored = stored + 1
    local job = cjson.decode(doc)
    local finished = job.state == 'succeeded' or job.state == 'failed' or job.state == 'cancelled'
    if not finished and now - job.heartbeat_at <= stale then active = active + 1 end
    bytes = bytes + (tonumber(redis.call('GET', prefix .. 'job:' .. id .. ':bytes')) or 0)
  else
    redis.call('SREM', index, id)
  end
end
if active >= tonumber(ARGV[7]) or stored >= tonumber(ARGV[8]) or bytes >= tonumber(ARGV[9]) then
  return {0, active, stored, bytes}
end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
redis.call('SADD', index, ARGV[2])
redis.call('PEXPIRE', index, ARGV[4])
return {1, active, stored, bytes}
"""


class RedisJobStore(JobStore):
    remote = True

    def __init__(self, redis: Redis, prefix: str, retention_s: float) -> None:
        super().__init__(retention_s)
        self.redis = redis
        self.prefix = prefix
        self._ttl_ms = int(retention_s * 1000)
        self._create = redis.register_script(_CREATE)

    def _key(self, job_id: str, part: str = "") -> str:
        return f"{self.prefix}job:{job_id}{part}"

    def _tenant_key(self, tenant: str) -> str:
        return f"{self.prefix}tenant:{tenant}"

    async def create(self, job: Job, quota: Quota) -> Usage:
        args = [self.prefix, job.id, orjson.dumps(job.to_dict()), self._ttl_ms, time.time(), quota.stale_s,
                quota.max_active, quota.max_stored, quota.max_result_bytes]
        with _reachable():
            recorded, *counts = await self._create(keys=[self._tenant_key(job.tenant), self._key(job.id)], args=args)
        usage = Usage(*(int(c) for c in counts))
        if not recorded:
            raise usage.refusal(quota) or RateLimited("tenant is over its job quota", headers={"Retry-After": "5"})
        return usage

    async def save(self, job: Job) -> None:
        tenant_key = self._tenant_key(job.tenant)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self._key(job.id), orjson.dumps(job.to_dict()), px=self._ttl_ms)
            for part in (":results", ":bytes", ":cancel"):
                pipe.pexpire(self._key(job.id, part), self._ttl_ms)
            pipe.pexpire(tenant_key, self._ttl_ms)
            await pipe.execute()

    async def get(self, job_id: str) -> Job | None:
        with _reachable():
            raw = await self.redis.get(self._key(job_id))
        return Job.from_dict(orjson.loads(raw)) if raw is not None else None

    async def append_results(self, job_id: str, chunk: bytes) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(self._key(job_id, ":results"), chunk)
            pipe.incrby(self._key(job_id, ":bytes"), len(chunk))
            for part in (":results", ":bytes"):
                pipe.pexpire(self._key(job_id, part), self._ttl_ms)
            await pipe.execute()

    async def results(self, job_id: str) -> AsyncIterator[bytes]:
        """Chunk by chunk (`flush_rows` lines each), one round trip per chunk, each after the one before was sent."""
        key = self._key(job_id, ":results")
        with _reachable():
            count = await self.redis.llen(key)
        for i in range(count):
            with _reachable():
                piece = await self.redis.lrange(key, i, i)
            if piece:
                yield piece[0]

    async def cancel(self, job_id: str) -> None:
        with _reachable():
            await self.redis.set(self._key(job_id, ":cancel"), b"1", px=self._ttl_ms)

    async def cancel_requested(self, job_id: str) -> bool:
        return bool(await self.redis.exists(self._key(job_id, ":cancel")))

    async def of_tenant(self, tenant: str) -> list[Job]:
        tenant_key = self._tenant_key(tenant)
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
