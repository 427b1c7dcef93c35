"""Backup and restore in-process, on the embedded state file and on Redis: back up, wipe the routes and the
model store, restore, and the same routes give the same answers."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from pathlib import Path

import pytest
import pytest_asyncio
import yaml
from redis.asyncio import Redis

from models import store
from tests.helpers import REDIS_URL
from tests.inprocess import serve_in_process
from tests.pickled import demo_estimator, pickled, save_pickled

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.cache_independent]
"""Answers after a restore come from a new server, whose cache starts empty either way."""
ROWS = [[float((r * 7 + i) % 17) for i in range(64)] for r in range(4)]


@pytest.fixture(scope="module")
def versions(model_store) -> list[str]:
    """keep:v1 and keep:v2, copies of digits-sklearn's two versions: a model loaded at runtime, only the saved state keeps it."""
    tags = []
    for source, tag in (("digits-sklearn:v1", "keep:v1"), ("digits-sklearn:v2", "keep:v2")):
        save_pickled(tag, pickled(demo_estimator(source)))
        tags.append(tag)
    return tags


@pytest_asyncio.fixture(loop_scope="module", params=["file", "redis"])
async def place(request, tmp_path):
    """Where the routing state lives: (state folder, Redis prefix or None); wiped afterwards."""
    prefix = f"rtserve-test-backup-{uuid.uuid4().hex[:8]}:" if request.param == "redis" else None
    yield tmp_path, prefix
    if prefix is not None:
        r = Redis.from_url(REDIS_URL)
        keys = [k async for k in r.scan_iter(match=prefix + "*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()


def serving(place):
    folder, prefix = place
    return serve_in_process(folder, {"digits-sklearn": {"versions": ["v1", "v2"]}}, routing=True, redis_prefix=prefix)


async def until(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.05)


async def answers(served, model: str, version: str) -> list:
    out = []
    for row in ROWS:
        body = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": row}]}
        r = await served.client.post(f"/v2/models/{model}/versions/{version}/infer", json=body, headers=served.headers())
        assert r.status_code == 200, r.text
        out.append(r.json()["outputs"])
    return out


def comparable(doc: dict) -> dict:
    return {name: {k: v for k, v in r.items() if k != "revision"} for name, r in doc.items()}


async def test_back_up_wipe_restore_gives_the_same_routes_and_answers(place, versions):
    async with serving(place) as served:
        admin = served.headers("admin")
        c = served.client
        for version in ("v1", "v2"):
            r = await c.post(f"/admin/models/keep/versions/{version}/load", headers=admin)
            assert r.status_code == 200, r.text
        assert (await c.put("/admin/models/keep/weights", json={"weights": {"v1": 70, "v2": 30}}, headers=admin)).status_code == 200
        assert (await c.put("/admin/models/keep/shadow", json={"version": "v2", "fraction": 0.2}, headers=admin)).status_code == 200
        r = await c.post("/admin/models/digits-sklearn/experiment", json={"variants": {"v1": 50, "v2": 50}, "name": "ab"},
                         headers=admin)
        assert r.status_code == 201, r.text
        before = {v: await answers(served, "keep", v) for v in ("v1", "v2")}
        saved = {name: r.model_dump(mode="json") for name, r in (await served.runtime.parts.admin.store.get_all()).items()}
        r = await c.get("/admin/backup", headers=admin)
        assert r.status_code == 200, r.text
        backup = r.content
        doc = r.json()
        assert sorted(doc["versions"]) == ["digits-sklearn:v1", "digits-sklearn:v2", "keep:v1", "keep:v2"]
        assert all(v["archive"] and v["sha256"] for v in doc["versions"].values())
        assert (await c.get("/admin/backup", headers=served.headers("predict"))).status_code == 403

    # The disaster: the routing state (file or Redis keys) and the runtime model's stored versions are gone.
    folder, prefix = place
    if prefix is None:
        for path in folder.glob("routes.json*"):
            path.unlink()
    else:
        r = Redis.from_url(REDIS_URL)
        await r.delete(*[k async for k in r.scan_iter(match=prefix + "*")])
        await r.aclose()
    for tag in versions:
        store.delete(tag)

    async with serving(place) as served:
        admin = served.headers("admin")
        c = served.client
        assert "keep" not in served.runtime.router.all_routes()
        started = time.perf_counter()
        r = await c.post("/admin/restore", content=backup, headers=admin)
        assert r.status_code == 200, r.text
        assert r.json() == {"models": ["digits-sklearn", "keep"], "imported": ["keep:v1", "keep:v2"],
                            "present": ["digits-sklearn:v1", "digits-sklearn:v2"]}

        async def ready() -> bool:
            held = served.runtime.registry.versions("keep") if "keep" in served.runtime.registry.names() else {}
            return sorted(v for v, e in held.items() if e.state.value == "ready") == ["v1", "v2"]

        await until(ready)
        print(f"\nrestore of 2 stored versions and {len(saved)} route documents: {time.perf_counter() - started:.2f} s to serving")
        assert {v: await answers(served, "keep", v) for v in ("v1", "v2")} == before
        restored = {name: r.model_dump(mode="json") for name, r in (await served.runtime.parts.admin.store.get_all()).items()}
        assert comparable(restored) == comparable(saved)
        assert served.runtime.router.routes("keep").weights == {"v1": 70.0, "v2": 30.0}
        actions = [e["action"] for e in (await c.get("/admin/audit?limit=10", headers=admin)).json()]
        assert actions[:3] == ["restore"] * 3  # one per model, then one for the whole

        # A damaged or foreign backup is refused with 422, and changes nothing.
        damaged = {**doc, "routes": {}, "versions": {"keep:v9": {"archive": base64.b64encode(b"bits").decode(), "sha256": "0" * 64}}}
        r = await c.post("/admin/restore", json=damaged, headers=admin)
        assert r.status_code == 422 and "sha256" in r.json()["error"], r.text
        assert not store.exists("keep:v9")
        for body in ({"format": 2}, [], {"routes": {}, "versions": {}}):
            r = await c.post("/admin/restore", json=body, headers=admin)
            assert r.status_code == 422 and "not an rtserve backup" in r.json()["error"], r.text


async def test_the_demo_store_recovers_from_its_backup(tmp_path):
    """The disaster recovery the README times: every demo version and route lost, restored from the backup, the
    server restarted so that the versions serving.yaml lists load from the restored files."""
    demo = yaml.safe_load((Path(__file__).parents[2] / "serving.yaml").read_text())["models"]
    state = tmp_path / "state"
    state.mkdir()
    async with serve_in_process(state, demo, routing=True) as served:
        r = await served.client.get("/admin/backup", headers=served.headers("admin"))
        assert r.status_code == 200, r.text
    backup = r.content
    tags = sorted(r.json()["versions"])
    for tag in tags:
        store.delete(tag)
    for path in state.glob("routes.json*"):
        path.unlink()
    async with serve_in_process(state, demo, routing=True) as served:
        assert not served.runtime.ready  # nothing to load
        started = time.perf_counter()
        r = await served.client.post("/admin/restore", content=backup, headers=served.headers("admin"))
        assert r.status_code == 200 and r.json()["imported"] == tags, r.text
        restored_s = time.perf_counter() - started
    started = time.perf_counter()
    async with serve_in_process(state, demo, routing=True) as served:
        assert served.runtime.readiness() == (True, {})
        restarted_s = time.perf_counter() - started
    print(f"\ndemo store: backup {len(backup) / 1e6:.2f} MB, {len(tags)} versions; restore into an empty store {restored_s:.2f} s, "
          f"restart to ready {restarted_s:.2f} s")
