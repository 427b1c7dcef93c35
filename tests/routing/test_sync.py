"""Route sync in-process: a file store, a real registry over the session's model store, and a real cache told of unloads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from gateway.cache import CacheSettings, PredictionCache, cache_key, version_token
from routing.document import Configured, ModelRoutes
from routing.router import Router
from routing.stores import FileStateStore
from routing.sync import RouteSync
from runners.registry import ModelRegistry, VersionState
from runners.settings import ServingConfig
from tests.routing.support import eventually, routes

MODEL = "digits-sklearn"


@dataclass
class Rig:
    store: FileStateStore
    registry: ModelRegistry
    router: Router
    cache: PredictionCache
    sync: RouteSync

    def state(self, version: str) -> VersionState | None:
        entry = self.registry.versions(MODEL).get(version)
        return None if entry is None else entry.state

    async def change(self, **fields) -> ModelRoutes:
        """What an admin change on another worker does: a write to the shared store."""
        return await self.store.update(MODEL, lambda r: r.model_copy(update=fields))


@pytest.fixture
async def rig(model_store, tmp_path: Path) -> AsyncIterator[Rig]:
    """A worker configured with v1 only, loaded; v2 is in the model store but not in serving.yaml."""
    registry = ModelRegistry(ServingConfig.model_validate({"models": {MODEL: {"versions": ["v1"]}}}))
    await asyncio.to_thread(registry.load_configured)
    store = FileStateStore(tmp_path / "routes.json")
    router = Router({})
    cache = PredictionCache(CacheSettings())
    sync = RouteSync(store, router, registry, interval_s=0.05, on_unloaded=cache.drop_model_version)
    await sync.start({MODEL: routes({"v1": 100.0}, loaded=["v1"])})
    try:
        yield Rig(store, registry, router, cache, sync)
    finally:
        await sync.stop()
        for version in list(registry.versions(MODEL)):
            if registry.versions(MODEL)[version].state is not VersionState.LOADING:
                await registry.unload(MODEL, version)


async def test_start_seeds_the_store_and_applies_it(rig: Rig) -> None:
    assert (await rig.store.get(MODEL)).weights == {"v1": 100.0}
    assert rig.router.route(MODEL) == ("v1", "stable")
    assert rig.sync.watcher is not None and rig.sync.watcher.running


async def test_weights_an_admin_changed_win_over_unchanged_defaults(model_store, tmp_path: Path) -> None:
    store = FileStateStore(tmp_path / "routes.json")
    configured = Configured(versions=["v1"], weights={"v1": 100.0})  # what serving.yaml said when it was saved
    await store.put(MODEL, routes({"v1": 7.0}, loaded=["v1"], configured=configured))  # an admin's change since
    registry = ModelRegistry(ServingConfig.model_validate({"models": {MODEL: {"versions": ["v1"]}}}))
    router = Router({})
    sync = RouteSync(store, router, registry, interval_s=0.05)
    await sync.start({MODEL: routes({"v1": 100.0}, loaded=["v1"])})
    try:
        assert router.routes(MODEL).weights == {"v1": 7.0}
        assert (await store.get(MODEL)).revision == 1  # nothing written over it
    finally:
        await sync.stop()


async def test_an_added_version_is_loaded_a_weight_change_applied_and_a_removed_one_drained(rig: Rig) -> None:
    await rig.change(loaded=["v1", "v2"], weights={"v1": 100.0, "v2": 0.0})
    await eventually(lambda: rig.state("v2") is VersionState.READY, 60.0, "v2 loaded in the background")
    assert rig.router.routes(MODEL).loaded == ["v1", "v2"]

    await rig.change(weights={"v1": 10.0, "v2": 90.0})
    await eventually(lambda: rig.router.routes(MODEL).weights == {"v1": 10.0, "v2": 90.0}, 2.0, "new weights")

    old = rig.registry.get(MODEL, "v1")
    key = cache_key(MODEL, version_token("v1", old.generation), np.zeros((1, 64), np.float32))
    await rig.cache.put(key, {"label": np.array([0])})
    old.active = 1  # a request still being answered by v1
    await rig.change(loaded=["v2"], weights={"v2": 100.0})
    await eventually(lambda: rig.state("v1") is VersionState.DRAINING, 2.0, "v1 draining")
    assert rig.router.route(MODEL) == ("v2", "stable") and len(rig.cache) == 1
    old.active = 0  # answered: now it can go
    await eventually(lambda: rig.state("v1") is None, 2.0, "v1 unloaded")
    assert len(rig.cache) == 0  # its cached answers went with it


async def test_models_this_worker_does_not_serve_are_ignored(rig: Rig) -> None:
    await rig.store.put("not-here", routes())
    await eventually(lambda: rig.sync.watcher.revision == 2, 2.0, "the new revision seen")
    assert "not-here" not in rig.router.all_routes()
