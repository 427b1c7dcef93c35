"""A version that fails to load: the failure is visible (state, metrics, admin), requests to it get
503 model_not_ready, and every other version keeps serving."""

from __future__ import annotations

import httpx

from tests.faults.load import MODEL, SteadyLoad, infer_body, metric, wait_for


def admin(gateway, method: str, path: str, json=None) -> httpx.Response:
    return httpx.request(method, gateway.url + path, json=json, headers=gateway.headers(scopes="admin"), timeout=30)


def assert_refused_not_ready(gateway, rows) -> None:
    r = httpx.post(
        f"{gateway.url}/v2/models/{MODEL}/versions/corrupt/infer", json=infer_body(rows[0]), headers=gateway.headers(), timeout=10
    )
    assert r.status_code == 503 and r.json()["code"] == "model_not_ready" and r.headers["retry-after"], r.text
    assert "failed to load" in r.json()["error"]


def test_a_version_loaded_through_the_admin_api_fails_and_the_others_keep_serving(fault_gateway, digits):
    """The load answers with the failure and its reason; the version leaves the routes (so no worker tries it
    again on every restart), and the other versions never stop answering."""
    rows, expected = digits
    url = fault_gateway.url
    metrics = fault_gateway.metrics_url
    with SteadyLoad(url, fault_gateway.headers(ttl=3600), rows, expected, rate=40, clients=2, fresh_connections=True) as load:
        load.wait_for_answers(40)
        r = admin(fault_gateway, "POST", f"/admin/models/{MODEL}/versions/corrupt/load")
        assert r.status_code == 500 and r.json()["code"] == "load_failed", r.text
        assert "model.joblib: cannot be unpickled" in r.json()["error"], r.text
        assert metric(metrics, "rtserve_model_load_failures_total", model=MODEL, version="corrupt") >= 1
        routes = admin(fault_gateway, "GET", "/admin/models").json()[MODEL]
        assert "corrupt" not in routes["loaded"], routes
        wait_for(lambda: httpx.get(f"{url}/v2/models/{MODEL}/versions/corrupt/ready", headers=fault_gateway.headers()).status_code == 404,
                 10, "forgotten")
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200  # versions loaded later never make the process unready
        load.wait_for_answers(40)
    s = load.summary()
    print(f"\nfailed load through the admin API: {r.json()['error']}; {s}")
    print(s.row("a version fails to load (admin API)"))
    assert (s.failed, s.lost, s.wrong) == (0, 0, 0), s.by_status


def test_a_configured_version_that_fails_keeps_readiness_false_and_the_others_serving(file_gateway, digits):
    """serving.yaml names `corrupt`: the process never reports ready (a rollout of it stops), while
    the versions that did load answer."""
    rows, expected = digits
    url = file_gateway.url
    metrics = file_gateway.metrics_url
    ready = httpx.get(f"{url}/v2/health/ready")
    assert ready.status_code == 503 and ready.json()["ready"] is False
    assert metric(metrics, "rtserve_model_load_failures_total", model=MODEL, version="corrupt") == 1
    assert metric(metrics, "rtserve_model_version_state", model=MODEL, version="corrupt", state="failed") == 1
    assert_refused_not_ready(file_gateway, rows)
    with SteadyLoad(url, file_gateway.headers(ttl=3600), rows, expected, rate=40, clients=2) as load:
        load.wait_for_answers(80)
    s = load.summary()
    print(f"\nconfigured version failed to load: {s}")
    assert (s.failed, s.lost, s.wrong) == (0, 0, 0), s.by_status
