"""What is served: model metadata, Triton's model config and readiness, the same answers for every front end."""

from __future__ import annotations

from typing import Any

from core.errors import ModelNotFound, NotFound, shown
from pipeline.triton_config import served_config
from routing.router import Router
from runners.registry import LoadedVersion, ModelRegistry, VersionState


class Catalog:
    def __init__(self, registry: ModelRegistry, router: Router) -> None:
        self.registry = registry
        self.router = router

    def metadata(self, name: str, version: str | None) -> dict[str, Any]:
        """The Open Inference Protocol's model metadata for a model (its routed version's signature), or one version."""
        versions = self.registry.versions(name)
        entry = self.registry.get(name, version) if version else self.registry.get(name, self.router.route(name)[0])
        doc: dict[str, Any] = {
            "name": name,
            "versions": list(versions) if version is None else [entry.version],
            "platform": entry.runner.framework if entry.runner else "unknown",
        }
        if entry.runner is not None:
            doc["inputs"] = [s.describe() for s in entry.runner.signature.inputs]
            doc["outputs"] = [s.describe() for s in entry.runner.signature.outputs]
            doc["parameters"] = {"modes": list(entry.modes)}
        return doc

    def config(self, name: str, version: str | None) -> dict[str, Any]:
        """Triton's JSON model config of a model (its routed version) or one version (pipeline/triton_config.py)."""
        entry = self.registry.get(name, version) if version else self.registry.get(name, self.router.route(name)[0])
        return served_config(entry)

    def ready(self, name: str, version: str | None) -> bool:
        """One version ready to take requests, or the model: a version that takes its traffic is ready."""
        versions = self.registry.versions(name)
        if version is None:
            return self.why_not_ready(name) is None
        entry = versions.get(version)
        if entry is None:
            raise NotFound(f"model {shown(name)} has no version {shown(version)}")
        return entry.state is VersionState.READY

    def why_not_ready(self, name: str) -> str | None:
        """Why the model cannot answer its traffic in this worker, or None when it can: no version that the
        routes (weights, or a running experiment's variants) give traffic is ready, or a version serving.yaml
        lists is not (Triton's strict readiness: every configured version loaded)."""
        try:
            routes = self.router.routes(name)
            versions = self.registry.versions(name)
        except ModelNotFound:
            return "not loaded in this worker yet"
        shares = routes.experiment.variants if routes.experiment is not None else routes.weights
        taking = sorted(v for v, w in shares.items() if w > 0)
        if not any(_ready(versions.get(v)) for v in taking):
            return "no version that takes its traffic is ready: " + "; ".join(_state(v, versions.get(v)) for v in taking)
        configured = sorted(v for v in self.registry.expected.get(name, ()) if not _ready(versions.get(v)))
        if configured:
            return "serving.yaml's " + "; ".join(_state(v, versions.get(v)) for v in configured)
        return None


def _ready(entry: LoadedVersion | None) -> bool:
    return entry is not None and entry.state is VersionState.READY


def _state(version: str, entry: LoadedVersion | None) -> str:
    if entry is None:
        return f"{version} is not loaded"
    if entry.state is VersionState.FAILED:
        return f"{version} failed to load ({entry.error})"
    if entry.waiting:
        return f"{version} is {entry.waiting}"
    return f"{version} is {entry.state.value}"
