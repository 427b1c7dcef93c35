"""Everything one worker process serves with: models, routes and limits, wired once at start-up."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.settings import LimitSettings
from observability.context import current
from observability.metrics import UNKNOWN
from gateway.validate import check_inputs
from routing.router import Router
from routing.table import RouteTable
from runners.batcher import Outputs
from runners.registry import LoadedVersion, ModelRegistry
from runners.settings import ServingConfig, load_config

if TYPE_CHECKING:
    from observability.metrics import Metrics

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, config: ServingConfig, limits: LimitSettings | None = None, metrics: Metrics | None = None) -> None:
        self.config = config
        self.limits = limits or LimitSettings()
        self.metrics = metrics
        self.registry = ModelRegistry(config, metrics)
        self.router = Router({name: RouteTable(config.initial_weights(name), salt=name) for name in config.models})
        self.loaded = threading.Event()

    @classmethod
    def from_environment(cls) -> Runtime:
        from observability.metrics import Metrics

        return cls(load_config(), metrics=Metrics())

    def start(self) -> threading.Thread:
        """Load every configured model in the background, so liveness answers while models load."""
        thread = threading.Thread(target=self._load, name="model-loader", daemon=True)
        thread.start()
        return thread

    def _load(self) -> None:
        import torch

        torch.set_num_threads(self.config.torch_threads)
        self.registry.load_configured()
        # What is alive now lives for the process: keep it out of every future collection.
        gc.collect()
        gc.freeze()
        self.loaded.set()

    @property
    def ready(self) -> bool:
        return self.loaded.is_set() and self.registry.ready

    def resolve(self, name: str, version: str | None, user: str | None = None) -> LoadedVersion:
        labels = current()
        labels.model = name if name in self.config.models else UNKNOWN
        if version is None:
            version = self.router.resolve(name, user)
        entry = self.registry.serving(name, version)
        labels.version = entry.version
        return entry

    async def infer(
        self, entry: LoadedVersion, inputs: dict[str, tuple[str, np.ndarray]], *, deadline: float | None = None
    ) -> Outputs:
        """Validate against the resolved version's signature and run through its batcher."""
        rows = check_inputs(entry.runner.signature, inputs, self.limits)
        return await entry.batcher.submit(rows, deadline)

    def deadline_after(self, milliseconds: float) -> float:
        return asyncio.get_running_loop().time() + milliseconds / 1000.0

    def model_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        """The Open Inference Protocol's model metadata for a model, or one version of it."""
        versions = self.registry.versions(name)
        entry = self.registry.get(name, version) if version else self.registry.get(name, self.router.resolve(name))
        doc: dict[str, Any] = {
            "name": name,
            "versions": list(versions) if version is None else [entry.version],
            "platform": entry.runner.framework if entry.runner else "unknown",
        }
        if entry.runner is not None:
            doc["inputs"] = [s.describe() for s in entry.runner.signature.inputs]
            doc["outputs"] = [s.describe() for s in entry.runner.signature.outputs]
        return doc
