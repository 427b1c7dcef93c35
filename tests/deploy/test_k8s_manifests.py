"""The Kubernetes manifests in deploy/k8s/: rendered by kubectl kustomize, validated, and checked
against what the service needs (probes, writable paths, Secrets) and the numbers they are sized from.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.config import ServerSettings
from deploy.k8s import generate
from deploy.k8s.validate import KUSTOMIZATIONS, render, validate
from gateway.auth import AuthSettings
from gateway.tokens import mint
from loadtest.servers import free_port

ROOT = Path(__file__).resolve().parents[2]

# Measured by deploy/k8s/measure.py (RSS, MiB), the numbers the memory limits are derived from.
SUPERVISOR_MIB, WORKER_MIB, HEADROOM = 484, 565, 1.25
# Per worker at p99 under 10 ms (README, open loop) and the mean latency there (between p50 1.3 ms and p99 8.2 ms).
WORKER_RPS_AT_SLO, MEAN_LATENCY_S, SCALE_AT = 1600, 0.002, 0.8


def docs(kustomization: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [d for d in render(kustomization) if kind is None or d["kind"] == kind]


def one(kustomization: str, kind: str, name: str = "rtserve") -> dict[str, Any]:
    (doc,) = [d for d in docs(kustomization, kind) if d["metadata"]["name"] == name]
    return doc


def container(deployment: dict[str, Any], name: str = "rtserve") -> dict[str, Any]:
    (found,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return found


def env(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def mount_for(deployment: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The volume mount holding `path` (the longest mount path above it) and its volume."""
    mounts = [
        m
        for m in container(deployment)["volumeMounts"]
        if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert mounts, f"{path} is on no volume (the root file system is read-only)"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    return mount, volume


def pod_specs(kustomization: str) -> list[tuple[str, dict[str, Any]]]:
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in docs(kustomization, "Deployment")]


# --- rendering and validation ------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_manifest_is_valid(kustomization: str) -> None:
    outcomes = [validate(d) for d in render(kustomization)]
    print("\n".join(o.line() for o in outcomes))
    assert outcomes and [o.line() for o in outcomes if o.errors] == []


def test_validators_reject_a_misspelt_field() -> None:
    deployment = copy.deepcopy(one("base", "Deployment"))
    deployment["spec"]["replica"] = 3
    assert validate(deployment).errors
    rollout = copy.deepcopy(one("overlays/prod", "Rollout"))
    rollout["spec"]["strategy"]["canary"]["stepz"] = []
    assert validate(rollout).errors
    scaled = copy.deepcopy(one("overlays/prod", "ScaledObject"))
    scaled["spec"]["minReplicaCount"] = "six"
    assert validate(scaled).errors


# --- the pod ---------------------------------------------------------------------------------


def test_probes_ports_and_entrypoint() -> None:
    deployment = one("base", "Deployment")
    c = container(deployment)
    assert "command" not in c and "args" not in c, "the image's own entrypoint serves the Bento"
    assert env(c)["PORT"] == "3000"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 3000, "grpc": 3001, "metrics": 3002}
    assert env(c)["RTSERVE_METRICS_PORT"] == "3002"  # the container port named metrics is where the service serves them
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    budget = c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
    assert 90 <= budget <= 300, "the slowest measured start (83 s on busy shared cores) must fit, a hung one must not wait long"
    service = one("base", "Service")
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        "http": (3000, "http"),
        "grpc": (3001, "grpc"),
        "metrics": (3002, "metrics"),
    }


def test_termination_lets_requests_drain() -> None:
    spec = one("base", "Deployment")["spec"]["template"]["spec"]
    pre_stop = container(one("base", "Deployment"))["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # The longest a request may run: the service's traffic timeout (the setting's default, or the pod's value).
    default = ServerSettings.model_fields["traffic_timeout_s"].default
    traffic_timeout = float(env(container(one("base", "Deployment"))).get("RTSERVE_TRAFFIC_TIMEOUT_S", default))
    assert spec["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + traffic_timeout + 5


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_restricted_security_context(kustomization: str) -> None:
    for name, spec in pod_specs(kustomization):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name


def test_writable_only_where_the_service_writes() -> None:
    deployment = one("base", "Deployment")
    variables = env(container(deployment))
    writable = {
        variables["BENTOML_HOME"] + "/tmp",
        variables["BENTOML_HOME"] + "/prometheus_multiproc_dir",
        variables["BENTOML_HOME"] + "/models",  # the store deploys and pulls write (models/writable_store.py)
        "/tmp",
        variables["RTSERVE_ROUTING_STATE_FILE"],
    }
    used = set()
    for path in writable:
        mount, volume = mount_for(deployment, path)
        assert "emptyDir" in volume and not mount.get("readOnly"), path
        used.add(mount["name"])
    empty_dirs = {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"] if "emptyDir" in v}
    assert empty_dirs == used, f"writable volumes nothing writes to: {empty_dirs - used}"


def mebibytes(quantity: str) -> float:
    """A Kubernetes quantity in Mi/Gi (what these manifests use) as MiB."""
    number, unit = quantity[:-2], quantity[-2:]
    return float(number) * {"Mi": 1, "Gi": 1024}[unit]


def test_a_deploy_fits_the_pods_volumes() -> None:
    """An upload the service accepts fits /tmp twice (a tar and its extraction), and ephemeral-storage counts
    every emptyDir at its limit: a deploy is refused with 413, never a pod evicted."""
    deployment = one("base", "Deployment")
    c = container(deployment)
    _, tmp = mount_for(deployment, "/tmp")
    upload_mib = int(env(c)["RTSERVE_IMPORT_MAX_UPLOAD_BYTES"]) / 2**20
    assert 2 * upload_mib + 64 <= mebibytes(tmp["emptyDir"]["sizeLimit"])
    limits = sum(mebibytes(v["emptyDir"]["sizeLimit"]) for v in deployment["spec"]["template"]["spec"]["volumes"]
                 if "emptyDir" in v)
    for part in ("requests", "limits"):
        assert mebibytes(c["resources"][part]["ephemeral-storage"]) >= limits + 128, part


def test_secrets_are_mounted_and_referenced() -> None:
    deployment = one("base", "Deployment")
    variables = env(container(deployment))
    key_file = variables["RTSERVE_AUTH_HS256_SECRET_FILE"]
    mount, volume = mount_for(deployment, key_file)
    assert mount["readOnly"] is True
    assert volume["secret"]["secretName"] == "rtserve-auth"
    assert [i["path"] for i in volume["secret"]["items"]] == [key_file.removeprefix(mount["mountPath"] + "/")]
    assert variables["REDIS_URL"] == {"secretKeyRef": {"name": "rtserve-redis", "key": "url"}}
    assert variables["RTSERVE_AUTH_ENABLED"] == "true"


@pytest.mark.parametrize(("kustomization", "workers"), [("base", 1), ("overlays/prod", 2)])
def test_resources_follow_the_measured_footprint(kustomization: str, workers: int) -> None:
    c = container(one(kustomization, "Deployment"))
    assert env(c)["RTSERVE_WORKERS"] == str(workers)
    memory_mib = math.ceil((SUPERVISOR_MIB + WORKER_MIB * workers) * HEADROOM / 64) * 64
    expected = {"cpu": str(workers), "memory": f"{memory_mib}Mi"}
    for part in ("requests", "limits"):
        assert {k: c["resources"][part][k] for k in expected} == expected, part


@pytest.mark.parametrize("kustomization", ["base", "overlays/prod"])
def test_spread_over_nodes_and_zones(kustomization: str) -> None:
    deployment = one(kustomization, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    constraints = {c["topologyKey"]: c for c in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]}
    assert set(constraints) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert constraints["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
    revision_label = "rollouts-pod-template-hash" if kustomization == "overlays/prod" else "pod-template-hash"
    for c in constraints.values():
        assert c["labelSelector"]["matchLabels"].items() <= labels.items()
        assert c["matchLabelKeys"] == [revision_label]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_disruption_budgets_select_their_pods(kustomization: str) -> None:
    for pdb in docs(kustomization, "PodDisruptionBudget"):
        deployment = one(kustomization, "Deployment", pdb["metadata"]["name"])
        assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


# --- overlays ----------------------------------------------------------------------------------


def test_dev_runs_one_replica_with_its_own_redis() -> None:
    assert one("overlays/dev", "Deployment")["spec"]["replicas"] == 1
    redis = one("overlays/dev", "Service", "rtserve-redis")
    secrets = {s["metadata"]["name"]: s for s in docs("overlays/dev", "Secret")}
    deployment = one("overlays/dev", "Deployment")
    ref = env(container(deployment))["REDIS_URL"]["secretKeyRef"]
    url = base64.b64decode(secrets[ref["name"]]["data"][ref["key"]]).decode()
    assert url == f"redis://{redis['metadata']['name']}:{redis['spec']['ports'][0]['port']}/0"
    (auth,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert auth["secret"]["secretName"] in secrets


def test_prod_rollout_canary_steps_and_analysis() -> None:
    rollout = one("overlays/prod", "Rollout")
    deployment = one("overlays/prod", "Deployment")
    assert deployment["spec"]["replicas"] == 0, "the Rollout runs the pods"
    assert rollout["spec"]["workloadRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "rtserve",
        "scaleDown": "never",
    }
    assert rollout["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    steps = rollout["spec"]["strategy"]["canary"]["steps"]
    assert [s["setWeight"] for s in steps if "setWeight" in s] == [5, 25, 50, 100]
    assert all("pause" in after for before, after in itertools.pairwise(steps) if "setWeight" in before)
    analysis = rollout["spec"]["strategy"]["canary"]["analysis"]
    template = one("overlays/prod", "AnalysisTemplate", analysis["templates"][0]["templateName"])
    given = {a["name"]: a["valueFrom"]["podTemplateHashValue"] for a in analysis["args"]}
    assert given == {"stable-hash": "Stable", "canary-hash": "Latest"}
    required = {a["name"] for a in template["spec"]["args"] if "value" not in a}
    assert required == set(given)


def test_analysis_reads_the_label_the_service_monitor_scrapes() -> None:
    monitor = one("overlays/prod", "ServiceMonitor")
    (label,) = monitor["spec"]["podTargetLabels"]
    scraped_as = re.sub(r"[^a-zA-Z0-9_]", "_", label)  # how Prometheus names a copied pod label
    for metric in one("overlays/prod", "AnalysisTemplate", "rtserve-canary")["spec"]["metrics"]:
        query = metric["provider"]["prometheus"]["query"]
        assert f'{scraped_as}="{{{{args.canary-hash}}}}"' in query and f'{scraped_as}="{{{{args.stable-hash}}}}"' in query


@pytest.mark.parametrize(
    ("kustomization", "kind"), [("overlays/prod", "ScaledObject"), ("overlays/prod-hpa", "HorizontalPodAutoscaler")]
)
def test_one_autoscaler_targets_the_rollout(kustomization: str, kind: str) -> None:
    scalers = docs(kustomization, "ScaledObject") + docs(kustomization, "HorizontalPodAutoscaler")
    assert [s["kind"] for s in scalers] == [kind]
    (scaler,) = scalers
    assert scaler["spec"]["scaleTargetRef"] == {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "rtserve"}
    behavior = (
        scaler["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        if kind == "ScaledObject"
        else scaler["spec"]["behavior"]
    )
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300


def test_keda_threshold_is_littles_law_at_the_latency_target() -> None:
    workers = int(env(container(one("overlays/prod", "Deployment")))["RTSERVE_WORKERS"])
    (trigger,) = one("overlays/prod", "ScaledObject")["spec"]["triggers"]
    in_flight_at_slo = workers * WORKER_RPS_AT_SLO * MEAN_LATENCY_S
    assert float(trigger["metadata"]["threshold"]) == math.floor(in_flight_at_slo * SCALE_AT)
    assert trigger["metricType"] == "AverageValue"
    assert 'namespace="' + one("overlays/prod", "Deployment")["metadata"]["namespace"] + '"' in trigger["metadata"]["query"]


def test_queries_are_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not on PATH; `make system-deps` installs it (Debian package prometheus)"
    template = one("overlays/prod", "AnalysisTemplate", "rtserve-canary")
    queries = [
        re.sub(r"\{\{args\.[a-z-]+\}\}", "abc123", m["provider"]["prometheus"]["query"]) for m in template["spec"]["metrics"]
    ]
    queries.append(one("overlays/prod", "ScaledObject")["spec"]["triggers"][0]["metadata"]["query"])
    rules = [{"record": f"k8s:query_{i}", "expr": q} for i, q in enumerate(queries)]
    (tmp_path / "queries.yml").write_text(yaml.safe_dump({"groups": [{"name": "k8s", "rules": rules}]}))
    proc = subprocess.run(
        [promtool, "check", "rules", str(tmp_path / "queries.yml")], check=False, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and f"SUCCESS: {len(rules)} rules found" in proc.stdout, proc.stdout + proc.stderr


def test_gateway_canary_route_splits_between_two_tracks() -> None:
    (route,) = docs("overlays/gateway-canary", "HTTPRoute")
    backends = route["spec"]["rules"][0]["backendRefs"]
    assert sum(b["weight"] for b in backends) == 100
    services = {s["metadata"]["name"]: s for s in docs("overlays/gateway-canary", "Service")}
    tracks = set()
    for backend in backends:
        service = services[backend["name"]]
        assert backend["port"] in {p["port"] for p in service["spec"]["ports"]}
        tracks.add(service["spec"]["selector"]["rtserve.io/track"])
        pods = one("overlays/gateway-canary", "Deployment", backend["name"])["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pods.items()
    assert tracks == {"stable", "canary"}


# --- Prometheus Operator resources, generated ------------------------------------------------


def test_operator_resources_are_generated_from_deploy_prometheus() -> None:
    for path, text in generate.rendered().items():
        assert path.read_text() == text, f"{path.name} is stale: run python -m deploy.k8s.generate"
    rule = one("overlays/prod", "PrometheusRule")
    source = [
        g
        for name in ("recording.yml", "alerts.yml")
        for g in yaml.safe_load((ROOT / "deploy/prometheus" / name).read_text())["groups"]
    ]
    assert rule["spec"]["groups"] == source


def test_generator_check_fails_on_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for path, text in generate.rendered().items():
        (tmp_path / path.name).write_text(text)
    monkeypatch.setattr(generate, "OUT_DIR", tmp_path)
    monkeypatch.setattr("sys.argv", ["generate", "--check"])
    assert generate.main() == 0
    (tmp_path / "prometheusrule.yaml").write_text((tmp_path / "prometheusrule.yaml").read_text().replace("for: 5m", "for: 6m", 1))
    assert generate.main() == 1


def test_service_monitor_scrapes_the_service_like_prometheus_yml() -> None:
    monitor = one("overlays/prod", "ServiceMonitor")
    service = one("overlays/prod", "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    job = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())["scrape_configs"][0]
    # The metrics port, not the API's: the Service port the monitor names, the container port it targets,
    # the port the service is told to serve metrics on, and the port prometheus.yml scrapes are one.
    scraped = ports[endpoint["port"]]
    c = container(one("overlays/prod", "Deployment"))
    (target,) = [p["containerPort"] for p in c["ports"] if p["name"] == scraped["targetPort"]]
    assert str(target) == env(c)["RTSERVE_METRICS_PORT"] != env(c)["PORT"]
    assert [t for sc in job["static_configs"] for t in sc["targets"]] == [f"localhost:{scraped['port']}"]
    assert (endpoint["path"], endpoint["interval"]) == (job["metrics_path"], job["scrape_interval"])
    assert service["metadata"]["name"] == job["job_name"], (
        "the Operator names the job after the Service; alerts select job=rtserve"
    )


# --- the base Deployment under podman kube play ------------------------------------------------

PODMAN_ENV = {
    "CONTAINERS_CONF": str(ROOT / "deploy/container/containers.conf"),
    "CONTAINERS_STORAGE_CONF": str(ROOT / "deploy/container/storage.conf"),
}
IMAGE = os.environ.get("RTSERVE_K8S_IMAGE", "localhost/rtserve:latest")


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman", *args], env={**os.environ, **PODMAN_ENV}, check=False, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def played(tmp_path: Path) -> Iterator[tuple[str, str, str, str]]:
    """The base Deployment played by podman with the Bento's image: (url, the HMAC key the pod reads, container,
    the metrics port's URL)."""
    if not shutil.which("podman") or podman("image", "exists", IMAGE).returncode != 0:
        pytest.skip(
            f"needs podman and the Bento's image {IMAGE} (tests/deploy/test_container.py builds it; RTSERVE_K8S_IMAGE names another)"
        )
    suffix = uuid.uuid4().hex[:8]
    deployment = copy.deepcopy(one("base", "Deployment"))
    deployment["metadata"]["name"] = f"rtserve-k8s-{suffix}"
    deployment["spec"]["replicas"] = 1
    spec = deployment["spec"]["template"]["spec"]
    c = spec["containers"][0]
    port, metrics_port = free_port(), free_port()
    c.update(image=IMAGE, imagePullPolicy="Never")
    c["ports"][0]["hostPort"] = port
    (metrics,) = [p for p in c["ports"] if p["name"] == "metrics"]
    metrics["hostPort"] = metrics_port
    auth, redis = f"rtserve-auth-{suffix}", f"rtserve-redis-{suffix}"
    for volume in spec["volumes"]:
        if "secret" in volume:
            volume["secret"].update(secretName=auth, optional=False)  # podman 4.3 needs `optional` spelled out
    for variable in c["env"]:
        if variable["name"] == "REDIS_URL":
            variable["valueFrom"]["secretKeyRef"]["name"] = redis
    key = uuid.uuid4().hex + uuid.uuid4().hex
    # podman keeps Secrets in its own store: a volume reads a Kubernetes Secret, an env reference a flat map.
    (tmp_path / "auth.json").write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": auth},
                "data": {"hs256-secret": base64.b64encode(key.encode()).decode()},
            }
        )
    )
    (tmp_path / "redis.json").write_text(json.dumps({"url": ""}))  # no Redis: one replica, in-process state
    (tmp_path / "deployment.yaml").write_text(yaml.safe_dump(deployment))
    for name, path in ((auth, "auth.json"), (redis, "redis.json")):
        assert podman("secret", "create", name, str(tmp_path / path)).returncode == 0
    try:
        proc = podman("kube", "play", str(tmp_path / "deployment.yaml"), timeout=300)
        assert proc.returncode == 0, proc.stderr
        container_name = f"{deployment['metadata']['name']}-pod-0-rtserve"
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
        while not _ready(url):
            if time.monotonic() > deadline:
                logs = podman("logs", container_name)
                pytest.fail(f"not ready:\n{logs.stdout[-4000:]}\n{logs.stderr[-4000:]}")
            time.sleep(0.5)
        # podman 4.3 writes a secret volume's `data` value without decoding it; sign with what the pod reads.
        read = podman("exec", container_name, "cat", "/var/run/secrets/rtserve/auth/hs256-secret").stdout
        yield url, read, container_name, f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        podman("kube", "down", str(tmp_path / "deployment.yaml"))
        podman("secret", "rm", auth, redis)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_base_deployment_runs_under_podman_kube_play(played) -> None:
    url, key, container_name, metrics_url = played
    inspect = json.loads(podman("inspect", container_name).stdout)[0]
    assert inspect["HostConfig"]["ReadonlyRootfs"] is True
    assert inspect["Config"]["User"].startswith("1034")
    assert inspect["EffectiveCaps"] in (None, [])
    token = mint(AuthSettings(hs256_secret=key), subject="k8s", scopes="predict", tenant="acme", ttl_s=300)
    body = {"model": "seq-torch", "inputs": [[1, 2, 3]]}
    assert httpx.post(url + "/predict", json=body, timeout=10).status_code == 401
    answer = httpx.post(url + "/predict", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    # The worker's metric files live in BENTOML_HOME's emptyDir; the metrics port adds them up.
    assert 'rtserve_batches_total{model="seq-torch",version="v1"} 1.0' in httpx.get(metrics_url, timeout=10).text
    writes = podman("exec", container_name, "sh", "-c", "touch /home/bentoml/probe").stderr
    assert "Read-only file system" in writes
