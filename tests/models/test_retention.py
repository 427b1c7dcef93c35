"""Store retention and the disk quota, in-process on the real store: served versions are never removed, the
oldest unserved ones are, and a deploy past the quota is refused with 507."""

from __future__ import annotations

import time

import bentoml
import pytest
import pytest_asyncio

from core.errors import StorageQuotaExceeded
from models import store
from models.importer import ImportOptions
from models.retention import MB, StoreSettings, check_quota, store_bytes
from tests.inprocess import serve_in_process
from tests.pickled import demo_estimator, pickled, save_pickled

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.cache_independent]
"""Which stored versions are kept: no request is answered."""
VERSIONS = ["v1", "v2", "v3", "v4", "v5"]


@pytest.fixture(scope="module")
def kept(model_store) -> None:
    """kept:v1..v5, copies of digits-sklearn:v1, saved oldest first."""
    model = pickled(demo_estimator())
    for v in VERSIONS:
        if not store.exists(f"kept:{v}"):
            save_pickled(f"kept:{v}", model)
            time.sleep(0.01)  # creation times ascend


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(kept, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("RTSERVE_STORE_KEEP_UNSERVED_VERSIONS", "1")
    mp.setenv("RTSERVE_STORE_QUOTA_MB", f"{(store_bytes() + 20_000) / MB}")  # room for 20 kB more
    try:
        async with serve_in_process(tmp_path_factory.mktemp("retention"), {"kept": {"versions": ["v1"]}}, routing=True) as s:
            yield s
    finally:
        mp.undo()


def stored() -> list[str]:
    return sorted(m.tag.version for m in bentoml.models.list("kept"))


async def test_unserved_versions_beyond_the_count_leave_the_store_and_served_ones_never_do(served):
    admin = served.headers("admin")
    c = served.client
    for v in ("v2", "v3", "v4"):
        assert (await c.post(f"/admin/models/kept/versions/{v}/load", headers=admin)).status_code == 200
    assert (await c.put("/admin/models/kept/shadow", json={"version": "v3", "fraction": 0.1}, headers=admin)).status_code == 200
    r = await c.post("/admin/models/kept/experiment", json={"variants": {"v1": 50, "v4": 50}}, headers=admin)
    assert r.status_code == 201, r.text
    assert stored() == VERSIONS  # nothing collected until a deploy or an unload of the model
    r = await c.post("/admin/models/kept/versions/v2/unload", headers=admin)
    assert r.status_code == 202, r.text
    # v1 is listed in serving.yaml, v3 is the shadow, v4 in the experiment; of the unserved v2 and v5 the newest stays.
    assert stored() == ["v1", "v3", "v4", "v5"]
    removed = [e["detail"] for e in (await c.get("/admin/audit?model=kept&limit=5", headers=admin)).json()
               if e["action"] == "remove_version"]
    assert [d.split(":", 2)[1] for d in removed] == ["v2"]
    # Even a version that only has weight 0 but is loaded stays: the routes name it.
    assert (await served.runtime.parts.admin.collect("kept")) == []


async def test_a_deploy_past_the_quota_is_refused_with_507_and_stores_nothing(served, tmp_path):
    big = tmp_path / "big.joblib"
    big.write_bytes(b"\0" * 60_000)
    with pytest.raises(StorageQuotaExceeded) as refused:
        await served.runtime.parts.deployer.deploy("kept", "v9", big, ImportOptions())
    assert refused.value.status == 507 and refused.value.code == "storage_quota_exceeded"
    assert "RTSERVE_STORE_QUOTA_MB" in refused.value.message
    assert "v9" not in stored()
    check_quota(10_000, StoreSettings(quota_mb=(store_bytes() + 20_000) / MB))  # under the quota: no error
    check_quota(10**12, StoreSettings(quota_mb=None))  # no quota
