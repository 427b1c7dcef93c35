"""Everything one worker process serves with, wired once at start-up: models, routes, gateway."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.admission import Admission
from gateway.cache import PredictionCache, cache_key, version_token
from gateway.settings import GatewaySettings, LimitSettings
from gateway.validate import check_inputs
from observability.context import current
from observability.metrics import UNKNOWN
from routing.router import Router
from routing.table import RouteTable
from runners.batcher import Outputs
from runners.registry import LoadedVersion, ModelRegistry
from runners.settings import ServingConfig, load_config

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from observability.metrics import Metrics

log = logging.getLogger(__name__)


def redis_client(url: str) -> Redis:
    """One client per worker; callers bound each call with their own short timeouts, so no retries here."""
    from redis.asyncio import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=2.0, retry=Retry(NoBackoff(), 0))


class Runtime:
    def __init__(
        self,
        config: ServingConfig,
        *,
        limits: LimitSettings | None = None,
        admission: Admission | None = None,
        cache: PredictionCache | None = None,
        redis: Redis | None = None,
        metrics: Metrics | None = None,
        gateway: GatewaySettings | None = None,
    ) -> None:
        self.config = config
        self.open_paths = (gateway or GatewaySettings()).open_path_pattern()
        self.limits = limits or LimitSettings()
        self.admission = admission or Admission(None, None)
        self.cache = cache
        self.redis = redis
        self.metrics = metrics
        self.registry = ModelRegistry(config, metrics)
        self.router = Router({name: RouteTable(config.initial_weights(name), salt=name) for name in config.models})
        self.loaded = threading.Event()

    @classmethod
    def from_environment(cls) -> Runtime:
        """The service's runtime: every setting from serving.yaml and the environment."""
        from gateway.auth import Authenticator, AuthSettings
        from gateway.cache import CacheSettings
        from gateway.ratelimit import RateLimiter, RateLimitSettings
        from observability.metrics import Metrics

        gateway = GatewaySettings()
        redis = redis_client(gateway.redis_url) if gateway.redis_url else None
        auth_settings, limit_settings, cache_settings = AuthSettings(), RateLimitSettings(), CacheSettings()
        admission = Admission(
            Authenticator(auth_settings) if auth_settings.enabled else None,
            RateLimiter(limit_settings, redis) if limit_settings.enabled else None,
        )
        cache = PredictionCache(cache_settings, redis) if cache_settings.enabled else None
        return cls(load_config(), admission=admission, cache=cache, redis=redis, metrics=Metrics(), gateway=gateway)

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
        self,
        entry: LoadedVersion,
        inputs: dict[str, tuple[str, np.ndarray]],
        *,
        deadline: float | None = None,
        use_cache: bool = True,
    ) -> tuple[Outputs, bool]:
        """Validate against the version's signature, then the cache, else its batcher; True when cached."""
        rows = check_inputs(entry.runner.signature, inputs, self.limits)
        if self.cache is None:
            return await entry.batcher.submit(rows, deadline), False
        key = cache_key(entry.name, version_token(entry.version, entry.generation), rows)
        if not use_cache:  # the client asked for a fresh answer; it still refreshes the cache
            outputs = await entry.batcher.submit(rows, deadline)
            await self.cache.put(key, outputs)
            return outputs, False
        return await self.cache.get_or_compute(key, lambda: entry.batcher.submit(rows, deadline))

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
