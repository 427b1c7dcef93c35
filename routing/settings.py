"""Routing settings (env prefix RTSERVE_ROUTING_), read when the service starts."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RoutingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTSERVE_ROUTING_")

    state_file: Path = Path(".rtserve/routes.json")
    """Route tables without Redis: survives restarts, shared by the workers of one machine."""
    redis_prefix: str = "rtserve:routes:"
    """Prefix of the routing keys (tables, revision, change channel, controller lease) in Redis."""
    sync_interval_s: float = Field(0.5, gt=0)
    """How often a worker checks the shared revision, besides pub/sub (a missed message costs at most this)."""
    controller_interval_s: float = Field(1.0, gt=0)
    """How often the canary controller looks at the numbers."""
    lease_ttl_s: float = Field(5.0, gt=0)
    """The controller lease expires this long after its holder stops renewing (e.g. it died)."""
    readiness_scope: Literal["configured", "all"] = "configured"
    """Which models /v2/health/ready answers for: those serving.yaml lists, or every model served, runtime-loaded
    ones included (then one broken runtime load takes every replica out of service)."""
    audit_max_entries: int = Field(10_000, ge=1)
    """Audit lines kept (a Redis stream under the routing prefix, or a JSON-lines file beside the state file)."""
    canary_steps: list[float] = [5, 25, 50, 100]
    """Default weight schedule of a canary, in percent."""
    canary_hold_s: float = Field(30.0, ge=0)
    """Default time each step is held before it may advance."""
    canary_min_requests: int = Field(1000, ge=0)
    """Default canary requests needed in a step before it may advance; at a 0.1 % error bound fewer
    than 1000 cannot tell a good version from a bad one."""
