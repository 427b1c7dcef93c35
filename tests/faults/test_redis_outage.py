"""Redis stopped and restarted under a steady load: no prediction fails, limits and the cache
degrade as configured (fail open) and come back by themselves within seconds."""

from __future__ import annotations

import time

import httpx

from tests.faults.load import MODEL, SteadyLoad, infer_body, metric, wait_for


def limited(gateway, rows, n: int = 12) -> int:
    """How many of `n` quick requests of the tiny tenant (0.5 req/s, burst 5) are refused with 429."""
    headers = gateway.headers(tenant="tiny-tenant", sub="tiny")
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=10) as client:
        statuses = [client.post(f"/v2/models/{MODEL}/infer", json=infer_body(rows[i])).status_code for i in range(n)]
    assert set(statuses) <= {200, 429}, statuses
    return statuses.count(429)


def redis_cache_lookups(url: str) -> float:
    return sum(metric(url, "rtserve_cache_requests_total", tier="redis", outcome=o) for o in ("hit", "miss"))


def test_redis_stopped_and_restarted_under_load(fault_gateway, fault_redis, digits):
    rows, expected = digits
    url = fault_gateway.url
    metrics = fault_gateway.metrics_url
    with SteadyLoad(url, fault_gateway.headers(ttl=3600), rows, expected, rate=40, clients=2, fresh_connections=True) as load:
        load.wait_for_answers(40)
        assert limited(fault_gateway, rows) > 0, "the tiny tier is not limited while Redis is up"
        wait_for(lambda: metric(metrics, "rtserve_redis_up") == 1, 10, "rtserve_redis_up 1 before the outage")

        fault_redis.stop()
        stopped = time.monotonic()
        wait_for(lambda: metric(metrics, "rtserve_redis_up") == 0, 10, "rtserve_redis_up 0 in the outage")
        load.wait_for_answers(80)  # about two seconds of traffic with Redis down
        assert limited(fault_gateway, rows) == 0, "rate limits should fail open while Redis is down"
        assert metric(metrics, "rtserve_cache_requests_total", tier="redis", outcome="error") > 0
        change = httpx.put(
            f"{url}/admin/models/{MODEL}/weights",
            json={"weights": {"v1": 100}},
            headers=fault_gateway.headers(scopes="admin"),
            timeout=30,
        )
        assert change.status_code == 503 and change.json()["code"] == "unavailable", change.text
        outage = load.summary(since=stopped)

        fault_redis.start()
        restarted = time.monotonic()
        wait_for(lambda: metric(metrics, "rtserve_redis_up") == 1, 15, "rtserve_redis_up back to 1")
        up_after = time.monotonic() - restarted
        before = redis_cache_lookups(metrics)
        wait_for(lambda: redis_cache_lookups(metrics) > before, 15, "the cache's Redis tier in use again")
        cache_after = time.monotonic() - restarted
        wait_for(lambda: limited(fault_gateway, rows) > 0, 15, "rate limits enforced again", every=0.5)
        limits_after = time.monotonic() - restarted
        load.wait_for_answers(40)

    total = load.summary()
    print(
        f"\nRedis outage of {restarted - stopped:.1f} s: {total}; during the outage {outage}; after the restart: redis_up 1 in {up_after:.1f} s, "
        f"cache on Redis in {cache_after:.1f} s, limits enforced in {limits_after:.1f} s"
    )
    print(total.row(f"Redis stopped {restarted - stopped:.0f} s, restarted empty"))
    assert outage.sent > 0
    assert (total.failed, total.lost, total.wrong) == (0, 0, 0), total.by_status
