"""Shared routing state: documents, the Redis and file stores, the watcher, and the canary lease."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
import redis as redis_lib
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from routing.document import Experiment, ModelRoutes, Shadow
from routing.lease import FileLease, RedisLease
from routing.stores import FileStateStore, RedisStateStore
from routing.watcher import StateWatcher
from tests.helpers import REDIS_URL, FakeClock
from tests.routing.support import canary, eventually, routes

SPAWN = multiprocessing.get_context("spawn")


def bump(current: ModelRoutes | None) -> ModelRoutes:
    """One increment of v1's weight: what a lost write would show up in."""
    assert current is not None
    return current.model_copy(update={"weights": {**current.weights, "v1": current.weights["v1"] + 1}})


def client(url: str = REDIS_URL) -> Redis:
    return Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=2.0, retry=Retry(NoBackoff(), 0))


@pytest.fixture
def prefix() -> Iterator[str]:
    prefix = f"rtserve-test:{uuid.uuid4().hex}:"
    yield prefix
    sync = redis_lib.Redis.from_url(REDIS_URL)
    keys = list(sync.scan_iter(match=f"{prefix}*"))
    if keys:
        sync.delete(*keys)
    sync.close()


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    r = client()
    yield r
    await r.aclose()


class Applied:
    """An on_change that records what each call delivered."""

    def __init__(self) -> None:
        self.calls: list[dict[str, ModelRoutes]] = []

    def __call__(self, docs: dict[str, ModelRoutes]) -> None:
        self.calls.append(docs)

    def weight(self, model: str, version: str = "v1") -> float | None:
        doc = self.calls[-1].get(model) if self.calls else None
        return None if doc is None else doc.weights.get(version)


# -- documents


def test_a_full_document_round_trips_through_json() -> None:
    doc = routes(
        {"v1": 90.0, "v2": 10.0},
        loaded=["v1", "v2", "v3"],
        experiment=Experiment(name="ab", variants={"v1": 0.5, "v3": 0.5}, control="v1", salt="s", started_at=1.0),
        shadow=Shadow(version="v3", fraction=0.1),
        canary=canary(),
    )
    assert ModelRoutes.model_validate_json(doc.model_dump_json()) == doc


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: routes({"v1": -1.0, "v2": 2.0}), "negative"),
        (lambda: routes({"v1": 0.0}), "positive"),
        (lambda: routes({"v3": 1.0}), "weight 'v3'"),
        (lambda: routes(loaded=["v1", "v1"]), "repeat"),
        (lambda: routes(shadow=Shadow(version="v9", fraction=0.5)), "shadow 'v9'"),
        (lambda: Shadow(version="v2", fraction=0.0), "greater than 0"),
        (lambda: Shadow(version="v2", fraction=1.5), "less than or equal to 1"),
        (lambda: routes(canary=canary(version="v9")), "canary 'v9'"),
        (lambda: routes(canary=canary(stable="v9")), "canary stable 'v9'"),
        (lambda: canary(stable="v2"), "same version"),
        (lambda: canary(steps=[50, 25]), "increase"),
        (lambda: canary(steps=[0.0, 100]), "(0, 100]"),
        (lambda: canary(step=3), "past the last"),
        (lambda: routes(experiment=Experiment(name="x", variants={"v1": 1, "v9": 1}, control="v1", salt="", started_at=0)), "v9"),
        (lambda: Experiment(name="x", variants={"v1": 1}, control="v2", salt="", started_at=0), "control"),
        (lambda: Experiment(name="x", variants={"v1": 0}, control="v1", salt="", started_at=0), "positive"),
        (lambda: routes({"v1": float("nan")}), "finite"),
    ],
)
def test_invalid_documents_are_refused(build, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build()


async def test_a_document_broken_after_validation_is_not_written(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path / "routes.json")
    doc = routes()
    doc.weights["v9"] = 1.0  # edits in place bypass validation; the store checks again
    with pytest.raises(ValidationError, match="v9"):
        await store.put("m", doc)
    assert await store.revision() == 0 and await store.get("m") is None


# -- Redis store


async def test_redis_store_put_get_update_and_revision(redis: Redis, prefix: str) -> None:
    store = RedisStateStore(redis, prefix)
    assert await store.revision() == 0
    assert await store.get("m") is None
    assert await store.put("m", routes()) == 1
    assert await store.put("n", routes({"v2": 1.0})) == 2
    got = await store.get("m")
    assert got == routes(revision=1)
    updated = await store.update("m", lambda cur: cur.model_copy(update={"weights": {"v1": 50.0, "v2": 50.0}}))
    assert updated.revision == 3 and updated.weights == {"v1": 50.0, "v2": 50.0}
    assert await store.revision() == 3
    assert {m: d.revision for m, d in (await store.get_all()).items()} == {"m": 3, "n": 2}
    seen: list[ModelRoutes | None] = []
    created = await store.update("new", lambda cur: seen.append(cur) or routes())
    assert seen == [None] and created.revision == 4
    # the document and the counter are one write: what the hash holds carries the counter's value
    raw = await redis.hget(f"{prefix}docs", "new")
    assert ModelRoutes.model_validate_json(raw).revision == int(await redis.get(f"{prefix}revision")) == 4


async def test_concurrent_redis_updates_lose_no_write(prefix: str) -> None:
    a, b = client(), client()
    try:
        store_a, store_b = RedisStateStore(a, prefix), RedisStateStore(b, prefix)
        await store_a.put("m", routes({"v1": 0.5}))
        calls = 0

        def counted(cur: ModelRoutes | None) -> ModelRoutes:
            nonlocal calls
            calls += 1
            return bump(cur)

        async def fifty(store: RedisStateStore) -> None:
            for _ in range(50):
                await store.update("m", counted)

        await asyncio.gather(fifty(store_a), fifty(store_b))
        final = await store_a.get("m")
        assert final.weights["v1"] == 100.5
        assert final.revision == await store_b.revision() == 101
        assert calls > 100, "the two writers never collided, so the retry path was not exercised"
    finally:
        await a.aclose()
        await b.aclose()


async def test_initialize_seeds_only_missing_models(redis: Redis, prefix: str) -> None:
    store = RedisStateStore(redis, prefix)
    await store.put("a", routes({"v2": 100.0}))  # an admin's change, made before this worker started
    defaults = {"a": routes(), "b": routes()}
    assert await store.initialize(defaults) == ["b"]
    assert (await store.get("a")).weights == {"v2": 100.0}
    assert (await store.get("b")).weights == {"v1": 100.0}
    rev = await store.revision()
    assert await store.initialize(defaults) == []
    assert await store.revision() == rev  # nothing written, nothing announced


# -- watcher on Redis


async def test_watcher_applies_a_change_within_a_second_by_pubsub(redis: Redis, prefix: str) -> None:
    store = RedisStateStore(redis, prefix)
    await store.put("m", routes())
    applied = Applied()
    async with StateWatcher(store, applied, interval_s=30.0) as watcher:  # polling alone would take 30 s
        assert applied.weight("m") == 100.0 and watcher.revision == 1
        await wait_subscribed(redis, store.channel)
        await store.put("m", routes({"v1": 7.0}))
        took = await eventually(lambda: applied.weight("m") == 7.0, 1.0, "pub/sub update")
        assert took < 1.0 and watcher.revision == 2


async def wait_subscribed(redis: Redis, channel: str) -> None:
    deadline = time.monotonic() + 2
    while dict(await redis.pubsub_numsub(channel)).get(channel.encode(), 0) < 1:
        assert time.monotonic() < deadline, "the watcher never subscribed"
        await asyncio.sleep(0.01)


async def test_watcher_catches_up_by_polling_when_no_message_arrives(redis: Redis, prefix: str) -> None:
    store = RedisStateStore(redis, prefix)
    await store.put("m", routes())
    applied = Applied()
    async with StateWatcher(store, applied, interval_s=0.2):
        await wait_subscribed(redis, store.channel)
        # a write that announces nothing, as if this worker's pub/sub message had been lost
        doc = routes({"v1": 3.0}, revision=2)
        await redis.transaction(lambda pipe: pipe.hset(f"{prefix}docs", "m", doc.model_dump_json()).incr(f"{prefix}revision"))
        await eventually(lambda: applied.weight("m") == 3.0, 1.0, "polled update")


async def test_watcher_keeps_the_last_good_state_over_an_invalid_document(redis: Redis, prefix: str, caplog) -> None:
    store = RedisStateStore(redis, prefix)
    await store.put("m", routes())
    applied = Applied()
    async with StateWatcher(store, applied, interval_s=0.05) as watcher:
        await redis.transaction(lambda pipe: pipe.hset(f"{prefix}docs", "m", '{"loaded": []}').incr(f"{prefix}revision"))
        await eventually(lambda: watcher.health.report()["route_watcher"] != "ok", 1.0, "the invalid document reported")
        assert [await watcher.refresh() for _ in range(3)] == [False] * 3  # polled again and again: still refused
        assert len(applied.calls) == 1 and watcher.routes["m"].weights == {"v1": 100.0}
        assert sum("invalid document" in r.message for r in caplog.records) == 1
        await store.put("m", routes({"v1": 5.0}))
        await eventually(lambda: applied.weight("m") == 5.0, 1.0, "repaired document")


async def test_watcher_survives_a_redis_outage_and_restores_what_redis_lost(own_redis, caplog) -> None:
    caplog.set_level(logging.WARNING)
    r = client(own_redis.url)
    store = RedisStateStore(r, "t:")
    await store.put("m", routes({"v1": 1.0}))
    await store.put("m", routes({"v1": 2.0}))
    applied = Applied()
    watcher = await StateWatcher(store, applied, interval_s=0.1, timeout_s=0.5).start()
    try:
        own_redis.stop()
        await eventually(lambda: watcher.health.report()["route_watcher"] != "ok", 2.0, "the outage noticed")
        assert watcher.running and watcher.routes["m"].weights == {"v1": 2.0}
        own_redis.start()  # same port, empty: Redis lost every document
        await eventually(lambda: watcher.revision == 1, 2.0, "restored state")
        assert (await store.get("m")).weights == {"v1": 2.0}
        await store.put("m", routes({"v1": 9.0}))
        await eventually(lambda: applied.weight("m") == 9.0, 1.0, "update after the outage")
    finally:
        await watcher.stop()
        await r.aclose()
    messages = [rec.message for rec in caplog.records]
    assert sum("Redis unavailable" in m for m in messages) == 1, messages
    assert sum("Redis answers again" in m for m in messages) == 1, messages
    assert sum("restored this worker's last known copy" in m for m in messages) == 1, messages


# -- file store


async def test_file_store_basics_and_a_restart_keeps_the_tables(tmp_path: Path) -> None:
    path = tmp_path / "state" / "routes.json"
    store = FileStateStore(path)
    assert await store.revision() == 0 and await store.get_all() == {}
    assert await store.put("m", routes()) == 1
    assert await store.initialize({"m": routes({"v2": 1.0}), "n": routes()}) == ["n"]
    updated = await store.update("m", bump)
    assert updated.weights == {"v1": 101.0} and updated.revision == 3
    reopened = FileStateStore(path)  # a restarted worker
    assert await reopened.revision() == 3
    assert await reopened.get_all() == {"m": updated, "n": routes(revision=2)}
    assert not list(path.parent.glob("*.tmp"))


def _fifty_file_updates(path: str, barrier, results) -> None:
    async def run() -> None:
        store = FileStateStore(path)
        barrier.wait(30)
        start = time.monotonic()
        for _ in range(50):
            await store.update("m", bump)
        results.put((start, time.monotonic()))

    asyncio.run(run())


async def test_file_updates_from_two_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    await FileStateStore(path).put("m", routes({"v1": 0.5}))
    barrier, results = SPAWN.Barrier(2), SPAWN.Queue()
    procs = [SPAWN.Process(target=_fifty_file_updates, args=(str(path), barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    spans = [await asyncio.to_thread(results.get, True, 30) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    (s1, e1), (s2, e2) = spans
    assert s1 < e2 and s2 < e1, "the two processes did not overlap"
    final = await FileStateStore(path).get("m")
    assert final.weights["v1"] == 100.5 and final.revision == 101


async def test_file_watcher_applies_a_change_within_a_second(tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    await FileStateStore(path).put("m", routes())
    applied = Applied()
    async with StateWatcher(FileStateStore(path), applied, interval_s=0.5):
        assert applied.weight("m") == 100.0
        await FileStateStore(path).put("m", routes({"v1": 4.0}))  # another worker process's write
        took = await eventually(lambda: applied.weight("m") == 4.0, 1.0, "file update")
        assert took < 1.0


async def test_a_failing_consumer_does_not_stop_the_watcher(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path / "routes.json")
    await store.put("m", routes())
    seen: list[float] = []

    async def consumer(docs: dict[str, ModelRoutes]) -> None:
        seen.append(docs["m"].weights["v1"])
        if len(seen) == 1:
            raise RuntimeError("consumer bug")

    async with StateWatcher(store, consumer, interval_s=0.05) as watcher:
        await eventually(lambda: seen == [100.0, 100.0], 1.0, "the failed revision applied again")
        assert watcher.health.report() == {"route_watcher": "ok"}
        await store.put("m", routes({"v1": 2.0}))
        await eventually(lambda: seen == [100.0, 100.0, 2.0], 1.0, "second change")
        assert watcher.running


@pytest.mark.parametrize("content", [b"[]", b'{"models": [1]}', b'{"models": {"m": 1}}', b'{"revision": "x", "models": {}}', b"null"])
async def test_a_state_file_of_the_wrong_shape_neither_kills_nor_misleads_the_watcher(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "routes.json"
    store = FileStateStore(path)
    await store.put("m", routes())
    applied = Applied()
    async with StateWatcher(FileStateStore(path), applied, interval_s=0.05) as watcher:
        path.write_bytes(content)  # someone edits the file by hand
        await eventually(lambda: watcher.health.report().get("route_watcher", "ok") != "ok", 1.0, "the problem reported")
        assert watcher.running and applied.weight("m") == 100.0  # the last good routes stay in force
        fixed = {"revision": 7, "models": {"m": routes({"v1": 3.0}).model_dump(mode="json")}}
        path.write_bytes(orjson.dumps(fixed))
        await eventually(lambda: applied.weight("m") == 3.0, 1.0, "routes followed again after the fix")
        assert watcher.health.report() == {"route_watcher": "ok"}


# -- leases


async def test_redis_lease_has_one_holder_and_passes_on_when_renewal_stops(redis: Redis, prefix: str) -> None:
    key, clock = f"{prefix}lease", FakeClock()
    a = RedisLease(redis, key, ttl_s=5.0, holder_id="a", clock=clock)
    b = RedisLease(redis, key, ttl_s=5.0, holder_id="b", clock=clock)
    assert await a.acquire() and a.held
    assert not await b.acquire() and not b.held
    await redis.pexpire(key, 100)  # as if most of the TTL had passed
    assert await a.renew() and await redis.pttl(key) > 4000  # renewed, it outlives its TTL
    assert not await b.acquire()
    clock.advance(4.9)
    assert a.held
    clock.advance(0.2)  # a stops renewing
    assert not a.held  # its own view expires with the TTL, without asking Redis
    await redis.pexpire(key, 1)  # and Redis expires the key on its own clock
    deadline = time.monotonic() + 1.0
    while not await b.acquire():
        assert time.monotonic() < deadline, "the expired lease never passed on"
        await asyncio.sleep(0.005)
    assert b.held
    assert not await a.renew() and not a.held  # the stale holder cannot take it back
    await a.release()  # nor delete its successor's
    assert await redis.get(key) == b"b" and await b.renew()
    await b.release()
    assert await redis.get(key) is None and not b.held
    assert await a.acquire()
    await a.release()


def _hold_file_lease(path: str, acquired) -> None:
    async def run() -> None:
        if await FileLease(path).acquire():
            acquired.set()
        await asyncio.sleep(60)

    asyncio.run(run())


async def test_file_lease_has_one_holder_and_frees_when_the_holder_dies(tmp_path: Path) -> None:
    path = str(tmp_path / "canary.lease")
    acquired = SPAWN.Event()
    holder = SPAWN.Process(target=_hold_file_lease, args=(path, acquired))
    holder.start()
    try:
        assert await asyncio.to_thread(acquired.wait, 30)
        mine = FileLease(path)
        assert not await mine.acquire() and not mine.held
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # no release: the kernel frees the lock
        holder.join(10)
    assert await mine.acquire() and await mine.renew()
    other = FileLease(path)
    assert not await other.acquire()  # one holder within a process too
    await mine.release()
    assert not mine.held and await other.acquire()
    await other.release()
