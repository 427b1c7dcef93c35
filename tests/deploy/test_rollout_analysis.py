"""The prod AnalysisTemplate's queries, run by a real Prometheus over real replicas.

Three `bentoml serve` replicas stand in for Argo's pods: a stable one (digits-sklearn v1), a
healthy canary (v1 too) and a broken canary (`digits-sklearn:broken`, which raises on real inputs).
Prometheus scrapes them every second with `rollouts_pod_template_hash` set per target, the label
the ServiceMonitor copies from Argo's pod label. The template's query strings are read from the
rendered prod overlay, Argo's `{{args.*}}` filled in, evaluated through Prometheus' HTTP API and
judged by the template's own successCondition: the healthy canary passes, the broken one fails.
"""

from __future__ import annotations

import operator
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from deploy.k8s.validate import render
from loadtest.servers import free_port
from tests.helpers import ServerProcess
from tests.routing.broken import build_broken_versions

STABLE, HEALTHY, BROKEN = "5d8f7c9b4", "7b6c5d4f8", "6f9e8d7c5"  # pod-template-hash values
# The healthy canary is a new image with the same model (v1): on this shared machine v2, which
# runs on its version's thread rather than the event loop, answered at twice v1's p95 and was
# rightly judged slower.
VERSIONS = {STABLE: "v1", HEALTHY: "v1", BROKEN: "broken"}
REQUESTS_PER_REPLICA = 600
WARM_UP = 50
CONDITION = re.compile(r"^\s*result\[0\]\s*(<=|<|>=|>)\s*(-?[0-9.]+)\s*$")
COMPARE = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}


def analysis_template() -> dict[str, Any]:
    (template,) = [d for d in render("overlays/prod") if d["kind"] == "AnalysisTemplate"]
    return template


def fill_args(text: str, args: dict[str, str]) -> str:
    """Argo's `{{args.NAME}}` substitution; an argument left unfilled is an error, as in Argo."""
    filled = re.sub(r"\{\{\s*args\.([A-Za-z0-9_-]+)\s*\}\}", lambda m: args[m.group(1)], text)
    assert "{{" not in filled, filled
    return filled


def passes(condition: str, result: list[float]) -> bool:
    """The template's successCondition in its `result[0] <op> number` form."""
    match = CONDITION.match(condition)
    assert match, f"successCondition {condition!r} is not of the form result[0] <= X"
    return COMPARE[match.group(1)](result[0], float(match.group(2)))


def serving_yaml(path: Path, version: str) -> Path:
    path.write_text(yaml.safe_dump({"models": {"digits-sklearn": {"versions": [version], "weights": {version: 100}}}}))
    return path


@pytest.fixture(scope="module")
def replicas(model_store, tmp_path_factory) -> Iterator[dict[str, ServerProcess]]:
    build_broken_versions()
    tmp = tmp_path_factory.mktemp("analysis")
    servers = {
        pod_hash: ServerProcess(
            env={"REDIS_URL": "", "RTSERVE_WORKERS": "1", "RTSERVE_CONFIG": str(serving_yaml(tmp / f"{pod_hash}.yaml", version))},
            log_path=tmp / f"{pod_hash}.log",
        )
        for pod_hash, version in VERSIONS.items()
    }
    try:
        for server in servers.values():  # start all, then wait: the three start side by side
            server.start(wait_ready=False)
        for server in servers.values():
            server.wait_until(lambda r: r.status_code == 200, "/v2/health/ready", 180)
        # Before Prometheus first scrapes: rate() counts from its first sample, so first requests
        # (connections, caches, the batcher's cost model) stay out of the compared windows.
        drive(servers, WARM_UP)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="module")
def prometheus(replicas, tmp_path_factory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("prometheus")
    targets = [
        {
            "targets": [server.metrics_url.removeprefix("http://").removesuffix("/metrics")],  # the metrics port
            "labels": {"rollouts_pod_template_hash": pod_hash, "role": "stable" if pod_hash == STABLE else "canary"},
        }
        for pod_hash, server in replicas.items()
    ]
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
        "scrape_configs": [{"job_name": "rtserve", "static_configs": targets}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        poll(lambda: httpx.get(url + "/-/ready").status_code == 200, "prometheus did not start", proc=proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def poll(check, message: str, timeout: float = 60, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        assert proc is None or proc.poll() is None, message
        assert time.monotonic() < deadline, message
        time.sleep(0.2)


def query(prom: str, expr: str) -> list[float]:
    doc = httpx.get(prom + "/api/v1/query", params={"query": expr}, timeout=10).json()
    assert doc["status"] == "success", doc
    assert doc["data"]["resultType"] == "vector", doc
    return [float(sample["value"][1]) for sample in doc["data"]["result"]]


def drive(servers: dict[str, ServerProcess], n: int) -> dict[str, dict[int, int]]:
    """`n` real digits rows to every replica, one request at a time, taking turns: whatever else
    the machine runs meanwhile falls on the three replicas alike, so their latencies compare."""
    from sklearn.datasets import load_digits

    rows = load_digits().data.astype(np.float32)
    statuses: dict[str, dict[int, int]] = {h: {} for h in servers}
    clients = {h: httpx.Client(base_url=server.url, timeout=10) for h, server in servers.items()}
    try:
        for i in range(n):
            body = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": rows[i % len(rows)].tolist()}]}
            for pod_hash, client in clients.items():
                code = client.post("/v2/models/digits-sklearn/infer", json=body).status_code
                statuses[pod_hash][code] = statuses[pod_hash].get(code, 0) + 1
    finally:
        for client in clients.values():
            client.close()
    return statuses


@pytest.fixture(scope="module")
def scraped(replicas, prometheus) -> dict[str, dict[int, int]]:
    """Load driven, and Prometheus holding every request of it."""
    total = 'sum(rtserve_requests_total{rollouts_pod_template_hash="%s"})'
    for pod_hash in replicas:  # a sample from before the load, or rate() over it has nothing to compare with
        poll(lambda h=pod_hash: query(prometheus, total % h) == [float(WARM_UP)], f"Prometheus never scraped {pod_hash}", 30)
    statuses = drive(replicas, REQUESTS_PER_REPLICA)
    expected = [float(WARM_UP + REQUESTS_PER_REPLICA)]
    for pod_hash in replicas:
        poll(lambda h=pod_hash: query(prometheus, total % h) == expected, f"Prometheus never saw all requests of {pod_hash}", 30)
    return statuses


def analyse(prometheus: str, canary_hash: str) -> dict[str, tuple[float, bool]]:
    """Every metric of the template for one canary: (value, passed)."""
    template = analysis_template()
    args = {a["name"]: a["value"] for a in template["spec"]["args"] if "value" in a}
    args.update({"stable-hash": STABLE, "canary-hash": canary_hash})
    outcome = {}
    for metric in template["spec"]["metrics"]:
        result = query(prometheus, fill_args(metric["provider"]["prometheus"]["query"], args))
        assert len(result) == 1, f"{metric['name']}: expected one value, got {result}"
        outcome[metric["name"]] = (result[0], passes(metric["successCondition"], result))
    return outcome


def test_replicas_answered_as_built(prometheus, scraped) -> None:
    p95 = 'histogram_quantile(0.95, sum by (le) (rate(rtserve_request_duration_seconds_bucket{rollouts_pod_template_hash="%s"}[2m])))'
    print("p95 seconds:", {h: query(prometheus, p95 % h) for h in VERSIONS})
    print("requests by status:", scraped)
    assert scraped[STABLE] == {200: REQUESTS_PER_REPLICA}
    assert scraped[HEALTHY] == {200: REQUESTS_PER_REPLICA}
    assert scraped[BROKEN] == {500: REQUESTS_PER_REPLICA}


def test_healthy_canary_passes_every_metric(prometheus, scraped) -> None:
    outcome = analyse(prometheus, HEALTHY)
    print("healthy canary:", outcome)
    assert outcome["server-error-rate-increase"][0] == 0.0
    assert all(passed for _, passed in outcome.values()), outcome


def test_broken_canary_fails_on_server_faults(prometheus, scraped) -> None:
    outcome = analyse(prometheus, BROKEN)
    print("broken canary:", outcome)
    value, passed = outcome["server-error-rate-increase"]
    assert value == pytest.approx(1.0) and not passed, outcome


def test_no_canary_traffic_is_an_error_not_a_pass(prometheus, scraped) -> None:
    """A canary hash with no series gives an empty result: Argo counts an error, never a success."""
    template = analysis_template()
    args = {a["name"]: a.get("value", "") for a in template["spec"]["args"]} | {
        "stable-hash": STABLE,
        "canary-hash": "0000000000",
    }
    for metric in template["spec"]["metrics"]:
        assert query(prometheus, fill_args(metric["provider"]["prometheus"]["query"], args)) == [], metric["name"]


def test_condition_parser_rejects_other_forms() -> None:
    assert passes("result[0] <= 0.001", [0.0005]) and not passes("result[0] <= 0.001", [0.5])
    with pytest.raises(AssertionError):
        passes("result[0] <= 0.001 && result[1] > 2", [0.0])


def test_latency_is_judged_on_uncached_requests_of_both_arms() -> None:
    """The p95 compared is the like-for-like one (the prediction cache's answers left out), as in the service:
    a stable pod warm in the cache would otherwise pass a slow canary or fail a healthy cold one."""
    (latency,) = [m for m in analysis_template()["spec"]["metrics"] if m["name"] == "p95-latency-over-limit"]
    q = latency["provider"]["prometheus"]["query"]
    quantiles = re.findall(r"histogram_quantile\(0\.95, sum by \(le\) \(rate\((\w+)\{([^}]*)\}", q)
    assert sorted(arm for _, labels in quantiles for arm in re.findall(r"args\.(\w+)-hash", labels)) == ["canary", "stable"]
    assert {metric for metric, _ in quantiles} == {"rtserve_uncached_request_duration_seconds_bucket"}
    assert "rtserve_request_duration_seconds" not in q  # not even as the guard: a cached-only window has no uncached p95
    assert all('variant!~"shadow|batch"' in labels for _, labels in quantiles)
