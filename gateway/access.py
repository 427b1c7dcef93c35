"""What a caller may ask for beyond its scopes: which models, and how far up the priority queue.

Permissions belong to a tenant's tier (the tiers and the tenant -> tier assignment are the rate
limit's, `RTSERVE_RATELIMIT_TIERS` / `RTSERVE_RATELIMIT_TENANTS`) and, for models, to the token
too (its `models` claim): a model must be allowed by both. A refusal is 403 with one message for
every model, so it never tells whether the model exists.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import Forbidden

FORBIDDEN_MODEL = "this caller may not use this model"
"""The same words for a model that exists and one that does not."""


class TierAccess(BaseModel):
    top_priority: int = Field(0, ge=0, le=16)
    """The highest priority level (1 is the highest) this tier's requests may ask for; asking for a
    higher one is 403. 0: none above the model's default level (lower ones are always allowed)."""
    models: list[str] | None = None
    """The only models this tier's tenants may use (allow-list); unset: every model."""


class AccessSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTSERVE_ACCESS_")

    default: TierAccess = TierAccess()
    """Permissions of the default tier (tenants not assigned a tier), e.g. '{"top_priority": 0}'."""
    tiers: dict[str, TierAccess] = {}
    """Permissions of named rate-limit tiers, e.g. '{"gold": {"top_priority": 1}, "lab": {"models": ["digits-onnx"]}}';
    a tier not listed has the default tier's."""


class Grants:
    """Each tenant's permissions, looked up once per request from what was configured at start."""

    def __init__(self, settings: AccessSettings, tenants: dict[str, str]) -> None:
        def frozen(access: TierAccess) -> tuple[int, frozenset[str] | None]:
            return access.top_priority, frozenset(access.models) if access.models is not None else None

        self._default = frozen(settings.default)
        tiers = {name: frozen(access) for name, access in settings.tiers.items()}
        self._by_tenant = {tenant: tiers.get(tier, self._default) for tenant, tier in tenants.items()}

    def of(self, tenant: str) -> tuple[int, frozenset[str] | None]:
        """(top priority, allowed models or None for all) of a tenant's tier."""
        return self._by_tenant.get(tenant, self._default)


def allowed_models(tier: frozenset[str] | None, token: frozenset[str] | None) -> frozenset[str] | None:
    """Models both the tier and the token allow; None when neither limits them."""
    if tier is None:
        return token
    return tier if token is None else tier & token


def check_model(allowed: frozenset[str] | None, model: str) -> None:
    if allowed is not None and model not in allowed:
        raise Forbidden(FORBIDDEN_MODEL)


def check_priority(top_priority: int, priority: int, default_level: int) -> None:
    """403 for a priority above both the model's default level and the tier's top level (Triton: 1 is the highest)."""
    if 0 < priority < default_level and (top_priority == 0 or priority < top_priority):
        allowed = f"level {top_priority} at the highest" if top_priority else "no level above the default"
        raise Forbidden(f"priority {priority} is not allowed for this tenant ({allowed})")
