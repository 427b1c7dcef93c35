"""Admin operations on routes and loaded versions; the HTTP admin API and the CLI both call these.

Every change goes through the shared routing state (Redis or the local state file), so it
reaches every worker and replica; each worker then loads, drains or re-weights on its own
(routing/sync.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import Conflict, InvalidInput, ModelNotFound, NotFound, Unavailable, shown
from models import retention as store_retention
from models.retention import StoreSettings
from models.versions import version_problem
from routing.audit import AuditLog, record
from routing.document import Canary, CanaryDecision, CanaryThresholds, Experiment, ModelRoutes, Shadow
from routing.reconcile import configured_routes
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
        self,
        store: StateStore,
        registry: ModelRegistry,
        defaults: dict[str, Any],
        stats: MetricsSnapshotSource | None = None,
        audit: AuditLog | None = None,
        retention: StoreSettings | None = None,
    ) -> None:
        self.retention = retention or StoreSettings(keep_unserved_versions=None, quota_mb=None)  # what the store keeps
        self.audit = audit  # every change is recorded there, with who made it (routing/audit.py)
        self.store = store
        self.registry = registry
        self.defaults = defaults  # canary_steps, canary_hold_s, canary_min_requests
        self.stats = stats  # this machine's numbers per version, for experiment and canary status
        self.experiments = ExperimentCounts(stats) if stats is not None else None

    async def _update(self, name: str, change, action: str) -> ModelRoutes:
        """Apply `change` to a copy of the model's routes; the store validates and writes it atomically."""
        if name not in self.registry.names():
            raise ModelNotFound(f"model {shown(name)} is not served here")

        def apply(current: ModelRoutes | None) -> ModelRoutes:
            if current is None:
                raise ModelNotFound(f"model '{name}' has no routes")
            return change(current.model_copy(deep=True))

        return await self._write(name, apply, action)

    async def _write(self, name: str, apply, action: str | None) -> ModelRoutes:
        """The store's atomic update, then one audit line from the document it replaced to the one it wrote
        (none when `action` is None: the caller records the change as part of its own, larger one)."""
        before: list[ModelRoutes | None] = [None]

        def keeping(current: ModelRoutes | None) -> ModelRoutes:
            before[0] = current  # the last attempt's: a store retries `apply` when another writer came first
            return apply(current)

        try:
            written = await self.store.update(name, keeping)
        except ValidationError as exc:
            raise InvalidInput(_first_error(exc)) from None
        if action is not None:
            await record(self.audit, action, name, before[0], written)
        return written

    async def outcomes(self, name: str) -> dict[str, dict[str, float | None]]:
        """Per version, this machine's routed requests since start by outcome, and its latency: what canary status
        shows beside the decisions (the model's faults are judged, internal errors, client errors and shed requests
        are not; latency is judged on uncached requests, the p95 over every request is shown beside it)."""
        snapshot = await self._snapshot(name)
        return {
            version: {"requests": w.requests, "server_faults": w.errors, "client_errors": w.client_errors, "shed": w.shed,
                      "internal_errors": w.internal, "cache_hits": w.hits, "uncached_p95_ms": w.uncached().p95_ms(),
                      "p95_ms": w.p95_ms()}
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
                    "modes": list(e.modes), "waiting": e.waiting, "warning": e.warning}
                for v, e in self.registry.versions(name).items()
            }
            for v in (r.loaded if r else []):
                versions.setdefault(v, {"state": "loading", "load_seconds": None, "error": None, "active": 0})
            for v, source in (await asyncio.to_thread(_sources, name, list(versions))).items():
                versions[v]["source"] = source
            origin = r.origin if r is not None else ("configuration" if name in self.registry.config.models else "runtime")
            out[name] = {"versions": versions, **(r.model_dump(mode="json") if r else {}), "origin": origin}
        return out

    async def load(self, name: str, version: str, audited: bool = True) -> ModelRoutes:
        """Serve a version from now on in every worker. `audited=False`: a deploy, which records one line of its own."""
        import bentoml
        from bentoml.exceptions import BentoMLException

        if (problem := version_problem(version)) is not None:
            raise InvalidInput(f"version {shown(version)} {problem}")
        try:
            bentoml.models.get(f"{name}:{version}")
        except (BentoMLException, ValueError):
            remote = self.registry.remote  # a version deployed through another replica: every worker pulls it
            if remote is None:
                raise ModelNotFound(f"'{name}:{version}' is not in the model store") from None
            try:
                found = await asyncio.to_thread(remote.manifest, name, version)
            except Exception as exc:  # noqa: BLE001 - the storage is down or refuses: try again later
                raise Unavailable(f"the model repository {remote.url} did not answer ({type(exc).__name__})",
                                  headers={"Retry-After": "5"}) from None
            if found is None:
                raise ModelNotFound(f"'{name}:{version}' is not in the model store or {remote.url}") from None

        def change(r: ModelRoutes | None) -> ModelRoutes:
            if r is None:  # a model serving.yaml does not list: served from now on, kept by the saved state alone
                if name in self.registry.config.models:
                    raise ModelNotFound(f"model '{name}' has no routes yet")
                return ModelRoutes(loaded=[version], weights={version: 100.0}, origin="runtime")
            if r.origin == "configuration" and name not in self.registry.config.models:
                raise ModelNotFound(f"model '{name}' is not served here: serving.yaml no longer lists it")
            if version not in r.loaded:
                r.loaded.append(version)
            return r

        return await self._write(name, change, "load" if audited else None)

    async def replace(self, name: str, routes: ModelRoutes, action: str) -> ModelRoutes:
        """Write a model's whole document (a restore); the store validates it again and stamps its revision."""
        return await self._write(name, lambda current: routes.model_copy(deep=True), action)

    async def reset(self, name: str) -> ModelRoutes:
        """Back to serving.yaml: its versions and weights; experiment and shadow stopped, a running canary aborted.
        Versions loaded at runtime are unloaded (drained first)."""
        configured = configured_routes(self.registry.config).get(name)
        if configured is None:
            self.registry.versions(name)  # 404 for a model not served at all
            raise Conflict(f"model '{name}' was loaded at runtime: serving.yaml has no routes for it to return to")
        now = time.time()

        def change(r: ModelRoutes) -> ModelRoutes:
            c = r.canary
            if c is not None and c.status == "running":
                c.status = "aborted"
                c.decisions.append(CanaryDecision(at=now, action="abort", step=c.step, weight=0, numbers={},
                                                  reason="routes reset to serving.yaml"))
            return configured.model_copy(update={"canary": c})

        return await self._update(name, change, "reset")

    async def unload(self, name: str, version: str) -> ModelRoutes:
        """Drop a version from the routes. One that failed to load always goes: its canary is aborted, its
        experiment stopped, its shadow cleared and its weight handed to versions that can take it."""
        failed = self.failed(name, version)

        def change(r: ModelRoutes) -> ModelRoutes:
            if version not in r.loaded:
                raise ModelNotFound(f"model {shown(name)} has no version {shown(version)} loaded")
            if failed:
                return self._without_failed(name, r, version)
            if _in_use(r, version):
                raise Conflict(f"'{name}:{version}' is part of a running canary, experiment or shadow; stop it first")
            if r.weights.get(version, 0) > 0 and not any(w > 0 for v, w in r.weights.items() if v != version):
                raise Conflict(f"'{name}:{version}' takes all traffic; move the weight to another version first")
            r.loaded.remove(version)
            r.weights.pop(version, None)
            return r

        written = await self._update(name, change, "unload")
        await self.collect(name)
        return written

    async def collect(self, name: str) -> list[str]:
        """The model's unserved versions beyond the configured count leave the store (models/retention.py): never
        one the routes name (traffic, canary, shadow, experiment, loaded) or serving.yaml lists."""
        if self.retention.keep_unserved_versions is None:
            return []
        routes = await self.store.get(name)
        configured = self.registry.config.models.get(name)
        served = set(routes.loaded if routes is not None else ()) | set(configured.versions if configured is not None else ())
        removed = await asyncio.to_thread(store_retention.collect, name, served, self.retention)
        for tag in removed:
            await record(self.audit, "remove_version", name, None, None,
                         f"{tag}: unserved, beyond the newest {self.retention.keep_unserved_versions} kept")
        return removed

    async def forget_failed(self, name: str, version: str) -> None:
        """After a load failed: the version leaves the routes (it would fail again in every worker on every
        restart) unless serving.yaml lists it or it takes traffic, roles or weight (then an unload removes it)."""
        configured = self.registry.config.models.get(name)
        if configured is not None and version in configured.versions:
            return
        only: list[ModelRoutes | None] = [None]

        def alone(r: ModelRoutes | None) -> bool:
            """A model loaded at runtime whose one version failed goes altogether."""
            only[0] = r
            return r is not None and r.origin == "runtime" and r.loaded == [version] and not _in_use(r, version)

        if await self.store.remove(name, alone):
            await record(self.audit, "unload_failed", name, only[0], None)
            return

        def change(r: ModelRoutes | None) -> ModelRoutes:
            if r is None or version not in r.loaded or r.weights.get(version, 0) > 0 or _in_use(r, version):
                raise _Unchanged()
            r.loaded.remove(version)
            return r

        with contextlib.suppress(_Unchanged, InvalidInput):
            await self._write(name, change, "unload_failed")

    def failed(self, name: str, version: str) -> bool:
        entry = self.registry.versions(name).get(version) if name in self.registry.names() else None
        return entry is not None and entry.state is VersionState.FAILED

    def _without_failed(self, name: str, r: ModelRoutes, version: str) -> ModelRoutes:
        now = time.time()
        c = r.canary
        if c is not None and c.status == "running" and version in (c.version, c.stable):
            c.status = "aborted"
            c.decisions.append(CanaryDecision(at=now, action="abort", step=c.step, weight=0, numbers={},
                                              reason=f"{version} failed to load and was unloaded"))
        if r.experiment is not None and version in r.experiment.variants:
            r.experiment = None
        if r.shadow is not None and r.shadow.version == version:
            r.shadow = None
        r.loaded.remove(version)
        r.weights.pop(version, None)
        if c is not None and c.status == "aborted" and c.stable in r.loaded and c.stable != version:
            r.weights = {c.stable: 100.0}
        if not any(w > 0 for w in r.weights.values()):
            r.weights = self._heirs(name, r.loaded, version)
        return r

    def _heirs(self, name: str, loaded: list[str], version: str) -> dict[str, float]:
        """Who takes a failed version's traffic: serving.yaml's weights where they fit, else every loaded version
        that has not failed, in equal parts."""
        configured = self.registry.config.models.get(name)
        if configured is not None:
            weights = self.registry.config.initial_weights(name)
            if all(v in loaded and not self.failed(name, v) for v in weights):
                return weights
        heirs = [v for v in loaded if not self.failed(name, v)]
        if not heirs:
            raise Conflict(f"'{name}:{version}' failed to load and no other version of '{name}' can take its traffic; "
                           "load one, then unload this one")
        return {v: 100.0 / len(heirs) for v in heirs}

    async def set_weights(self, name: str, weights: dict[str, float]) -> ModelRoutes:
        self._require_ready(name, [v for v, w in weights.items() if w > 0])

        def change(r: ModelRoutes) -> ModelRoutes:
            if r.canary is not None and r.canary.status == "running":
                raise Conflict(f"a canary of '{name}' is running; abort it before setting weights by hand")
            r.weights = dict(weights)
            return r

        return await self._update(name, change, "weights")

    async def start_experiment(self, name: str, request: ExperimentRequest) -> ModelRoutes:
        variants = request.variants
        self._require_ready(name, list(variants))
        experiment_name = request.name or f"{name}-{int(time.time())}"

        def change(r: ModelRoutes) -> ModelRoutes:
            if r.canary is not None and r.canary.status == "running":
                raise Conflict(f"a canary of '{name}' to {r.canary.version} is running; its weights would not be the ones "
                               "served while an experiment splits users; abort it or let it finish first")
            r.experiment = Experiment(
                name=experiment_name,
                variants=variants,
                control=request.control or next(iter(variants)),
                salt=request.salt or experiment_name,
                mirror_fraction=request.mirror_fraction,
                started_at=time.time(),
            )
            return r

        return await self._update(name, change, "experiment_start")

    async def stop_experiment(self, name: str) -> ModelRoutes:
        def change(r: ModelRoutes) -> ModelRoutes:
            r.experiment = None
            return r

        return await self._update(name, change, "experiment_stop")

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
            if r.experiment is not None:
                raise Conflict(f"experiment '{r.experiment.name}' splits the users of '{name}'; a canary's weights would "
                               "not be the ones served. Stop the experiment first")
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

        return await self._update(name, change, "canary_start")

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

        return await self._update(name, change, "canary_abort")

    async def set_shadow(self, name: str, version: str | None, fraction: float) -> ModelRoutes:
        if version is not None:
            self._require_ready(name, [version])

        def change(r: ModelRoutes) -> ModelRoutes:
            r.shadow = Shadow(version=version, fraction=fraction) if version is not None else None
            return r

        return await self._update(name, change, "shadow")

    def _require_ready(self, name: str, versions: list[str]) -> None:
        """Traffic only goes to versions this worker has loaded and warmed; others still catch up within a second."""
        loaded = self.registry.versions(name)
        for v in versions:
            entry = loaded.get(v)
            if entry is None:
                raise Conflict(f"'{name}:{v}' is not loaded; load it first")
            if entry.state is not VersionState.READY:
                raise Conflict(f"'{name}:{v}' is {entry.state.value}, not ready")


def _sources(name: str, versions: list[str]) -> dict[str, dict[str, Any]]:
    """Where each version came from, as its import recorded it (origin: deploy, triton, bentoml, demo; the file)."""
    import bentoml
    from bentoml.exceptions import BentoMLException

    out = {}
    for v in versions:
        try:
            source = bentoml.models.get(f"{name}:{v}").info.metadata.get("source")
        except (BentoMLException, ValueError):
            continue
        if isinstance(source, dict):
            out[v] = source
    return out


def canary_weights(stable: str, canary: str, percent: float) -> dict[str, float]:
    return {stable: 100.0 - percent, canary: percent} if percent < 100 else {canary: 100.0}


def _in_use(r: ModelRoutes, version: str) -> bool:
    running = r.canary is not None and r.canary.status == "running" and version in (r.canary.version, r.canary.stable)
    in_experiment = r.experiment is not None and version in r.experiment.variants
    return running or in_experiment or (r.shadow is not None and r.shadow.version == version)


class _Unchanged(Exception):
    """Nothing to write."""


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {err['msg']}" if where else err["msg"]
