"""Two replicas behind nginx on one Redis, under a steady load through nginx: shared routes, cache,
rate limits and canary; and what a client sees when a replica is stopped, killed, or Redis restarts.

The tests run in file order on one cluster; the last ones stop replicas (SIGTERM restarts it after)."""

from __future__ import annotations

import os
import signal
import time

import httpx
import numpy as np
import psutil
import redis as redis_lib

from gateway.cache.keys import cache_key
from gateway.ratelimit import RateLimitSettings
from tests.cluster.conftest import DRAIN_DELAY_S, WORKERS
from tests.faults.load import MODEL, SteadyLoad, infer_body, metric, wait_for

INFER = f"/v2/models/{MODEL}/infer"


def answer_of(url: str, headers: dict[str, str], row: np.ndarray, version: str | None = None) -> httpx.Response:
    """One inference on a new connection (so it may land on either worker of the replica)."""
    path = f"/v2/models/{MODEL}/versions/{version}/infer" if version else INFER
    return httpx.post(url + path, json=infer_body(row), headers=headers, timeout=10)


def worker_of(r: httpx.Response) -> str:
    return r.headers["x-request-id"][:8]


def set_weights(url: str, headers: dict[str, str], weights: dict[str, float]) -> None:
    r = httpx.put(f"{url}/admin/models/{MODEL}/weights", json={"weights": weights}, headers=headers, timeout=10)
    assert r.status_code == 200, r.text


def retried(cluster, since_line: int) -> int:
    """Requests nginx sent to a second replica after the first failed, from its access log."""
    return sum(1 for _, tried, _ in cluster.nginx.attempts()[since_line:] if len(tried) > 1)


def assert_nothing_failed(load: SteadyLoad, since: float = 0.0) -> None:
    s = load.summary(since)
    assert s.sent > 0
    assert (s.failed, s.lost, s.wrong) == (0, 0, 0), s.by_status


def test_weight_change_through_one_replica_applies_on_the_other_within_a_second(cluster, digits):
    rows, expected = digits
    a, b = cluster.replicas
    admin, predict = cluster.headers(scopes="admin"), cluster.headers()
    with SteadyLoad(cluster.url, cluster.headers(), rows, expected, rate=40, clients=2) as load:
        load.wait_for_answers(20)
        assert answer_of(b.url, predict, rows[0]).json()["model_version"] == "v1"
        on_v2: dict[str, float] = {}  # worker of b -> when the request that first answered v2 was sent

        def both_workers_on_v2() -> bool:
            sent = time.monotonic()
            r = answer_of(b.url, predict, rows[0])
            if r.status_code == 200 and r.json()["model_version"] == "v2":
                on_v2.setdefault(worker_of(r), sent)
            return len(on_v2) >= WORKERS

        changed = time.monotonic()
        set_weights(a.url, admin, {"v2": 100})
        wait_for(both_workers_on_v2, 10, "both workers of the other replica routing to v2", every=0.01)
        took = max(on_v2.values()) - changed
        set_weights(b.url, admin, {"v1": 100})  # back, through the other replica
        load.wait_for_answers(20)
    print(f"\nweights changed through one replica: both workers of the other route by them {took * 1000:.0f} ms later")
    assert took < 1.0
    assert_nothing_failed(load)


def test_a_cache_entry_written_by_one_replica_is_a_hit_on_the_other(cluster, digits):
    rows, expected = digits
    a, b = cluster.replicas
    predict = cluster.headers()
    row = np.minimum(rows[7] + np.float32(0.25), 16)  # an input no one has sent (pixels are 0-16): in no worker's memory
    digest = cache_key(MODEL, "v1#0", row.reshape(1, 64), "acme").decode().rsplit(":", 1)[1]  # the tenant of cluster.headers()
    client = redis_lib.Redis.from_url(cluster.redis.url)
    with SteadyLoad(cluster.url, predict, rows, expected, rate=40, clients=2) as load:
        load.wait_for_answers(10)
        first = answer_of(a.url, predict, row, "v1")
        assert first.status_code == 200 and first.headers["x-cache"] == "miss", first.text
        written = wait_for(lambda: list(client.scan_iter(match=f"{cluster.prefix}cache:*{digest}")), 5,
                           "the entry in Redis (written behind the answer)", every=0.01)
        second = answer_of(b.url, predict, row, "v1")
        load.wait_for_answers(10)
    assert len(written) == 1
    assert second.status_code == 200 and second.headers["x-cache"] == "hit", second.headers
    assert second.json()["outputs"] == first.json()["outputs"]
    assert worker_of(first) != worker_of(second)
    assert_nothing_failed(load)


def test_a_tenants_rate_limit_holds_across_both_replicas(cluster, digits):
    """The tiny tier (0.5/s, burst 5) leases one token at a time: Redis decides every request, so
    across replicas at most burst + rate * (L + lease_s) of a window of L seconds pass."""
    rows, expected = digits
    tiny = cluster.headers(tenant="tiny-tenant", sub="tiny")
    lease_s = RateLimitSettings().lease_s
    with SteadyLoad(cluster.url, cluster.headers(), rows, expected, rate=40, clients=2) as load:
        load.wait_for_answers(10)
        started = time.monotonic()
        statuses = [answer_of(cluster.replicas[i % 2].url, tiny, rows[i]).status_code for i in range(20)]
        window = time.monotonic() - started
    allowed = statuses.count(200)
    bound = 5 + 0.5 * (window + lease_s)
    print(f"\ntiny tenant, 20 requests alternating replicas in {window:.2f} s: {allowed} allowed (bound {bound:.2f})")
    assert set(statuses) <= {200, 429}, statuses
    assert 5 <= allowed <= bound
    assert_nothing_failed(load)


def test_one_controller_acts_and_a_canary_started_on_one_replica_ends_on_both(cluster, digits):
    rows, expected = digits
    a, b = cluster.replicas
    admin, predict = cluster.headers(scopes="admin"), cluster.headers()
    client = redis_lib.Redis.from_url(cluster.redis.url)
    lease_key = f"{cluster.prefix}routes:controller"
    holders: set[bytes] = set()
    canary = {"version": "v2", "stable": "v1", "steps": [50, 100], "hold_s": 1, "min_requests": 20}
    with SteadyLoad(cluster.url, predict, rows, expected, rate=60, clients=3) as load:
        load.wait_for_answers(20)
        r = httpx.post(f"{a.url}/admin/models/{MODEL}/canary", json=canary, headers=admin, timeout=10)
        assert r.status_code == 201, r.text

        def ended() -> dict | None:
            holders.add(client.get(lease_key))
            doc = httpx.get(f"{b.url}/admin/models/{MODEL}/canary", headers=admin, timeout=10).json()
            return doc if doc["status"] != "running" else None

        started = time.monotonic()
        doc = wait_for(ended, 90, "the canary promoted or rolled back", every=0.2)
        took = time.monotonic() - started
        winner = "v2" if doc["status"] == "promoted" else "v1"
        for replica in (a, b):
            answered = {worker_of(r): r.json()["model_version"] for r in (answer_of(replica.url, predict, rows[0]) for _ in range(8))}
            assert set(answered.values()) == {winner}, (replica.url, answered)
        load.wait_for_answers(20)
    decided = sum(metric(r.metrics_url, "rtserve_canary_decisions_total", model=MODEL) for r in (a, b))
    by_controller = [d for d in doc["decisions"] if d["action"] != "start"]  # the start is the admin API's
    print(f"\ncanary {doc['status']} after {took:.1f} s: {[(d['action'], d['reason']) for d in by_controller]}; "
          f"lease holders seen: {len(holders - {None})}; decisions counted by the controllers of both replicas: {decided:g}")
    assert doc["status"] in ("promoted", "rolled_back")
    assert len(holders - {None}) == 1, holders
    assert decided == len(by_controller) > 0  # each decision made once, by the one holder
    assert_nothing_failed(load)


def test_redis_restarted_under_load_fails_no_prediction(cluster, digits):
    rows, expected = digits
    with SteadyLoad(cluster.url, cluster.headers(), rows, expected, rate=40, clients=2) as load:
        load.wait_for_answers(20)
        cluster.redis.stop()
        stopped = time.monotonic()
        wait_for(lambda: all(metric(r.metrics_url, "rtserve_redis_up") == 0 for r in cluster.replicas), 15, "both replicas see Redis down")
        load.wait_for_answers(40)
        cluster.redis.start()
        restarted = time.monotonic()
        wait_for(lambda: all(metric(r.metrics_url, "rtserve_redis_up") == 1 for r in cluster.replicas), 20, "Redis up again")
        back = time.monotonic() - restarted
        load.wait_for_answers(40)
    s = load.summary(since=stopped)
    print(f"\nRedis down {restarted - stopped:.1f} s, back in use {back:.1f} s after its restart: {s}")
    print(s.row(f"Redis stopped {restarted - stopped:.0f} s and restarted empty"))
    assert_nothing_failed(load)


def test_sigterm_to_a_replica_under_load_loses_no_request(cluster, digits):
    """The replica says not ready at once, serves on for the drain delay, then finishes what it has and
    exits; nginx sends what it could not deliver to the other replica."""
    rows, expected = digits
    victim = cluster.replicas[0]
    predict = cluster.headers()
    log_line = len(cluster.nginx.attempts())
    with SteadyLoad(cluster.url, predict, rows, expected, rate=60, clients=4) as load:
        load.wait_for_answers(30)
        termed = time.monotonic()
        os.kill(victim.proc.pid, signal.SIGTERM)  # to bentoml serve's own process, as an orchestrator does
        wait_for(lambda: httpx.get(victim.url + "/v2/health/ready", timeout=5).status_code == 503, DRAIN_DELAY_S,
                 "the stopping replica not ready", every=0.02)
        not_ready = time.monotonic() - termed
        still_serving = answer_of(victim.url, predict, rows[0])
        victim.proc.wait(60)
        exited = time.monotonic() - termed
        load.wait_for_answers(60)
    s = load.summary(since=termed)
    again = retried(cluster, log_line)
    print(f"\nSIGTERM: not ready after {not_ready * 1000:.0f} ms, exited after {exited:.1f} s; {s}; nginx retried {again} on the other")
    print(s.row("one of two replicas SIGTERMed"))
    assert still_serving.status_code == 200, "a replica that is draining still answers until the delay is over"
    assert victim.proc.returncode == 0
    assert_nothing_failed(load, since=termed)
    started = time.monotonic()
    cluster.start_replica(victim)  # the same port: nginx takes it back once it answers
    print(f"replica restarted in {time.monotonic() - started:.1f} s")


def test_sigkill_of_a_replica_under_load_fails_at_most_its_in_flight_requests(cluster, digits):
    rows, expected = digits
    victim = cluster.replicas[1]
    clients = 4
    log_line = len(cluster.nginx.attempts())
    with SteadyLoad(cluster.url, cluster.headers(), rows, expected, rate=60, clients=clients) as load:
        load.wait_for_answers(30)
        # The machine or container gone: the arbiter and its workers at once (each worker has a process group of its own).
        procs = [psutil.Process(victim.proc.pid), *psutil.Process(victim.proc.pid).children(recursive=True)]
        killed = time.monotonic()
        for p in procs:
            p.send_signal(signal.SIGKILL)
        _, alive = psutil.wait_procs(procs, timeout=10)
        assert not alive, alive
        load.wait_for_answers(120)
    s = load.summary(since=killed)
    again = retried(cluster, log_line)
    print(f"\nSIGKILL of a replica ({len(procs)} processes): {s}; nginx retried {again} on the other")
    print(s.row("one of two replicas SIGKILLed"))
    assert again >= 1, "no request met the dead replica: it was not killed"
    assert s.wrong == 0
    assert s.failed + s.lost <= clients, "more requests failed than could have been in flight on the killed replica"
