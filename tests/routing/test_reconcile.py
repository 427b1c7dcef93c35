"""serving.yaml against the saved routing state, field by field, through a real state file."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis

from routing.document import Configured, Experiment, ModelRoutes, Shadow
from routing.reconcile import configured_routes, merger
from routing.stores import FileStateStore, RedisStateStore
from runners.settings import ServingConfig
from tests.helpers import REDIS_URL
from tests.routing.support import canary


def config(**models) -> dict[str, ModelRoutes]:
    return configured_routes(ServingConfig.model_validate({"models": models}))


def saved(loaded, weights, was: tuple[list[str], dict[str, float]] | None, **extra) -> ModelRoutes:
    """A saved document; `was`: serving.yaml's versions and weights when it was written (None: before that was kept)."""
    configured = Configured(versions=was[0], weights=was[1]) if was is not None else None
    return ModelRoutes(loaded=loaded, weights=weights, configured=configured, **extra)


async def merged(tmp_path: Path, before: dict[str, ModelRoutes], now: dict[str, ModelRoutes]) -> tuple[dict[str, ModelRoutes], list[str]]:
    store = FileStateStore(tmp_path / "routes.json")
    for name, doc in before.items():
        await store.put(name, doc)
    notes: list[str] = []
    await store.merge(merger(now, notes))
    return await store.get_all(), notes


async def test_a_version_serving_yaml_dropped_is_unloaded_and_its_weights_give_way(tmp_path: Path) -> None:
    """The reported case: `[ts]` (failed, all traffic) became `[v1]`; the saved state must not keep ts."""
    before = {"m": saved(["ts"], {"ts": 100.0}, None)}  # written before the state recorded serving.yaml
    docs, notes = await merged(tmp_path, before, config(m={"versions": ["v1"]}))
    assert (docs["m"].loaded, docs["m"].weights) == (["v1"], {"v1": 100.0})
    assert any("no longer lists ['ts']: unloaded" in n for n in notes), notes
    assert any("replace the saved {'ts': 100.0}" in n for n in notes), notes


async def test_an_admins_weights_and_runtime_versions_survive_an_unchanged_serving_yaml(tmp_path: Path) -> None:
    was = (["v1", "v2"], {"v1": 100.0})
    before = {"m": saved(["v1", "v2", "v3"], {"v1": 50.0, "v3": 50.0}, was, shadow=Shadow(version="v2", fraction=0.1))}
    docs, notes = await merged(tmp_path, before, config(m={"versions": ["v1", "v2"], "weights": {"v1": 100}}))
    assert docs["m"].loaded == ["v1", "v2", "v3"] and docs["m"].weights == {"v1": 50.0, "v3": 50.0}
    assert docs["m"].shadow is not None and notes == []
    assert docs["m"].revision == 1  # nothing written: a second worker's start finds the state merged


async def test_weights_serving_yaml_changed_win_and_end_the_canary_built_on_the_old_ones(tmp_path: Path) -> None:
    was = (["v1", "v2"], {"v1": 100.0})
    before = {"m": saved(["v1", "v2"], {"v1": 95.0, "v2": 5.0}, was, canary=canary())}
    docs, notes = await merged(tmp_path, before, config(m={"versions": ["v1", "v2"], "weights": {"v2": 100}}))
    assert docs["m"].weights == {"v2": 100.0}
    assert docs["m"].canary.status == "aborted" and docs["m"].canary.decisions[-1].action == "abort"
    assert len(notes) == 2, notes


async def test_an_experiment_on_a_dropped_version_stops_and_a_new_version_loads(tmp_path: Path) -> None:
    was = (["v1", "v2"], {"v1": 100.0})
    experiment = Experiment(name="e", variants={"v1": 50, "v2": 50}, control="v1", salt="s", started_at=1.0)
    before = {"m": saved(["v1", "v2"], {"v1": 100.0}, was, experiment=experiment)}
    docs, notes = await merged(tmp_path, before, config(m={"versions": ["v1", "v4"], "weights": {"v1": 100}}))
    assert docs["m"].loaded == ["v1", "v4"] and docs["m"].experiment is None
    assert any("lists ['v4']" in n for n in notes) and any("experiment e" in n for n in notes), notes


@pytest.mark.parametrize("kind", ["redis", "file"])
async def test_both_stores_merge_all_documents_and_remove_one_on_condition(kind: str, tmp_path: Path) -> None:
    redis = Redis.from_url(REDIS_URL)
    prefix = f"rtserve-test:{uuid.uuid4().hex}:"
    store = RedisStateStore(redis, prefix) if kind == "redis" else FileStateStore(tmp_path / "routes.json")
    try:
        await store.put("other", ModelRoutes(loaded=["v1"], weights={"v1": 100.0}, origin="runtime"))
        await store.put("m", saved(["ts"], {"ts": 100.0}, None))
        notes: list[str] = []
        written = await store.merge(merger(config(m={"versions": ["v1"]}), notes))
        assert list(written) == ["m"] and (await store.get("m")).loaded == ["v1"] and len(notes) == 3
        assert not await store.remove("other", lambda r: r is not None and r.origin == "configuration")
        assert await store.remove("other", lambda r: r is not None and r.origin == "runtime")
        revision, docs = await store.snapshot()
        assert list(docs) == ["m"] and revision == 4
    finally:
        await redis.delete(f"{prefix}docs", f"{prefix}revision")
        await redis.aclose()


async def test_runtime_models_keep_their_state_and_a_dropped_configured_model_is_noted_once(tmp_path: Path) -> None:
    before = {
        "runtime-model": ModelRoutes(loaded=["v1"], weights={"v1": 100.0}, origin="runtime"),
        "gone": saved(["v1"], {"v1": 100.0}, (["v1"], {"v1": 100.0})),
    }
    docs, notes = await merged(tmp_path, before, config(m={"versions": ["v1"]}))
    assert docs["runtime-model"].revision == 1 and docs["m"].configured.versions == ["v1"]
    assert notes == ["gone: serving.yaml no longer lists it: not served (its saved routes are kept)"]
    notes_again: list[str] = []
    store = FileStateStore(tmp_path / "routes.json")
    await store.merge(merger(config(m={"versions": ["v1"]}), notes_again))
    assert notes_again == []


async def test_a_runtime_model_serving_yaml_starts_listing_becomes_configured_and_keeps_its_versions(tmp_path: Path) -> None:
    before = {"m": ModelRoutes(loaded=["v7"], weights={"v7": 100.0}, origin="runtime")}
    docs, notes = await merged(tmp_path, before, config(m={"versions": ["v1"]}))
    assert docs["m"].origin == "configuration" and docs["m"].loaded == ["v1", "v7"]
    assert docs["m"].weights == {"v1": 100.0}  # serving.yaml's weights are new to this model
    assert any("now listed in serving.yaml" in n for n in notes), notes
