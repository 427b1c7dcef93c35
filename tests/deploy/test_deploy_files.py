"""The monitoring files in deploy/: Prometheus config, rules and their unit tests, the Grafana dashboard.

promtool (Debian package `prometheus`, installed by `make system-deps`) checks the config and the
rules and runs the rule unit tests; the dashboard is checked against the metric contract below, so
a renamed metric or a panel querying a name the service does not export fails here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
PROMETHEUS_YML = PROM_DIR / "prometheus.yml"
ALERTS_YML = PROM_DIR / "alerts.yml"
RECORDING_YML = PROM_DIR / "recording.yml"
ALERTS_TEST_YML = PROM_DIR / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "rtserve-dashboard.json"



def exported_metrics() -> dict[str, str]:
    """The contract: every metric the service exports on /metrics, by name and type, read from
    observability/metrics.py itself, so a metric added or renamed there is checked here at once."""
    from prometheus_client import CollectorRegistry

    from observability.metrics import Metrics

    registry = CollectorRegistry()
    Metrics(registry)
    return {family.name + ("_total" if family.type == "counter" else ""): family.type for family in registry.collect()}


METRICS = exported_metrics()
NOT_ON_DASHBOARD = {
    "rtserve_shadow_comparisons_total": "shown by `rtserve experiment status` and judged by the canary controller",
    "rtserve_background_task_healthy": "alerted on, and listed in /v2/health/ready",
    **dict.fromkeys(
        ("rtserve_batch_executions_total", "rtserve_batch_phase_seconds_total", "rtserve_last_request_timestamp_seconds",
         "rtserve_request_phase_seconds_total", "rtserve_request_seconds_total"),
        "read by the statistics extension (/v2/models/{name}/stats) in Triton's format",
    ),
    "rtserve_requests_by_priority_total": "per request priority; read with the statistics extension",
    "rtserve_worker_up": "a worker's mark of its start, read by the model repository to count the workers (1 while any lives)",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

EXPECTED_ALERTS = {
    "RtserveTargetDown",
    "RtserveLatencyP95High",
    "RtserveErrorRateHigh",
    "RtserveCanaryRolledBack",
    "RtserveRedisDown",
    "RtserveRedisErrors",
    "RtserveModelLoadFailures",
    "RtserveModelVersionFailed",
    "RtserveQueueNearCapacity",
    "RtserveBackgroundTaskFailing",
}

REQUIRED_PANELS = {
    "Request latency p50 / p95 / p99",
    "Throughput by status class",
    "Error rate (5xx / all)",
    "Batch size",
    "Cache hit ratio",
    "Queue depth vs capacity",
    "In-flight requests",
    "Model version state",
    "Route weights",
    "p95 latency: stable vs canary",
    "Error rate: stable vs canary",
    "Rate-limited requests",
    "Auth failures",
}

RECORDING_NAME = re.compile(r"\b[a-zA-Z_][a-zA-Z0-9_]*:[a-zA-Z0-9_:]+")
METRIC_NAME = re.compile(r"rtserve_[a-z_]+")
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$model": ".*",
    "$version": ".*",
}


def promtool(*args: str) -> str:
    exe = shutil.which("promtool")
    assert exe, "promtool is not on PATH; `make system-deps` installs it (Debian package prometheus)"
    proc = subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    output = f"$ promtool {' '.join(args)}\n{proc.stdout}{proc.stderr}"
    assert proc.returncode == 0, f"exit {proc.returncode}\n{output}"
    return output


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in load_yaml(path)["groups"] for rule in group["rules"]]


def unknown_metrics(expr: str) -> set[str]:
    """Names in `expr` that are neither in the contract nor a histogram's series."""
    unknown = set()
    for name in METRIC_NAME.findall(RECORDING_NAME.sub(" ", expr)):
        if name in METRICS:
            continue
        base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None)
        if base is None or METRICS.get(base) != "histogram":
            unknown.add(name)
    return unknown


def test_unknown_metrics_helper_rejects_wrong_names() -> None:
    assert unknown_metrics('rate(rtserve_request_duration_seconds_bucket{le="0.01"}[5m])') == set()
    assert unknown_metrics("rtserve:request_duration_seconds:p95_5m") == set()
    assert unknown_metrics("rate(rtserve_request_total[5m])") == {"rtserve_request_total"}
    assert unknown_metrics("rtserve_requests_total_count") == {"rtserve_requests_total_count"}
    assert unknown_metrics("rtserve_queue_depth_bucket") == {"rtserve_queue_depth_bucket"}


# --- Prometheus ----------------------------------------------------------------------------


def test_promtool_check_config() -> None:
    output = promtool("check", "config", str(PROMETHEUS_YML))
    assert "SUCCESS" in output, output


def test_scrape_config_targets_the_service() -> None:
    config = load_yaml(PROMETHEUS_YML)
    assert set(config["rule_files"]) == {"alerts.yml", "recording.yml"}
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "rtserve"]
    assert job["scrape_interval"] == "5s"
    assert job["metrics_path"] == "/metrics"
    assert [t for sc in job["static_configs"] for t in sc["targets"]] == ["localhost:3002"]  # the metrics port, not the API's


def test_promtool_check_rules() -> None:
    output = promtool("check", "rules", str(ALERTS_YML), str(RECORDING_YML))
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in output, output


def test_promtool_test_rules() -> None:
    output = promtool("test", "rules", str(ALERTS_TEST_YML))
    assert "SUCCESS" in output, output


def test_alerts_have_severity_and_annotations() -> None:
    alerts = rules(ALERTS_YML)
    assert {a["alert"] for a in alerts} == EXPECTED_ALERTS
    for alert in alerts:
        assert alert["labels"]["severity"] in {"warning", "critical"}, alert["alert"]
        assert alert["annotations"]["summary"].strip(), alert["alert"]
        assert "{{ $" in alert["annotations"]["description"], alert["alert"]


def test_every_alert_is_tested_firing_and_quiet() -> None:
    spec = load_yaml(ALERTS_TEST_YML)
    assert set(spec["rule_files"]) == {"alerts.yml", "recording.yml"}
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in spec["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
            for exp in check.get("exp_alerts") or []:
                assert exp["exp_labels"]["severity"], check["alertname"]
                assert set(exp["exp_annotations"]) == {"summary", "description"}, check["alertname"]
    assert fires == EXPECTED_ALERTS, f"never shown firing: {EXPECTED_ALERTS - fires}"
    assert quiet == EXPECTED_ALERTS, f"never shown quiet: {EXPECTED_ALERTS - quiet}"


def test_rules_query_only_contract_metrics() -> None:
    recorded = {r["record"] for r in rules(RECORDING_YML)}
    assert "rtserve:request_duration_seconds:p95_5m" in recorded
    for rule in rules(RECORDING_YML) + rules(ALERTS_YML):
        name = rule.get("alert") or rule["record"]
        assert unknown_metrics(rule["expr"]) == set(), name
        assert set(RECORDING_NAME.findall(rule["expr"])) <= recorded, name


# --- Grafana -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panel_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", []) if t.get("expr")]


def test_dashboard_metadata_and_variables(dashboard: dict[str, Any]) -> None:
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("model", "version"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${datasource}"
        assert variables[name]["definition"].startswith("label_values(")
        assert variables[name]["definition"].endswith(f", {name})")
        assert unknown_metrics(variables[name]["definition"]) == set()


def test_every_panel_queries_prometheus(dashboard: dict[str, Any]) -> None:
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        exprs = [t.get("expr", "").strip() for t in panel.get("targets", [])]
        assert exprs and all(exprs), f"panel {panel['title']!r} has a target without an expr"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_has_required_panels(dashboard: dict[str, Any]) -> None:
    titles = {p["title"] for p in dashboard["panels"]}
    assert REQUIRED_PANELS <= titles, f"missing panels: {REQUIRED_PANELS - titles}"


def test_dashboard_queries_only_contract_metrics(dashboard: dict[str, Any]) -> None:
    recorded = {r["record"] for r in rules(RECORDING_YML)}
    for title, expr in panel_exprs(dashboard):
        assert unknown_metrics(expr) == set(), f"{title}: {expr}"
        assert set(RECORDING_NAME.findall(expr)) <= recorded, f"{title} uses an unrecorded rule: {expr}"
    used = {m for _, expr in panel_exprs(dashboard) for m in METRIC_NAME.findall(expr)}
    used = {next((m[: -len(s)] for s in HISTOGRAM_SUFFIXES if m.endswith(s)), m) for m in used}
    missing = set(METRICS) - used - set(NOT_ON_DASHBOARD)
    assert not missing, f"metrics on no panel (put them on one, or say why not in NOT_ON_DASHBOARD): {sorted(missing)}"


def test_dashboard_queries_parse_as_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Each panel query, with Grafana's variables filled in, must be a valid PromQL expression."""
    rules_out = []
    for i, (_, expr) in enumerate(panel_exprs(dashboard)):
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        rules_out.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules_out}]}))
    output = promtool("check", "rules", str(path))
    assert f"SUCCESS: {len(rules_out)} rules found" in output, output
