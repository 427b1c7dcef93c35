"""The route document: what every worker and replica must agree on about one model's routing.

Which versions are loaded, their weights, the experiment, the shadow and the canary, as one
pydantic document that a store keeps per model (see routing/stores.py). Every document is
validated whole, so a worker never routes to a version that is not loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _check_weights(weights: dict[str, float], what: str) -> None:
    if any(w < 0 for w in weights.values()):
        raise ValueError(f"{what} must not be negative: {weights}")
    if not any(w > 0 for w in weights.values()):
        raise ValueError(f"{what} need at least one positive weight: {weights}")


class Experiment(_Doc):
    """An A/B test: users are split across variants by a salted hash, so each user sticks to one."""

    name: str = Field(min_length=1)
    variants: dict[str, float]
    control: str
    salt: str
    mirror_fraction: float = Field(0.0, ge=0.0, le=1.0)
    """Share of control requests also sent to the other variants, answers discarded."""
    started_at: float

    @model_validator(mode="after")
    def _valid(self) -> Experiment:
        _check_weights(self.variants, "experiment variants")
        if self.control not in self.variants:
            raise ValueError(f"control '{self.control}' is not one of the variants {sorted(self.variants)}")
        return self


class Shadow(_Doc):
    """A version that sees a copy of live traffic; its answers are compared, never returned."""

    version: str
    fraction: float = Field(gt=0.0, le=1.0)


class CanaryThresholds(_Doc):
    """How much worse than stable a canary may be before it is rolled back."""

    max_error_rate_increase: float = Field(0.001, ge=0.0)
    max_p95_ratio: float = Field(1.2, gt=0.0)
    p95_slack_ms: float = Field(2.0, ge=0.0)
    """Absolute p95 allowance, so sub-millisecond noise on a fast model does not fail the ratio."""
    max_disagreement: float | None = Field(None, ge=0.0, le=1.0)


class CanaryDecision(_Doc):
    """One step of the controller's reasoning, kept in the document so any replica can show it."""

    at: float
    action: Literal["start", "advance", "hold", "promote", "rollback", "abort"]
    step: int = Field(ge=0)
    weight: float = Field(ge=0.0, le=100.0)
    """Canary traffic in percent when the decision was made."""
    reason: str
    numbers: dict[str, float] = {}


class Canary(_Doc):
    """A rollout that moves traffic from `stable` to `version` step by step, or back."""

    version: str
    stable: str
    steps: list[float] = Field(min_length=1)
    """Canary traffic in percent, increasing, each in (0, 100]."""
    step: int = Field(ge=0)
    step_started_at: float
    status: Literal["running", "promoted", "rolled_back", "aborted"]
    decisions: list[CanaryDecision] = []
    started_at: float
    hold_s: float = Field(ge=0.0)
    min_requests: int = Field(ge=0)
    thresholds: CanaryThresholds = CanaryThresholds()

    @model_validator(mode="after")
    def _valid(self) -> Canary:
        if self.version == self.stable:
            raise ValueError(f"canary and stable are the same version '{self.version}'")
        if any(not 0.0 < s <= 100.0 for s in self.steps):
            raise ValueError(f"canary steps must lie in (0, 100]: {self.steps}")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:])):
            raise ValueError(f"canary steps must increase: {self.steps}")
        if self.step >= len(self.steps):
            raise ValueError(f"canary step {self.step} is past the last of {len(self.steps)} steps")
        return self


class Configured(_Doc):
    """What serving.yaml said about a model when its document was last reconciled with it: a later start
    tells from this which fields the file changed since (those take the file's value) and which only an
    admin changed (those keep the saved value). See routing/reconcile.py."""

    versions: list[str]
    weights: dict[str, float]


class ModelRoutes(_Doc):
    """Everything about one model's routing that all workers must agree on."""

    loaded: list[str] = Field(min_length=1)
    weights: dict[str, float]
    experiment: Experiment | None = None
    shadow: Shadow | None = None
    canary: Canary | None = None
    origin: Literal["configuration", "runtime"] = "configuration"
    """Where the model came from: serving.yaml, or loaded at runtime (then only the saved state keeps it)."""
    configured: Configured | None = None
    """serving.yaml's versions and weights for the model at the last start; None for a runtime model."""
    revision: int = Field(0, ge=0)
    """The store's global revision when this document was last written; set by the store."""

    @model_validator(mode="after")
    def _valid(self) -> ModelRoutes:
        if len(set(self.loaded)) != len(self.loaded):
            raise ValueError(f"loaded versions repeat: {self.loaded}")
        _check_weights(self.weights, "weights")
        named = {f"weight '{v}'": v for v in self.weights}
        if self.experiment is not None:
            named |= {f"experiment variant '{v}'": v for v in self.experiment.variants}
        if self.shadow is not None:
            named[f"shadow '{self.shadow.version}'"] = self.shadow.version
        if self.canary is not None and self.canary.status == "running":  # a finished canary's versions may be gone
            named[f"canary '{self.canary.version}'"] = self.canary.version
            named[f"canary stable '{self.canary.stable}'"] = self.canary.stable
        unknown = sorted(what for what, v in named.items() if v not in self.loaded)
        if unknown:
            raise ValueError(f"not loaded ({self.loaded}): {', '.join(unknown)}")
        return self


def stamped(routes: ModelRoutes, revision: int) -> ModelRoutes:
    """Validated again on the way out: `model_copy` and in-place edits bypass validation."""
    return ModelRoutes.model_validate({**routes.model_dump(), "revision": revision})


Updater = Callable[[ModelRoutes | None], ModelRoutes]
