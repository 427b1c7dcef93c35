"""Everything one worker process serves with, wired once at start-up: models, routes, gateway."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.admission import Admission
from gateway.cache import PredictionCache, cache_key, version_token
from gateway.errors import NotFound
from gateway.settings import GatewaySettings, LimitSettings
from gateway.validate import check_inputs
from observability.context import current
from observability.metrics import UNKNOWN
from observability.tracing import DISABLED, Tracer, TracingSettings, setup_tracing
from routing.admin import RoutingAdmin
from routing.controller import CanaryController
from routing.router import Router
from routing.settings import RoutingSettings
from routing.shadow import ShadowMirror
from routing.state import FileLease, FileStateStore, ModelRoutes, RedisLease, RedisStateStore
from routing.stats import MetricsSnapshotSource
from routing.sync import RouteSync
from runners.batcher import Outputs
from runners.registry import LoadedVersion, ModelRegistry, VersionState
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


def default_routes(config: ServingConfig) -> dict[str, ModelRoutes]:
    """Routes from serving.yaml: what a fresh deployment starts with, before any admin change."""
    return {
        name: ModelRoutes(loaded=list(cfg.versions), weights=config.initial_weights(name))
        for name, cfg in config.models.items()
    }


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
        tracer: Tracer = DISABLED,
    ) -> None:
        self.config = config
        self.open_paths = (gateway or GatewaySettings()).open_path_pattern()
        self.limits = limits or LimitSettings()
        self.admission = admission or Admission(None, None)
        self.cache = cache
        self.redis = redis
        self.metrics = metrics
        self.tracer = tracer
        self.registry = ModelRegistry(config, metrics, tracer)
        self.router = Router(default_routes(config))
        self.loaded = threading.Event()
        self.shadow = ShadowMirror(self)
        self.admin: RoutingAdmin | None = None  # set by start_routing, once the shared state is reachable
        self.sync: RouteSync | None = None
        self.controller: CanaryController | None = None

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
        tracer = setup_tracing(TracingSettings())
        admission = Admission(
            Authenticator(auth_settings) if auth_settings.enabled else None,
            RateLimiter(limit_settings, redis) if limit_settings.enabled else None,
            tracer,
        )
        cache = PredictionCache(cache_settings, redis) if cache_settings.enabled else None
        return cls(load_config(), admission=admission, cache=cache, redis=redis, metrics=Metrics() if gateway.metrics_enabled else None, gateway=gateway, tracer=tracer)

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

    async def start_routing(self, settings: RoutingSettings | None = None) -> None:
        """Shared routes, admin operations and the canary controller, once the start-up models are loaded.

        Retries until the shared state answers (Redis may come up after the service)."""
        settings = settings or RoutingSettings()
        await asyncio.to_thread(self.loaded.wait)
        if self.redis is not None:
            store = RedisStateStore(self.redis, prefix=settings.redis_prefix)
            lease = RedisLease(self.redis, settings.redis_prefix + "controller", ttl_s=settings.lease_ttl_s, holder_id=f"{os.getpid()}-{id(self)}")
        else:
            settings.state_file.parent.mkdir(parents=True, exist_ok=True)
            store = FileStateStore(settings.state_file)
            lease = FileLease(settings.state_file.with_name(settings.state_file.name + ".controller.lock"))
        sync = RouteSync(self, store, settings.sync_interval_s)
        while True:
            try:
                await sync.start(default_routes(self.config))
                break
            except Exception as exc:  # noqa: BLE001 - keep serving the configured routes meanwhile
                log.warning("routing state unavailable (%s: %s); retrying", type(exc).__name__, exc)
                await asyncio.sleep(1.0)
        self.sync = sync
        self.admin = RoutingAdmin(store, self.registry, settings.model_dump(include={"canary_steps", "canary_hold_s", "canary_min_requests"}))
        if self.metrics is not None:
            source = MetricsSnapshotSource(self.metrics.directory)
            self.controller = CanaryController(self, store, lease, source, settings.controller_interval_s)
            self.controller.start()

    async def stop_routing(self) -> None:
        if self.controller is not None:
            await self.controller.stop()
        if self.sync is not None:
            await self.sync.stop()

    async def experiment_summary(self, name: str) -> dict[str, Any]:
        """Per variant of the running experiment: requests, errors, p50/p95, agreement with the control."""
        routes = self.router.routes(name)
        if routes.experiment is None:
            raise NotFound(f"no experiment on '{name}'")
        exp = routes.experiment
        snapshot = await asyncio.to_thread(MetricsSnapshotSource(self.metrics.directory).snapshot, name) if self.metrics else {}
        variants = {}
        for version, weight in exp.variants.items():
            w = snapshot.get(version)
            variants[version] = {
                "weight": weight,
                "control": version == exp.control,
                "requests": w.requests if w else 0,
                "errors": w.errors if w else 0,
                "p50_ms": w.quantile_ms(0.5) if w else None,
                "p95_ms": w.p95_ms() if w else None,
                "agreement_with_control": (1 - w.disagreement()) if w and w.disagreement() is not None else None,
            }
        return {"model": name, **exp.model_dump(mode="json"), "summary": variants}

    @property
    def ready(self) -> bool:
        return self.loaded.is_set() and self.registry.ready

    def resolve(self, name: str, version: str | None, user: str | None = None) -> LoadedVersion:
        """The version that answers: the one asked for, else the route's choice (or, while the chosen one
        is not ready in this worker yet, the heaviest-weighted one that is). Counts the request as active
        on it until `RequestLabels.release`."""
        labels = current()
        labels.model = name if name in self.config.models else UNKNOWN
        if version is None:
            version, labels.variant = self.router.route(name, user)
            versions = self.registry.versions(name)
            chosen = versions.get(version)
            if chosen is None or chosen.state is not VersionState.READY:
                ready = {v for v, e in versions.items() if e.state is VersionState.READY}
                version, labels.variant = self.router.fallback(name, ready) or version, "stable"
        entry = self.registry.serving(name, version)
        entry.active += 1
        labels.entry = entry
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
        """Validate against the version's signature, then the cache, else its batcher; True when cached.
        A configured fraction is mirrored to a shadow version afterwards, off the client's path."""
        rows = check_inputs(entry.runner.signature, inputs, self.limits)
        if self.cache is None:
            outputs, hit = await entry.batcher.submit(rows, deadline), False
        else:
            key = cache_key(entry.name, version_token(entry.version, entry.generation), rows)
            shared = self.cache.worth_sharing(entry.batcher.cost.expected(len(rows)))
            if use_cache:
                with self.tracer.span("cache") as span:
                    outputs, hit = await self.cache.get_or_compute(key, lambda: entry.batcher.submit(rows, deadline), shared)
                    span.set("cache.hit", hit)
            else:  # the client asked for a fresh answer; it still refreshes the cache
                outputs, hit = await entry.batcher.submit(rows, deadline), False
                await self.cache.put(key, outputs, shared)
        self.shadow.maybe_mirror(entry.name, entry.version, rows, outputs)
        return outputs, hit

    def deadline_after(self, milliseconds: float) -> float:
        return asyncio.get_running_loop().time() + milliseconds / 1000.0

    def model_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        """The Open Inference Protocol's model metadata for a model, or one version of it."""
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
        return doc
