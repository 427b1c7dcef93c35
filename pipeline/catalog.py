"""What is served: model metadata and readiness, the same answers for every front end."""

from __future__ import annotations

from typing import Any

from core.errors import NotFound, shown
from routing.router import Router
from runners.registry import ModelRegistry, VersionState


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

    def ready(self, name: str, version: str | None) -> bool:
        """One version ready to take requests, or any version of the model."""
        versions = self.registry.versions(name)
        if version is None:
            return any(v.state is VersionState.READY for v in versions.values())
        entry = versions.get(version)
        if entry is None:
            raise NotFound(f"model {shown(name)} has no version {shown(version)}")
        return entry.state is VersionState.READY
