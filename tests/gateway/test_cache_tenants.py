"""The prediction cache between tenants: with isolation (the default) a tenant never hits, or learns of,
another tenant's entry; with it off, tenants share entries."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from gateway.cache import CacheSettings, cache_key
from tests.inprocess import serve_in_process

pytestmark = pytest.mark.cache_independent
"""Its caches are set here or in the gateway server, which RTSERVE_TEST_CACHE does not reach."""

INFER = "/v2/models/digits-sklearn/infer"


def body(seed: int) -> dict:
    row = np.random.default_rng(seed).integers(0, 17, 64).astype(float).tolist()
    return {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": row}]}


def test_one_tenant_never_hits_another_tenants_entry(gateway):
    acme, globex = gateway.headers(tenant="acme", sub="a"), gateway.headers(tenant="globex", sub="g")
    request = body(90_210)
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        first = client.post(INFER, json=request, headers=acme)
        assert first.status_code == 200 and first.headers["x-cache"] == "miss", first.text
        assert client.post(INFER, json=request, headers=acme).headers["x-cache"] == "hit"
        other = client.post(INFER, json=request, headers=globex)
        assert other.status_code == 200 and other.headers["x-cache"] == "miss"  # the same tensor, another tenant
        assert other.json()["outputs"] == first.json()["outputs"]
        assert client.post(INFER, json=request, headers=globex).headers["x-cache"] == "hit"  # its own entry


def test_the_tenant_is_part_of_the_key_only_when_given():
    row = np.ones((1, 64), np.float32)
    assert cache_key("m", "v1#0", row, "acme") != cache_key("m", "v1#0", row, "globex")
    assert cache_key("m", "v1#0", row) == cache_key("m", "v1#0", row)
    assert cache_key("m", "v1#0", row, "a") != cache_key("m", "v1#0", row, "")  # lengths are hashed in: no ambiguity
    assert cache_key("m", "v1#0", row, "acme").startswith(b"m:v1#0:")  # a version's entries are still found by prefix


@pytest.mark.asyncio
async def test_without_isolation_tenants_share_entries(model_store, tmp_path):
    async with serve_in_process(tmp_path, cache=CacheSettings(enabled=True, tenant_isolation=False)) as served:
        request = body(90_211)
        first = await served.client.post(INFER, json=request, headers=served.headers(tenant="acme"))
        assert first.status_code == 200 and first.headers["x-cache"] == "miss", first.text
        other = await served.client.post(INFER, json=request, headers=served.headers(tenant="globex"))
        assert other.headers["x-cache"] == "hit"
