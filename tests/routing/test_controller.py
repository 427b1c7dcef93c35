"""The canary controller in-process: numbers it is fed, a clock it is given, decisions it writes to a file store."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from routing.controller import CanaryController
from routing.lease import FileLease
from routing.router import Router
from routing.stats import VersionWindow
from routing.stores import FileStateStore
from tests.helpers import FakeClock
from tests.routing.support import canary, eventually, routes

BOUNDS = (0.001, 0.005, float("inf"))


class Numbers:
    """A snapshot source whose cumulative per-version counts the test raises."""

    def __init__(self) -> None:
        self.windows: dict[str, VersionWindow] = {}
        self.read = 0  # snapshots taken

    def add(self, version: str, requests: int, errors: int = 0) -> None:
        """`requests` more, half under 1 ms and all under 5 ms, `errors` of them server faults."""
        w = self.windows.get(version, VersionWindow(bucket_bounds=BOUNDS, bucket_counts=(0, 0, 0)))
        a, b, c = w.bucket_counts
        counts = (a + requests // 2, b + requests, c + requests)
        self.windows[version] = dataclasses.replace(
            w, requests=w.requests + requests, errors=w.errors + errors, bucket_counts=counts,
            uncached_bounds=BOUNDS, uncached_counts=counts,  # no cache: every request ran the model
        )

    def snapshot(self, model: str) -> dict[str, VersionWindow]:
        self.read += 1
        return dict(self.windows)


@dataclasses.dataclass
class Rig:
    store: FileStateStore
    router: Router
    numbers: Numbers
    clock: FakeClock
    controller: CanaryController
    lease_path: Path


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = FakeClock()
    store = FileStateStore(tmp_path / "routes.json")
    doc = routes({"v1": 95.0, "v2": 5.0}, canary=canary(steps=[5, 25, 100], step_started_at=clock(), hold_s=30.0, min_requests=100))
    await store.put("m", doc)
    router = Router(await store.get_all())
    numbers = Numbers()
    lease_path = tmp_path / "canary.lease"
    controller = CanaryController(store, FileLease(lease_path), numbers, router, interval_s=0.01, clock=clock)
    yield Rig(store, router, numbers, clock, controller, lease_path)
    await controller.stop()


async def test_a_healthy_canary_advances_after_each_hold_and_is_promoted(rig: Rig) -> None:
    await rig.controller.check("m")  # the step's numbers start here
    rig.numbers.add("v1", 1900)
    rig.numbers.add("v2", 100)
    revision = await rig.store.revision()
    await rig.controller.check("m")
    assert await rig.store.revision() == revision  # enough requests, but the hold time has not passed

    rig.clock.advance(31)
    await rig.controller.check("m")
    doc = await rig.store.get("m")
    assert (doc.canary.step, doc.canary.step_started_at, doc.weights) == (1, rig.clock(), {"v1": 75.0, "v2": 25.0})
    assert [d.action for d in doc.canary.decisions] == ["start", "advance"]
    assert rig.router.routes("m") == doc  # applied here at once, not on the next sync

    await rig.controller.check("m")  # step 1 starts from the numbers as they are now
    rig.numbers.add("v1", 300)
    rig.numbers.add("v2", 100)
    rig.clock.advance(31)
    await rig.controller.check("m")
    doc = await rig.store.get("m")
    assert (doc.canary.step, doc.weights) == (2, {"v2": 100.0})

    await rig.controller.check("m")
    rig.numbers.add("v2", 150)  # stable has no traffic at 100 %: the last step's stable numbers stand in
    rig.clock.advance(31)
    await rig.controller.check("m")
    doc = await rig.store.get("m")
    assert (doc.canary.status, doc.weights, doc.loaded) == ("promoted", {"v2": 100.0}, ["v2"])
    assert doc.canary.decisions[-1].action == "promote" and doc.canary.decisions[-1].numbers["baseline_used"] == 1.0
    assert rig.router.route("m") == ("v2", "stable")


async def test_a_canary_slower_than_stable_is_rolled_back_at_the_end_of_its_step(rig: Rig) -> None:
    await rig.controller.check("m")
    rig.numbers.add("v1", 1900)
    wide = (0.001, 0.005, 0.05, float("inf"))
    slow = rig.numbers.windows["v2"] = VersionWindow(requests=100, bucket_bounds=wide, bucket_counts=(0, 0, 100, 100),
                                                     uncached_bounds=wide, uncached_counts=(0, 0, 100, 100))
    assert slow.uncached().p95_ms() > 5
    rig.numbers.windows["v1"] = dataclasses.replace(
        rig.numbers.windows["v1"], bucket_bounds=wide, bucket_counts=(950, 1900, 1900, 1900),
        uncached_bounds=wide, uncached_counts=(950, 1900, 1900, 1900))
    rig.clock.advance(31)
    await rig.controller.check("m")
    doc = await rig.store.get("m")
    assert (doc.canary.status, doc.weights, doc.loaded) == ("rolled_back", {"v1": 100.0}, ["v1"])
    assert "p95" in doc.canary.decisions[-1].reason


async def test_the_lease_holder_rolls_a_failing_canary_back_at_once(rig: Rig) -> None:
    rig.controller.start()
    await eventually(lambda: rig.controller.lease.held, 2.0, "the lease taken")
    assert not await FileLease(rig.lease_path).acquire()  # one controller acts at a time
    await eventually(lambda: rig.numbers.read >= 1, 2.0, "the step's start recorded")
    rig.numbers.add("v1", 400)
    rig.numbers.add("v2", 20, errors=20)  # every canary request fails: no need to wait for the hold time
    await eventually(lambda: rig.router.routes("m").canary.status == "rolled_back", 2.0, "the rollback")
    doc = await rig.store.get("m")
    assert (doc.weights, doc.loaded, doc.canary.decisions[-1].action) == ({"v1": 100.0}, ["v1"], "rollback")
    assert rig.router.route("m") == ("v1", "stable")
    await rig.controller.stop()
    assert await FileLease(rig.lease_path).acquire()  # released on stop


async def test_an_aborted_canary_is_left_alone(rig: Rig) -> None:
    await rig.controller.check("m")
    rig.numbers.add("v1", 1900)
    rig.numbers.add("v2", 100)
    await rig.store.update("m", lambda r: r.model_copy(update={"canary": r.canary.model_copy(update={"status": "aborted"})}))
    revision = await rig.store.revision()
    rig.clock.advance(31)
    await rig.controller.check("m")
    assert await rig.store.revision() == revision
