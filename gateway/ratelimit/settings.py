"""Rate-limit settings, read from `RTSERVE_RATELIMIT_*` when the service starts: the default tier, named tiers, tenants."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.auth import TENANT_NAME

DEFAULT_TIER = "default"


class TierLimit(BaseModel):
    rate: float = Field(gt=0)
    """Sustained requests per second."""
    burst: int = Field(ge=1)
    """Requests a full bucket allows at once; also the `RateLimit-Limit` header."""


class RateLimitSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTSERVE_RATELIMIT_")

    enabled: bool = False
    """Off by default so a laptop `bentoml serve` needs no tenant setup."""
    rate: float = Field(1000.0, gt=0)
    """Requests per second per tenant of the default tier."""
    burst: int = Field(2000, ge=1)
    """Requests the default tier allows at once after being idle."""
    tiers: dict[str, TierLimit] = {}
    """Named tiers with their own limits, e.g. '{"gold": {"rate": 5000, "burst": 10000}}'."""
    tenants: dict[str, str] = {}
    """Tenant -> tier name; tenants not listed get the default tier."""
    fail_open: bool = True
    """Redis unreachable: allow (and count) every request, or refuse with 503."""
    redis_timeout_ms: float = Field(50.0, gt=0)
    """Longest wait for Redis before the request is decided as if Redis were down."""
    redis_backoff_s: float = Field(1.0, ge=0)
    """After a Redis failure, how long to decide without trying Redis, so an outage
    costs one timeout per this period rather than one per request."""
    key_prefix: str = "rtserve:rl:"
    """Prefix of the per-tenant Redis keys (key = prefix + tenant)."""
    lease_block: int = Field(64, ge=1)
    """Most tokens one Redis call leases to this worker for a tenant (capped at burst // 16),
    so a busy tenant costs one round trip per block rather than one per request."""
    lease_s: float = Field(0.05, gt=0)
    """How long leased tokens stay usable after Redis granted them; the limit may be exceeded
    by at most rate * lease_s over any window, so keep it short."""

    @model_validator(mode="after")
    def _tiers_exist(self) -> RateLimitSettings:
        if DEFAULT_TIER in self.tiers:
            raise ValueError(f"tier {DEFAULT_TIER!r} is reserved: set rate and burst instead")
        misnamed = sorted(t for t in self.tenants if not TENANT_NAME.fullmatch(t))
        if misnamed:
            raise ValueError(f"tenant names must be letters, digits and . _ @ - : {', '.join(misnamed)}")
        unknown = sorted({t for t in self.tenants.values() if t != DEFAULT_TIER and t not in self.tiers})
        if unknown:
            raise ValueError(f"tenants refer to undefined tiers: {', '.join(unknown)}")
        return self
