"""The wiring: everything one worker process serves with, built once at start-up from the configuration.

This is the only module that knows every component; each component gets the few parts it uses.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from app.stats_exporter import StatsExporter
from core.threads import cap_threads
from frontends.parts import FrontendParts
from gateway.admission import Admission
from gateway.cache import PredictionCache
from gateway.settings import GatewaySettings, LimitSettings
from jobs.runner import JobRunner
from jobs.settings import JobSettings, StreamSettings
from jobs.store import LocalJobStore, RedisJobStore
from models.optimize.settings import OptimizeSettings
from models.remote import ObjectRepository
from models.retention import StoreSettings
from models.settings import ImportSettings
from models.writable_store import use_writable_store
from observability.health import BackgroundHealth
from observability.tracing import DISABLED, Tracer, setup_tracing
from pipeline.catalog import Catalog
from pipeline.dataplane import DataPlane
from pipeline.deploy import Deployer
from pipeline.optimize import Optimizer
from pipeline.repository import ModelRepository, RepositorySettings, WorkerStates
from pipeline.statistics import ModelStatistics
from routing.admin import RoutingAdmin
from routing.audit import AuditLog, FileAuditLog, RedisAuditLog
from routing.controller import CanaryController
from routing.lease import FileLease, RedisLease
from routing.reconcile import configured_routes
from routing.router import Router
from routing.settings import RoutingSettings
from routing.stats import ExperimentCounts, MetricsSnapshotSource
from routing.stores import FileStateStore, RedisStateStore
from routing.sync import RouteSync
from runners.registry import ModelRegistry
from runners.settings import ServingConfig

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from app.config import Config
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
        tracer: Tracer = DISABLED,
        jobs: JobSettings | None = None,
        stream: StreamSettings | None = None,
        remote: ObjectRepository | None = None,
    ) -> None:
        self.config = config
        self.open_paths = (gateway or GatewaySettings()).open_path_pattern()
        self.limits = limits or LimitSettings()
        self.admission = admission or Admission(None, None)
        self.cache = cache
        self.redis = redis
        self.metrics = metrics
        self.tracer = tracer
        self.remote = remote
        self.registry = ModelRegistry(config, metrics, tracer, remote)
        self.router = Router(configured_routes(config))
        self.loaded = threading.Event()
        self.draining = False  # set on SIGTERM (app/drain.py): not ready while in-flight requests finish
        self.health = BackgroundHealth(metrics)
        self.pipeline = DataPlane(
            registry=self.registry,
            router=self.router,
            admission=self.admission,
            limits=self.limits,
            cache=cache,
            metrics=metrics,
            tracer=tracer,
        )
        exporter = StatsExporter(self.admission, cache, redis, metrics) if metrics is not None else None
        self.parts = FrontendParts(
            pipeline=self.pipeline,
            catalog=Catalog(self.registry, self.router),
            limits=self.limits,
            health=self.health,
            is_ready=lambda: self.ready,
            readiness=lambda: self.readiness(),
            open_paths=self.open_paths,
            metrics=metrics,
            on_request=exporter.ensure_running if exporter is not None else None,
            before_scrape=exporter.sync if exporter is not None else None,
            statistics=ModelStatistics(self.registry, metrics.directory if metrics is not None else None),
        )
        self.exporter = exporter
        self.parts.stream = stream or StreamSettings()
        self.parts.jobs = self._jobs(jobs or JobSettings())
        self.sync: RouteSync | None = None
        self.controller: CanaryController | None = None
        self.preloading: asyncio.Task | None = None
        """The operator's frameworks being imported (RTSERVE_IMPORT_PRELOAD_FRAMEWORKS); kept so it is not collected."""
        self.routing_settings = RoutingSettings()
        self.repository_settings = RepositorySettings()
        self.import_settings = ImportSettings()
        self.optimize_settings = OptimizeSettings()
        self.store_settings = StoreSettings()

    def _jobs(self, settings: JobSettings) -> JobRunner | None:
        """Batch jobs on the shared state: Redis when there is one, else the machine's folder."""
        if not settings.enabled:
            return None
        from jobs.metrics import JobMetrics

        store = (RedisJobStore(self.redis, settings.redis_prefix, settings.retention_s) if self.redis is not None
                 else LocalJobStore(settings.state_dir, settings.retention_s))
        metrics = JobMetrics() if self.metrics is not None else None
        return JobRunner(self.pipeline, store, settings, metrics)

    @classmethod
    def from_config(cls, config: Config) -> Runtime:
        """The service's runtime, from the configuration validated at start-up."""
        use_writable_store()  # a served Bento's own store is read-only; deploys and pulls write theirs
        from gateway.access import Grants
        from gateway.auth import Authenticator
        from gateway.ratelimit import RateLimiter
        from observability.metrics import Metrics

        gateway = config.gateway
        redis = redis_client(gateway.redis_url) if gateway.redis_url else None
        if redis is None:
            log.info("no REDIS_URL: single-replica mode (rate limits, cache and routes are this machine's only)")
        tracer = setup_tracing(config.tracing)
        admission = Admission(
            Authenticator(config.auth) if config.auth.enabled else None,
            RateLimiter(config.ratelimit, redis) if config.ratelimit.enabled else None,
            tracer,
            Grants(config.access, config.ratelimit.tenants),
        )
        cache = PredictionCache(config.cache, redis) if config.cache.enabled else None
        metrics = Metrics(settings=config.metrics) if config.metrics.enabled else None
        runtime = cls(config.serving, limits=config.limits, admission=admission, cache=cache, redis=redis, metrics=metrics,
                      gateway=gateway, tracer=tracer, jobs=config.jobs, stream=config.stream,
                      remote=ObjectRepository.from_settings(config.model_repository))
        runtime.routing_settings = config.routing
        runtime.repository_settings = config.repository
        runtime.import_settings = config.imports
        runtime.optimize_settings = config.optimize
        runtime.store_settings = config.store
        return runtime

    def start(self) -> threading.Thread:
        """Load every configured model in the background, so liveness answers while models load."""
        thread = threading.Thread(target=self._load, name="model-loader", daemon=True)
        thread.start()
        return thread

    def _load(self) -> None:
        cap_threads(self.config.intra_op_threads)
        self.registry.load_configured()
        # What is alive now lives for the process: keep it out of every future collection.
        gc.collect()
        gc.freeze()
        self.loaded.set()

    async def start_routing(self) -> None:
        """Shared routes, admin operations and the canary controller, once the start-up models are loaded.

        Retries until the shared state answers (Redis may come up after the service)."""
        settings = self.routing_settings
        await asyncio.to_thread(self.loaded.wait)
        if self.redis is not None:
            store = RedisStateStore(self.redis, prefix=settings.redis_prefix)
            audit: AuditLog = RedisAuditLog(self.redis, settings.redis_prefix, settings.audit_max_entries)
            lease = RedisLease(self.redis, settings.redis_prefix + "controller", ttl_s=settings.lease_ttl_s,
                               holder_id=f"{os.getpid()}-{id(self)}")
        else:
            settings.state_file.parent.mkdir(parents=True, exist_ok=True)
            store = FileStateStore(settings.state_file)
            audit = FileAuditLog(settings.state_file.with_name(settings.state_file.stem + ".audit.jsonl"), settings.audit_max_entries)
            lease = FileLease(settings.state_file.with_name(settings.state_file.name + ".controller.lock"))
        stats = MetricsSnapshotSource(self.metrics.directory) if self.metrics is not None else None
        sync = RouteSync(store, self.router, self.registry, settings.sync_interval_s, metrics=self.metrics, health=self.health,
                         on_unloaded=self.cache.drop_model_version if self.cache is not None else None,
                         experiments=ExperimentCounts(stats) if stats is not None else None, audit=audit)
        while True:
            try:
                await sync.start(configured_routes(self.config))
                break
            except Exception as exc:  # noqa: BLE001 - keep serving the configured routes meanwhile
                log.warning("routing state unavailable (%s: %s); retrying", type(exc).__name__, exc)
                await asyncio.sleep(1.0)
        self.sync = sync
        defaults = settings.model_dump(include={"canary_steps", "canary_hold_s", "canary_min_requests"})
        self.parts.admin = RoutingAdmin(store, self.registry, defaults, stats, audit, self.store_settings)
        states = WorkerStates(self.metrics.directory if self.metrics is not None else None, self.registry)
        self.parts.repository = ModelRepository(self.parts.admin, self.registry, states, self.repository_settings)
        self.parts.deployer = Deployer(self.parts.repository, self.import_settings, self.remote, self.store_settings)
        if self.import_settings.preload_frameworks or self.import_settings.probe_warm_frameworks:
            self.preloading = asyncio.create_task(self.parts.deployer.preload())
        self.parts.optimizer = Optimizer(self.parts.deployer, self.optimize_settings)
        if stats is not None:
            self.controller = CanaryController(store, lease, stats, self.router, settings.controller_interval_s,
                                               metrics=self.metrics, health=self.health, audit=audit)
            self.controller.start()

    async def stop_routing(self) -> None:
        if self.parts.jobs is not None:
            await self.parts.jobs.stop()
        if self.exporter is not None:
            self.exporter.stop()
        self.parts.metrics_current()  # the gateway's counters since the exporter's last copy
        if self.controller is not None:
            await self.controller.stop()
        if self.sync is not None:
            await self.sync.stop()

    def drain(self) -> None:
        self.draining = True

    @property
    def ready(self) -> bool:
        return self.readiness()[0]

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, why not). Strict, as Triton's: not ready while a model has traffic that no ready version
        can take, or a version serving.yaml lists is not ready. Over the configured models, or every model
        served (runtime ones too) when RTSERVE_ROUTING_READINESS_SCOPE=all."""
        if self.draining:
            return False, {"server": "draining"}
        if not self.loaded.is_set():
            return False, {"server": "loading the configured models"}
        names = self.registry.names() if self.routing_settings.readiness_scope == "all" else list(self.config.models)
        models = {name: why for name in sorted(names) if (why := self.parts.catalog.why_not_ready(name)) is not None}
        return not models, ({"models": models} if models else {})
