"""Admin operations on routes and loaded versions; the HTTP admin API and the CLI both call these.

Every change goes through the shared routing state (Redis or the local state file), so it
reaches every worker and replica; each worker then loads, drains or re-weights on its own
(routing/sync.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import Conflict, InvalidInput, ModelNotFound, NotFound, shown
from models.versions import version_problem
from routing.document import Canary, CanaryDecision, CanaryThresholds, Experiment, ModelRoutes, Shadow
from routing.stats import ExperimentCounts, MetricsSnapshotSource, VersionWindow
from routing.stores import StateStore
from runners.registry import ModelRegistry, VersionState


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ExperimentRequest(_Request):
    variants: dict[str, float] = Field(min_length=1)
    """version -> weight; users are split by these."""
    control: str | None = None
    """The variant the others are compared with; the first one when unset."""
    name: str | None = None
    salt: str | None = None
    mirror_fraction: float = Field(0.0, ge=0.0, le=1.0)


class CanaryRequest(_Request):
    version: str
    """The candidate."""
    stable: str | None = None
    """The version it is compared with; the heaviest-weighted one when unset."""
    steps: list[float] | None = Field(None, min_length=1)
    hold_s: float | None = Field(None, ge=0.0)
    min_requests: int | None = Field(None, ge=0)
    thresholds: CanaryThresholds | None = None
    mirror_fraction: float = Field(0.0, ge=0.0, le=1.0)


class RoutingAdmin:
    def __init__(
        self, store: StateStore, registry: ModelRegistry, defaults: dict[str, Any], stats: MetricsSnapshotSource | None = None
    ) -> None:
        self.store = store
        self.registry = registry
        self.defaults = defaults  # canary_steps, canary_hold_s, canary_min_requests
        self.stats = stats  # this machine's numbers per version, for experiment and canary status
        self.experiments = ExperimentCounts(stats) if stats is not None else None

    async def _update(self, name: str, change) -> ModelRoutes:
        """Apply `change` to a copy of the model's routes; the store validates and writes it atomically."""
        if name not in self.registry.names():
            raise ModelNotFound(f"model {shown(name)} is not served here")

        def apply(current: ModelRoutes | None) -> ModelRoutes:
            if current is None:
                raise ModelNotFound(f"model '{name}' has no routes")
            return change(current.model_copy(deep=True))

        try:
            return await self.store.update(name, apply)
        except ValidationError as exc:
            raise InvalidInput(_first_error(exc)) from None

    async def outcomes(self, name: str) -> dict[str, dict[str, int]]:
        """Per version, this machine's routed requests since start by outcome: what canary status shows
        beside the decisions (the model's faults are judged; internal errors, client errors and shed requests are not)."""
        snapshot = await self._snapshot(name)
        return {
            version: {"requests": w.requests, "server_faults": w.errors, "client_errors": w.client_errors, "shed": w.shed,
                      "internal_errors": w.internal}
            for version, w in sorted(snapshot.items())
        }

    async def experiment_summary(self, name: str) -> dict[str, Any]:
        """Per variant of the running experiment, since it started: requests, errors, p50/p95, agreement with the control."""
        routes = await self.store.get(name)
        if routes is None or routes.experiment is None:
            raise NotFound(f"no experiment on {shown(name)}")
        exp = routes.experiment
        snapshot = await asyncio.to_thread(self.experiments.since_start, name, exp) if self.experiments is not None else {}
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

    async def _snapshot(self, name: str) -> dict[str, VersionWindow]:
        return await asyncio.to_thread(self.stats.snapshot, name) if self.stats is not None else {}

    async def describe(self) -> dict[str, Any]:
        routes = await self.store.get_all()
        out: dict[str, Any] = {}
        for name in self.registry.names():
            r = routes.get(name)
            versions = {
                v: {"state": e.state.value, "load_seconds": e.load_seconds, "error": e.error, "active": e.active,
                    "modes": list(e.modes)}
                for v, e in self.registry.versions(name).items()
            }
            for v in (r.loaded if r else []):
                versions.setdefault(v, {"state": "loading", "load_seconds": None, "error": None, "active": 0})
            out[name] = {"versions": versions, **(r.model_dump(mode="json") if r else {})}
        return out

    async def load(self, name: str, version: str) -> ModelRoutes:
        import bentoml
        from bentoml.exceptions import BentoMLException

        if (problem := version_problem(version)) is not None:
            raise InvalidInput(f"version {shown(version)} {problem}")
        try:
            bentoml.models.get(f"{name}:{version}")
        except (BentoMLException, ValueError):
            raise ModelNotFound(f"'{name}:{version}' is not in the model store") from None

        def change(r: ModelRoutes) -> ModelRoutes:
            if version not in r.loaded:
                r.loaded.append(version)
            return r

        return await self._update(name, change)

    async def unload(self, name: str, version: str) -> ModelRoutes:
        def change(r: ModelRoutes) -> ModelRoutes:
            if version not in r.loaded:
                raise ModelNotFound(f"model {shown(name)} has no version {shown(version)} loaded")
            if _in_use(r, version):
                raise Conflict(f"'{name}:{version}' is part of a running canary, experiment or shadow; stop it first")
            if r.weights.get(version, 0) > 0 and not any(w > 0 for v, w in r.weights.items() if v != version):
                raise Conflict(f"'{name}:{version}' takes all traffic; move the weight to another version first")
            r.loaded.remove(version)
            r.weights.pop(version, None)
            return r

        return await self._update(name, change)

    async def set_weights(self, name: str, weights: dict[str, float]) -> ModelRoutes:
        self._require_ready(name, [v for v, w in weights.items() if w > 0])

        def change(r: ModelRoutes) -> ModelRoutes:
            if r.canary is not None and r.canary.status == "running":
                raise Conflict(f"a canary of '{name}' is running; abort it before setting weights by hand")
            r.weights = dict(weights)
            return r

        return await self._update(name, change)

    async def start_experiment(self, name: str, request: ExperimentRequest) -> ModelRoutes:
        variants = request.variants
        self._require_ready(name, list(variants))
        experiment_name = request.name or f"{name}-{int(time.time())}"

        def change(r: ModelRoutes) -> ModelRoutes:
            r.experiment = Experiment(
                name=experiment_name,
                variants=variants,
                control=request.control or next(iter(variants)),
                salt=request.salt or experiment_name,
                mirror_fraction=request.mirror_fraction,
                started_at=time.time(),
            )
            return r

        return await self._update(name, change)

    async def stop_experiment(self, name: str) -> ModelRoutes:
        def change(r: ModelRoutes) -> ModelRoutes:
            r.experiment = None
            return r

        return await self._update(name, change)

    async def start_canary(self, name: str, request: CanaryRequest) -> ModelRoutes:
        version = request.version
        self._require_ready(name, [version])
        now = time.time()
        steps = request.steps or self.defaults["canary_steps"]
        hold_s = request.hold_s if request.hold_s is not None else self.defaults["canary_hold_s"]
        min_requests = request.min_requests if request.min_requests is not None else self.defaults["canary_min_requests"]

        def change(r: ModelRoutes) -> ModelRoutes:
            if r.canary is not None and r.canary.status == "running":
                raise Conflict(f"a canary of '{name}' to {r.canary.version} is already running")
            stable = request.stable or max(r.weights, key=lambda v: r.weights[v])
            if stable == version:
                raise Conflict(f"'{version}' already takes the most traffic; a canary needs another stable version")
            r.canary = Canary(
                version=version,
                stable=stable,
                steps=steps,
                step=0,
                step_started_at=now,
                status="running",
                decisions=[CanaryDecision(at=now, action="start", step=0, weight=steps[0],
                                          reason=f"canary {version} against stable {stable}", numbers={})],
                started_at=now,
                hold_s=hold_s,
                min_requests=min_requests,
                thresholds=request.thresholds or CanaryThresholds(),
            )
            r.weights = canary_weights(stable, version, steps[0])
            if request.mirror_fraction > 0:
                r.shadow = Shadow(version=version, fraction=request.mirror_fraction)
            return r

        return await self._update(name, change)

    async def abort_canary(self, name: str) -> ModelRoutes:
        def change(r: ModelRoutes) -> ModelRoutes:
            c = r.canary
            if c is None or c.status != "running":
                raise Conflict(f"no canary of '{name}' is running")
            c.status = "aborted"
            c.decisions.append(CanaryDecision(at=time.time(), action="abort", step=c.step, weight=0,
                                              reason="aborted by an admin", numbers={}))
            r.weights = {c.stable: 100.0}
            if r.shadow is not None and r.shadow.version == c.version:
                r.shadow = None
            return r

        return await self._update(name, change)

    async def set_shadow(self, name: str, version: str | None, fraction: float) -> ModelRoutes:
        if version is not None:
            self._require_ready(name, [version])

        def change(r: ModelRoutes) -> ModelRoutes:
            r.shadow = Shadow(version=version, fraction=fraction) if version is not None else None
            return r

        return await self._update(name, change)

    def _require_ready(self, name: str, versions: list[str]) -> None:
        """Traffic only goes to versions this worker has loaded and warmed; others still catch up within a second."""
        loaded = self.registry.versions(name)
        for v in versions:
            entry = loaded.get(v)
            if entry is None:
                raise Conflict(f"'{name}:{v}' is not loaded; load it first")
            if entry.state is not VersionState.READY:
                raise Conflict(f"'{name}:{v}' is {entry.state.value}, not ready")


def canary_weights(stable: str, canary: str, percent: float) -> dict[str, float]:
    return {stable: 100.0 - percent, canary: percent} if percent < 100 else {canary: 100.0}


def _in_use(r: ModelRoutes, version: str) -> bool:
    running = r.canary is not None and r.canary.status == "running" and version in (r.canary.version, r.canary.stable)
    in_experiment = r.experiment is not None and version in r.experiment.variants
    return running or in_experiment or (r.shadow is not None and r.shadow.version == version)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {err['msg']}" if where else err["msg"]
