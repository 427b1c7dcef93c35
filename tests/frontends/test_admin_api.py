"""The admin API in-process: route changes through the real routing admin, state file and route sync."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from tests.inprocess import serve_in_process

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.cache_independent]
"""Route changes and their scope: the routing state, not answers."""


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(model_store, tmp_path_factory):
    async with serve_in_process(tmp_path_factory.mktemp("admin"), routing=True) as s:
        yield s


async def until(check, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "not reached in time"
        await asyncio.sleep(0.05)


async def test_weights_reach_the_router(served):
    admin = served.headers("admin")
    r = await served.client.put("/admin/models/digits-sklearn/weights", json={"weights": {"v1": 0, "v2": 100}}, headers=admin)
    assert r.status_code == 200 and r.json()["weights"] == {"v1": 0.0, "v2": 100.0}

    async def routed_to_v2() -> bool:
        return served.runtime.router.route("digits-sklearn")[0] == "v2"

    await until(routed_to_v2)
    r = await served.client.put("/admin/models/digits-sklearn/weights", json={"weights": {"v9": 100}}, headers=admin)
    assert r.status_code == 409
    assert (await served.client.put("/admin/models/digits-sklearn/weights", json={"weights": {"v1": 100}}, headers=admin)).status_code == 200


async def test_a_canary_starts_shows_its_outcomes_and_aborts(served):
    admin = served.headers("admin")
    r = await served.client.post("/admin/models/digits-sklearn/canary", json={"version": "v2", "steps": [10, 100], "hold_s": 600},
                                 headers=admin)
    assert r.status_code == 201 and r.json()["weights"] == {"v1": 90.0, "v2": 10.0}
    status = (await served.client.get("/admin/models/digits-sklearn/canary", headers=admin)).json()
    assert status["status"] == "running" and status["decisions"][0]["action"] == "start" and "outcomes" in status
    r = await served.client.post("/admin/models/digits-sklearn/canary", json={"version": "v2"}, headers=admin)
    assert r.status_code == 409  # one at a time
    r = await served.client.delete("/admin/models/digits-sklearn/canary", headers=admin)
    assert r.status_code == 200 and r.json()["weights"] == {"v1": 100.0}


async def test_an_experiment_is_sticky_per_user(served):
    admin = served.headers("admin")
    body = {"variants": {"v1": 50, "v2": 50}, "control": "v1"}
    assert (await served.client.post("/admin/models/digits-sklearn/experiment", json=body, headers=admin)).status_code == 201

    async def applied() -> bool:
        return served.runtime.router.routes("digits-sklearn").experiment is not None

    await until(applied)
    seen = {user: {served.runtime.router.route("digits-sklearn", user)[0] for _ in range(5)} for user in ("ann", "bob", "cy", "di")}
    assert all(len(versions) == 1 for versions in seen.values())
    assert (await served.client.delete("/admin/models/digits-sklearn/experiment", headers=admin)).status_code == 200


async def test_admin_needs_the_admin_scope(served):
    r = await served.client.get("/admin/models", headers=served.headers("predict"))
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert (await served.client.get("/admin/models")).status_code == 401
