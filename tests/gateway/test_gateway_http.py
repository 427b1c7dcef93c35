"""The gateway through real requests: auth, rate limits, cache, errors, with two workers and Redis."""

from __future__ import annotations

import concurrent.futures
import json
import time

import httpx
import numpy as np
import pytest
import redis as redis_lib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from demo import data
from tests.helpers import REDIS_URL, ServerProcess, gateway_env

INFER = "/v2/models/digits-sklearn/infer"


def body(row=None, shape=(1, 64)) -> dict:
    row = data.digits().x_test[0].tolist() if row is None else row
    return {"inputs": [{"name": "pixels", "shape": list(shape), "datatype": "FP32", "data": row}]}


def fresh_row(seed: int) -> list[float]:
    return np.random.default_rng(seed).integers(0, 17, 64).astype(float).tolist()


@pytest.fixture(scope="module")
def http(gateway):
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client


# -- auth


def test_inference_needs_a_token(http, gateway):
    r = http.post(INFER, json=body())
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    assert r.headers["www-authenticate"].startswith("Bearer")
    bad = http.post(INFER, json=body(), headers={"Authorization": "Bearer not.a.token"})
    assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["www-authenticate"]
    ok = http.post(INFER, json=body(), headers=gateway.headers())
    assert ok.status_code == 200, ok.text


def test_missing_scope_is_403(http, gateway):
    r = http.post(INFER, json=body(), headers=gateway.headers(scopes="admin"))
    assert r.status_code == 403 and r.json()["code"] == "forbidden"


def test_expired_token_is_401(http, gateway):
    r = http.post(INFER, json=body(), headers=gateway.headers(ttl=-120))
    assert r.status_code == 401


def test_health_and_readiness_stay_open(http):
    for path in ("/v2/health/live", "/v2/health/ready", "/v2"):
        assert http.get(path).status_code == 200, path
    assert http.get("/v2/health/ready").json() == {"ready": True}  # a status only, without a token


def test_model_readiness_needs_a_token(http, gateway):
    assert http.get("/v2/models/digits-sklearn/ready").status_code == 401
    assert http.get("/v2/models/digits-sklearn/ready", headers=gateway.headers()).status_code == 200


def test_metrics_are_on_their_own_port_not_the_api(http, gateway):
    assert http.get("/metrics").status_code == 401  # not an open path of the API port
    assert http.get("/metrics", headers=gateway.headers()).status_code == 404
    assert b"rtserve_requests_total" in httpx.get(gateway.metrics_url, timeout=10).content


def test_model_metadata_needs_a_token(http, gateway):
    assert http.get("/v2/models/digits-sklearn").status_code == 401
    assert http.get("/v2/models/digits-sklearn", headers=gateway.headers()).status_code == 200


def test_simple_predict_needs_a_token(http, gateway):
    payload = {"model": "digits-sklearn", "inputs": [data.digits().x_test[0].tolist()]}
    assert http.post("/predict", json=payload).status_code == 401
    assert http.post("/predict", json=payload, headers=gateway.headers()).status_code == 200


# -- rate limits


def test_rate_limit_holds_across_workers(gateway):
    """Tier `tiny`: burst 5, 0.5/s, shared in Redis by both workers; fresh connections spread the requests."""
    headers = gateway.headers(tenant="tiny-tenant")

    def one(_: int) -> httpx.Response:
        return httpx.post(gateway.url + INFER, json=body(), headers=headers, timeout=30)

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(one, range(24)))
    elapsed = time.monotonic() - start
    ok = [r for r in responses if r.status_code == 200]
    limited = [r for r in responses if r.status_code == 429]
    assert len(ok) + len(limited) == 24
    assert 5 <= len(ok) <= 5 + 0.5 * elapsed + 1  # one bucket for both workers, not one each
    refused = limited[0]
    assert refused.json()["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-limit"] == "5" and refused.headers["ratelimit-remaining"] == "0"
    assert ok[0].headers["ratelimit-limit"] == "5"


def test_other_tenants_are_not_limited_by_the_tiny_tier(http, gateway):
    r = http.post(INFER, json=body(), headers=gateway.headers(tenant="someone-else"))
    assert r.status_code == 200 and int(r.headers["ratelimit-remaining"]) > 1000


# -- cache


def test_cache_miss_then_hit_and_canonical_keys(http, gateway):
    headers = gateway.headers()
    row = fresh_row(1)
    first = http.post(INFER, json=body(row), headers=headers)
    assert first.headers["x-cache"] == "miss"
    again = http.post(INFER, json=body([int(v) for v in row]), headers=headers)  # 1 and 1.0 are the same FP32
    assert again.headers["x-cache"] == "hit"
    assert again.json()["outputs"] == first.json()["outputs"]
    fresh = http.post(INFER, json=body(row), headers={**headers, "Cache-Control": "no-cache"})
    assert fresh.headers["x-cache"] == "miss"


def test_cache_never_serves_another_version(http, gateway):
    headers = gateway.headers()
    row = fresh_row(2)
    v1 = http.post("/v2/models/digits-sklearn/versions/v1/infer", json=body(row), headers=headers)
    v2 = http.post("/v2/models/digits-sklearn/versions/v2/infer", json=body(row), headers=headers)
    assert v1.headers["x-cache"] == "miss" and v2.headers["x-cache"] == "miss"
    assert v2.json()["model_version"] == "v2"


def test_cache_is_shared_by_workers_through_redis(gateway):
    headers = gateway.headers()
    row = fresh_row(3)
    first = httpx.post(gateway.url + INFER, json=body(row), headers=headers)
    assert first.headers["x-cache"] == "miss"
    client = redis_lib.Redis.from_url(REDIS_URL)
    deadline = time.monotonic() + 5
    while not list(client.scan_iter(match=f"{gateway.prefix}cache:digits-sklearn:*")):
        assert time.monotonic() < deadline, "the entry never reached Redis"
        time.sleep(0.05)
    # New connections land on either worker; every one of them answers from a cache tier.
    for _ in range(10):
        assert httpx.post(gateway.url + INFER, json=body(row), headers=headers).headers["x-cache"] == "hit"


def test_versions_cheaper_than_a_round_trip_keep_out_of_redis(model_store, tmp_path):
    import secrets as s
    import uuid

    from gateway.auth import AuthSettings
    from gateway.tokens import mint

    secret = tmp_path / "secret"
    secret.write_text(s.token_hex(32))
    prefix = f"rtserve-test:{uuid.uuid4().hex}:"
    env = gateway_env(secret, prefix, workers=1)
    del env["RTSERVE_CACHE_REDIS_MIN_COST_MS"]  # the default: digits-sklearn costs far less than it
    server = ServerProcess(env=env, log_path=tmp_path / "serve.log").start()
    try:
        token = mint(AuthSettings(hs256_secret_file=secret), subject="a", scopes="predict", tenant="acme", ttl_s=600)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, timeout=10) as c:
            row = fresh_row(11)
            assert c.post(INFER, json=body(row), headers=headers).headers["x-cache"] == "miss"
            assert c.post(INFER, json=body(row), headers=headers).headers["x-cache"] == "hit"  # from the LRU
        # The worker copies its cache counters into the metrics every second; the metrics port reads them.
        deadline = time.monotonic() + 10
        while 'rtserve_cache_requests_total{outcome="not_worth",tier="redis"} 1.0' not in httpx.get(server.metrics_url).text:
            assert time.monotonic() < deadline, "the cache's not_worth outcome never counted"
            time.sleep(0.2)
        assert not list(redis_lib.Redis.from_url(REDIS_URL).scan_iter(match=f"{prefix}cache:*"))
    finally:
        server.stop()


# -- errors: every status reached by a real request


def test_error_statuses(http, gateway):
    h = gateway.headers()
    assert http.post(INFER, content=b"{nope", headers=h).status_code == 400
    assert http.post(INFER, json=body()).status_code == 401
    assert http.post(INFER, json=body(), headers=gateway.headers(scopes="")).status_code == 403
    assert http.post("/v2/models/nope/infer", json=body(), headers=h).status_code == 404
    assert http.post(INFER, content=b"0" * (5 * 1024 * 1024), headers=h).status_code == 413
    assert http.post(INFER, json=body(shape=(1, 63), row=[1.0] * 63), headers=h).status_code == 422
    r = http.post(INFER, json=body(fresh_row(4)), headers={**h, "X-Request-Timeout-Ms": "0"})
    assert r.status_code == 504 and r.json()["code"] == "deadline_exceeded"
    assert http.post(INFER, json=body(), headers={**h, "X-Request-Timeout-Ms": "soon"}).status_code == 400


def test_every_response_has_a_request_id(http, gateway):
    r = http.post(INFER, json=body(), headers={**gateway.headers(), "X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert http.post(INFER, json=body()).headers["x-request-id"]


json_bodies = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=4),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(["inputs", "name", "shape", "datatype", "data", "x"]), c, max_size=4),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=json_bodies)
def test_any_json_body_gets_2xx_or_4xx(http, gateway, doc):
    r = http.post(INFER, content=json.dumps(doc), headers=gateway.headers())
    assert 200 <= r.status_code < 500, r.text


# -- Redis outage


def test_redis_stopped_mid_test_requests_still_succeed(model_store, own_redis, tmp_path):
    import secrets as s

    from gateway.auth import AuthSettings
    from gateway.tokens import mint

    secret = tmp_path / "secret"
    secret.write_text(s.token_hex(32))
    env = gateway_env(secret, "outage:", redis_url=own_redis.url, workers=1)
    env["RTSERVE_RATELIMIT_REDIS_TIMEOUT_MS"] = "50"
    server = ServerProcess(env=env, log_path=tmp_path / "serve.log").start()
    try:
        token = mint(AuthSettings(hs256_secret_file=secret), subject="a", scopes="predict", tenant="acme", ttl_s=600)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, timeout=10) as c:
            assert c.post(INFER, json=body(fresh_row(10)), headers=headers).status_code == 200
            own_redis.stop()
            for i in range(20):
                start = time.monotonic()
                r = c.post(INFER, json=body(fresh_row(100 + i)), headers=headers)
                assert r.status_code == 200, r.text
                assert time.monotonic() - start < 1.0
            own_redis.start()
            deadline = time.monotonic() + 10
            while b"rtserve_redis_up 1.0" not in httpx.get(server.metrics_url, timeout=10).content:
                assert time.monotonic() < deadline, "Redis never came back in the metrics"
                time.sleep(0.2)
            assert c.post(INFER, json=body(fresh_row(200)), headers=headers).status_code == 200
    finally:
        server.stop()
