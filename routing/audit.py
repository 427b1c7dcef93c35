"""The audit log: one structured line per change to a model's routes, who made it, from what to what, and when.

Admin calls (loads, unloads, weights, resets, experiments, canaries, shadows) record the caller's token
subject and tenant; what the service does by itself (canary advances, promotions and rollbacks, the
start-up merge of serving.yaml) records "system". Kept beside the routing state: a capped Redis stream
under the routing prefix, or without Redis a capped JSON-lines file next to the state file. Also logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import RedisError

from observability.actor import current_actor
from observability.logs import event
from routing.document import ModelRoutes

log = logging.getLogger(__name__)


class AuditEntry(BaseModel):
    at: float
    """Seconds since the epoch."""
    time: str
    """The same instant, ISO 8601 in UTC."""
    who: str
    """The token's subject, or "system"."""
    tenant: str
    action: str
    """load, unload, weights, reset, experiment_start, canary_abort, canary_promote, serving_yaml, ..."""
    model: str | None = None
    changes: dict[str, dict[str, Any]] = {}
    """field -> {"from": ..., "to": ...}: only the fields that changed."""
    detail: str | None = None


class AuditLog(Protocol):
    async def append(self, entry: AuditEntry) -> None: ...
    async def read(self, limit: int, model: str | None = None) -> list[AuditEntry]: ...


def summary(routes: ModelRoutes | None) -> dict[str, Any]:
    """The fields of a route document an audit line compares (a canary by its state, not its decision history)."""
    if routes is None:
        return {}
    c = routes.canary
    return {
        "loaded": routes.loaded,
        "weights": routes.weights,
        "experiment": routes.experiment.model_dump(mode="json", exclude={"started_at"}) if routes.experiment else None,
        "shadow": routes.shadow.model_dump(mode="json") if routes.shadow else None,
        "canary": {"version": c.version, "stable": c.stable, "status": c.status, "step": c.step} if c else None,
        "origin": routes.origin,
    }


def changes(before: ModelRoutes | None, after: ModelRoutes | None) -> dict[str, dict[str, Any]]:
    old, new = summary(before), summary(after)
    return {k: {"from": old.get(k), "to": new.get(k)} for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


async def record(audit: AuditLog | None, action: str, model: str | None, before: ModelRoutes | None,
                 after: ModelRoutes | None, detail: str | None = None) -> None:
    """One line for a change that has been made: the change stands even if the line cannot be written (logged)."""
    who = current_actor()
    now = time.time()
    entry = AuditEntry(at=now, time=datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"), who=who.subject,
                       tenant=who.tenant, action=action, model=model, changes=changes(before, after), detail=detail)
    event(log, "audit", **entry.model_dump(exclude={"at", "time"}, exclude_none=True))
    if audit is None:
        return
    try:
        await audit.append(entry)
    except (RedisError, OSError, TimeoutError) as exc:
        log.error("audit log: could not keep %s by %s on %s (%s: %s)", action, who.subject, model, type(exc).__name__, exc)


class RedisAuditLog:
    """A stream capped at `max_entries` (XADD MAXLEN): newest last, read back newest first."""

    def __init__(self, redis: Redis, prefix: str, max_entries: int) -> None:
        self.redis = redis
        self.key = f"{prefix}audit"
        self.max_entries = max_entries

    async def append(self, entry: AuditEntry) -> None:
        await self.redis.xadd(self.key, {"entry": entry.model_dump_json()}, maxlen=self.max_entries, approximate=False)

    async def read(self, limit: int, model: str | None = None) -> list[AuditEntry]:
        out: list[AuditEntry] = []
        last = "+"
        while len(out) < limit:
            batch = await self.redis.xrevrange(self.key, max=last, count=max(limit, 100))
            if last != "+":
                batch = batch[1:]  # the range includes the id it starts from
            if not batch:
                break
            for _, fields in batch:
                entry = AuditEntry.model_validate_json(fields[b"entry"] if b"entry" in fields else fields["entry"])
                if model is None or entry.model == model:
                    out.append(entry)
            last = batch[-1][0]
        return out[:limit]


class FileAuditLog:
    """JSON lines appended under a lock; cut back to the newest `max_entries` once it holds twice that."""

    def __init__(self, path: str | os.PathLike[str], max_entries: int) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.max_entries = max_entries

    async def append(self, entry: AuditEntry) -> None:
        await asyncio.to_thread(self._append, entry.model_dump_json().encode() + b"\n")

    async def read(self, limit: int, model: str | None = None) -> list[AuditEntry]:
        lines = await asyncio.to_thread(self._lines)
        entries = (AuditEntry.model_validate_json(line) for line in reversed(lines) if line.strip())
        return [e for e in entries if model is None or e.model == model][:limit]

    def _lines(self) -> list[bytes]:
        try:
            return self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return []

    def _append(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with open(self.path, "ab") as f:
                f.write(line)
                size = f.tell()
            if size > 2 * self.max_entries * len(line):  # cheap test first; count lines only when it may be over
                lines = self._lines()
                if len(lines) > 2 * self.max_entries:
                    tmp = self.path.with_name(self.path.name + ".tmp")
                    tmp.write_bytes(b"\n".join(lines[-self.max_entries:]) + b"\n")
                    os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)

