"""The canary lease: exactly one canary controller acts at a time, and a dead holder is replaced.

Across replicas the lease is a Redis key that expires unless renewed; on one machine without
Redis it is an `flock` that the kernel drops when its holder dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class Lease(Protocol):
    async def acquire(self) -> bool: ...
    async def renew(self) -> bool: ...
    async def release(self) -> None: ...
    @property
    def held(self) -> bool: ...


_ACQUIRE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class RedisLease:
    """One holder across all replicas; it expires `ttl_s` after the last renewal, so a dead holder frees it.

    Renew and release compare the stored holder id first (in Lua, atomically), so a holder
    that was too slow and lost the lease cannot extend or delete its successor's. `held` is
    the holder's own conservative view: it ends `ttl_s` after the last renewal was *sent*,
    even if Redis cannot be reached to say so. Renew every `ttl_s / 3` or so.
    """

    def __init__(
        self,
        redis: Redis,
        key: str,
        ttl_s: float = 5.0,
        holder_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.key = key
        self.ttl_s = ttl_s
        self.clock = clock  # for `held`, the holder's own view; Redis expires the key on its own clock
        self.holder_id = holder_id or f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._valid_until = 0.0

    @property
    def held(self) -> bool:
        return self.clock() < self._valid_until

    async def acquire(self) -> bool:
        return await self._call(self._acquire, "acquire")

    async def renew(self) -> bool:
        was_held = self.held
        ok = await self._call(self._renew, "renew")
        if was_held and not ok:
            log.warning("lease %s lost by %s", self.key, self.holder_id)
        return ok

    async def release(self) -> None:
        self._valid_until = 0.0
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await self._release(keys=[self.key], args=[self.holder_id])

    async def _call(self, script, what: str) -> bool:
        sent = self.clock()
        try:
            ok = bool(await script(keys=[self.key], args=[self.holder_id, max(1, math.ceil(self.ttl_s * 1000))]))
        except (RedisError, OSError, TimeoutError) as exc:
            log.debug("lease %s: %s failed: %s", self.key, what, exc)
            ok = False
        self._valid_until = sent + self.ttl_s if ok else 0.0
        return ok


class FileLease:
    """One holder per machine without Redis: a non-blocking `flock` that the kernel drops when the holder dies."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    async def acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for whoever looks
        self._fd = fd
        return True

    async def renew(self) -> bool:
        return self.held  # a lock held by a live process does not expire

    async def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
