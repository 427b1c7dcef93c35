"""The service's whole configuration, read and validated once when the service starts.

`serving.yaml` (models, batching) and every concern's environment settings are checked
together before any worker starts: BentoML respawns a worker that fails in its constructor,
so a mistake found there would loop instead of stopping. A problem becomes one `ConfigError`
line naming where it is (the file or the environment variable), the field and what is wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.drain import DrainSettings
from app.front_door import LoopSettings
from frontends.grpc.settings import GrpcSettings
from gateway.access import AccessSettings
from gateway.auth import Authenticator, AuthSettings
from gateway.cache import CacheSettings
from gateway.ratelimit import RateLimitSettings
from gateway.settings import GatewaySettings, LimitSettings
from gateway.tls import TlsSettings
from jobs.settings import JobSettings, StreamSettings
from models.optimize.settings import OptimizeSettings
from models.remote import ModelRepositorySettings
from models.retention import StoreSettings
from models.settings import ImportSettings
from observability.logs import LogSettings
from observability.metrics import MetricsSettings
from observability.tracing import TracingSettings
from pipeline.repository import RepositorySettings
from routing.settings import RoutingSettings
from runners.settings import DEFAULT_CONFIG, ServingConfig


class ConfigError(Exception):
    """The configuration cannot be served; the message is the one line to show."""


class ServerSettings(BaseSettings):
    """What the service's declaration needs (service.py), read when `bentoml serve` or `bentoml build` imports
    it: no secrets, so a build needs none. Validated again with the rest of the configuration."""

    model_config = SettingsConfigDict(env_prefix="RTSERVE_")

    workers: int = Field(1, ge=1)
    """Worker processes of the API server; each loads every model."""
    traffic_timeout_s: float = Field(10.0, gt=0)
    """BentoML's request timeout: what its own stack serves (its probes), and with the front door off our
    paths too, streams included."""
    front_door_enabled: bool = True
    """Serve our HTTP paths in front of BentoML's middleware (app/front_door.py, about a third more
    throughput); off: through BentoML's supported `mount_asgi_app`, with its middleware."""


@dataclass(frozen=True)
class Config:
    serving: ServingConfig
    gateway: GatewaySettings
    limits: LimitSettings
    auth: AuthSettings
    ratelimit: RateLimitSettings
    cache: CacheSettings
    routing: RoutingSettings
    tracing: TracingSettings
    logs: LogSettings
    grpc: GrpcSettings
    jobs: JobSettings
    stream: StreamSettings
    repository: RepositorySettings = field(default_factory=RepositorySettings)
    imports: ImportSettings = field(default_factory=ImportSettings)
    optimize: OptimizeSettings = field(default_factory=OptimizeSettings)
    model_repository: ModelRepositorySettings = field(default_factory=ModelRepositorySettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    drain: DrainSettings = field(default_factory=DrainSettings)
    access: AccessSettings = field(default_factory=AccessSettings)
    loop: LoopSettings = field(default_factory=LoopSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)


def load_config() -> Config:
    """Every setting, validated; raises ConfigError on the first problem."""
    config = Config(
        serving=load_serving(Path(os.environ.get("RTSERVE_CONFIG") or DEFAULT_CONFIG)),
        gateway=_settings(GatewaySettings),
        limits=_settings(LimitSettings),
        auth=_settings(AuthSettings),
        ratelimit=_settings(RateLimitSettings),
        cache=_settings(CacheSettings),
        routing=_settings(RoutingSettings),
        tracing=_settings(TracingSettings),
        logs=_settings(LogSettings),
        repository=_settings(RepositorySettings),
        imports=_settings(ImportSettings),
        optimize=_settings(OptimizeSettings),
        model_repository=_settings(ModelRepositorySettings),
        store=_settings(StoreSettings),
        grpc=_settings(GrpcSettings),
        jobs=_settings(JobSettings),
        stream=_settings(StreamSettings),
        drain=_settings(DrainSettings),
        loop=_settings(LoopSettings),
        access=_settings(AccessSettings),
        server=load_server_settings(),
        tls=load_tls_settings(),
        metrics=_settings(MetricsSettings),
    )
    _check_auth(config.auth)
    _check_access(config.access, config.ratelimit)
    return config


def load_server_settings() -> ServerSettings:
    """The settings the service's declaration reads on import; raises ConfigError."""
    return _settings(ServerSettings)


def load_tls_settings() -> TlsSettings:
    """The certificate and key both ports serve TLS with, if any; read on import too (BentoML's `ssl`)."""
    return _settings(TlsSettings)


def load_serving(path: Path) -> ServingConfig:
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    try:
        return ServingConfig.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_first_problem(exc)}") from None


def _settings(cls: type[BaseSettings]) -> BaseSettings:
    try:
        return cls()
    except ValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "")
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err.get("loc") else "*"  # no field: a check across the class's fields
        raise ConfigError(f"environment {(prefix + field).upper()}: {err['msg']}") from None


def _check_auth(auth: AuthSettings) -> None:
    """Auth is on unless switched off on purpose, and on means a key to verify tokens with."""
    if not auth.enabled:
        return
    if not any((auth.hs256_secret, auth.hs256_secret_file, auth.hs256_keys_file, auth.public_keys_dir)):
        raise ConfigError(
            "authentication is on but no key is configured: set RTSERVE_AUTH_HS256_SECRET_FILE "
            "(or RTSERVE_AUTH_HS256_SECRET, RTSERVE_AUTH_HS256_KEYS_FILE, RTSERVE_AUTH_PUBLIC_KEYS_DIR), "
            "or RTSERVE_AUTH_ENABLED=false to serve without authentication"
        )
    try:
        Authenticator(auth)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"authentication keys: {exc}") from None


def _check_access(access: AccessSettings, ratelimit: RateLimitSettings) -> None:
    """Permissions name tiers that the rate limit defines (where tenants are assigned to them)."""
    unknown = sorted(set(access.tiers) - set(ratelimit.tiers))
    if unknown:
        raise ConfigError(f"environment RTSERVE_ACCESS_TIERS: tiers not defined in RTSERVE_RATELIMIT_TIERS: {', '.join(unknown)}")


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {err['msg']}" if where else err["msg"]
