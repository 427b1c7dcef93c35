"""The audit log on both stores: a Redis stream and a JSON-lines file, each capped, read back newest first."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis

from observability.actor import acting_as
from routing.audit import FileAuditLog, RedisAuditLog, record
from tests.helpers import REDIS_URL
from tests.routing.support import routes


@pytest.fixture(params=["redis", "file"])
async def audit(request, tmp_path: Path):
    if request.param == "file":
        yield FileAuditLog(tmp_path / "routes.audit.jsonl", max_entries=5)
        return
    redis = Redis.from_url(REDIS_URL)
    prefix = f"rtserve-test:{uuid.uuid4().hex}:"
    try:
        yield RedisAuditLog(redis, prefix, max_entries=5)
    finally:
        await redis.delete(f"{prefix}audit")
        await redis.aclose()


async def test_a_change_is_one_line_with_who_what_from_what_to_what(audit) -> None:
    acting_as("alice", "acme")
    await record(audit, "weights", "m", routes({"v1": 100.0}), routes({"v1": 90.0, "v2": 10.0}))
    [entry] = await audit.read(10)
    assert (entry.who, entry.tenant, entry.action, entry.model) == ("alice", "acme", "weights", "m")
    assert entry.changes == {"weights": {"from": {"v1": 100.0}, "to": {"v1": 90.0, "v2": 10.0}}}
    assert entry.time.endswith("+00:00") and entry.at > 0


async def test_reads_are_newest_first_filtered_by_model_and_the_log_is_capped(audit) -> None:
    for i in range(40):
        await record(audit, "load", "even" if i % 2 == 0 else "odd", None, routes({"v1": 100.0}), detail=str(i))
    newest = await audit.read(3)
    assert [e.detail for e in newest] == ["39", "38", "37"]
    assert [e.detail for e in await audit.read(2, model="even")] == ["38", "36"]
    assert 5 <= len(await audit.read(1000)) <= 10  # capped: Redis at 5, the file cut back to 5 once it holds 10
