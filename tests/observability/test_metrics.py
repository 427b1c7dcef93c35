"""Metrics add up across workers, and a real Prometheus scrapes them with the right labels."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import httpx
import pytest

from tests.helpers import ROOT, free_port

INFER = "/v2/models/digits-sklearn/versions/v2/infer"


def counter(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.index("}")]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def body(i: int) -> dict:
    row = [float((i * 7 + j) % 17) for j in range(64)]
    return {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": row}]}


def test_request_counter_adds_up_across_two_workers(gateway):
    """The gateway server runs two workers; fresh connections land on both."""
    labels = {"model": "digits-sklearn", "version": "v2", "status_class": "2xx"}
    before = counter(httpx.get(gateway.metrics_url).text, "rtserve_requests_total", **labels)
    headers = gateway.headers()
    sent = 60
    for i in range(sent):
        assert httpx.post(gateway.url + INFER, json=body(i), headers=headers).status_code == 200
    deadline = time.monotonic() + 10
    while (now := counter(httpx.get(gateway.metrics_url).text, "rtserve_requests_total", **labels)) != before + sent:
        assert now < before + sent and time.monotonic() < deadline, (before, now)
        time.sleep(0.1)
    text = httpx.get(gateway.metrics_url).text
    assert counter(text, "rtserve_request_duration_seconds_count", model="digits-sklearn", version="v2") >= sent
    assert counter(text, "rtserve_batches_total", model="digits-sklearn", version="v2") >= 1
    assert counter(text, "rtserve_model_version_state", model="digits-sklearn", version="v2", state="ready") >= 1
    assert counter(text, "rtserve_queue_capacity", model="digits-sklearn", version="v2") > 0


def test_errors_and_auth_failures_are_counted(gateway):
    headers = gateway.headers()
    bad = {"inputs": [{"name": "pixels", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    before = counter(httpx.get(gateway.metrics_url).text, "rtserve_errors_total", code="invalid_input")
    for _ in range(3):
        assert httpx.post(gateway.url + INFER, json=bad, headers=headers).status_code == 422
    httpx.post(gateway.url + INFER, json=bad, headers={"Authorization": "Bearer nope"})
    deadline = time.monotonic() + 10
    while True:
        text = httpx.get(gateway.metrics_url).text
        if counter(text, "rtserve_errors_total", code="invalid_input") >= before + 3 and counter(
            text, "rtserve_auth_failures_total", reason="malformed"
        ) >= 1:
            break
        assert time.monotonic() < deadline, text[-2000:]
        time.sleep(0.2)


def test_cache_outcomes_are_counted(gateway):
    headers = gateway.headers()
    for _ in range(3):
        httpx.post(gateway.url + INFER, json=body(10_000), headers=headers)
    deadline = time.monotonic() + 10
    while counter(httpx.get(gateway.metrics_url).text, "rtserve_cache_requests_total", tier="memory", outcome="hit") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.2)


@pytest.fixture
def prometheus(gateway, tmp_path):
    port = free_port()
    target = gateway.metrics_url.removeprefix("http://").removesuffix("/metrics")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: rtserve\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/-/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "prometheus did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def query(prom: str, expr: str) -> list[dict]:
    doc = httpx.get(prom + "/api/v1/query", params={"query": expr}).json()
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def test_real_prometheus_sees_rate_and_p95_per_version(gateway, prometheus):
    headers = gateway.headers()
    rate = 'sum by (model, version) (rate(rtserve_requests_total{model="digits-sklearn"}[10s]))'
    p95 = ('histogram_quantile(0.95, sum by (model, version, le) '
           '(rate(rtserve_request_duration_seconds_bucket{model="digits-sklearn"}[10s])))')
    deadline = time.monotonic() + 60
    i = 0
    with httpx.Client(base_url=gateway.url, headers=headers) as client:
        while True:
            for _ in range(20):
                i += 1
                client.post(INFER, json=body(i))
            # series without a version: requests for the model that never reached one (e.g. an unknown version)
            rates = {r["metric"].get("version"): float(r["value"][1]) for r in query(prometheus, rate)}
            quantiles = {r["metric"].get("version"): float(r["value"][1]) for r in query(prometheus, p95)}
            if rates.get("v2", 0) > 0 and 0 < quantiles.get("v2", float("nan")) < 5:
                break
            assert time.monotonic() < deadline, (rates, quantiles)
            time.sleep(0.5)
    up = query(prometheus, 'up{job="rtserve"}')
    assert up and up[0]["value"][1] == "1"


FORK_SCRIPT = """
import os
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from observability.metrics import Metrics, _cached_pid

child = Metrics().requests.labels("m", "v1", "stable", "2xx", "miss")
assert _cached_pid() == os.getpid()
child.inc(3)
pid = os.fork()
if pid == 0:
    child.inc(5)  # after the fork: a file of its own, counted from zero
    os._exit(0 if _cached_pid() == os.getpid() else 1)
_, status = os.waitpid(pid, 0)
assert status == 0
child.inc(1)
registry = CollectorRegistry()
MultiProcessCollector(registry)
print(generate_latest(registry).decode())
print(sorted(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])))
"""


def test_values_written_after_a_fork_go_to_the_childs_own_file(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", FORK_SCRIPT], env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    assert counter(out, "rtserve_requests_total", model="m") == 9.0
    assert len([f for f in os.listdir(tmp_path) if f.startswith("counter_")]) == 2  # parent's and child's
