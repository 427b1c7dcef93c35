"""serving.yaml against the saved routing state: what each model's routes are when the service starts.

serving.yaml says what a deployment serves; the saved state (Redis, or the state file) keeps what admins
changed since. Neither wins outright. Each document remembers what serving.yaml said when it was last
reconciled (`configured`), so a start tells a field the file changed (the file wins) from one only an
admin changed (the saved value stays):

- versions: every version serving.yaml lists is loaded. One it listed before and no longer lists is
  unloaded. Versions loaded at runtime, which it never listed, stay loaded.
- weights: the saved weights stay, unless serving.yaml's weights changed since they were saved, or they
  send traffic to a version that is no longer loaded; then serving.yaml's weights apply.
- experiment, shadow, running canary: kept while every version they name is still loaded and the weights
  are still the saved ones; otherwise stopped (the canary is marked aborted).
- models: a model serving.yaml lists is a configured model, even one first loaded at runtime. A model
  loaded at runtime that it does not list keeps its saved state as it is. A configured model it stopped
  listing is no longer served (its saved state is left, and read again if the file lists it again).

The worker that writes a merge logs each conflict once, with how it was resolved; the others then find
the state already merged. `rtserve route reset MODEL` returns a model to serving.yaml (`configured_routes`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from routing.document import CanaryDecision, Configured, ModelRoutes
from runners.settings import ServingConfig


def configured_routes(config: ServingConfig) -> dict[str, ModelRoutes]:
    """Routes from serving.yaml: what a fresh deployment starts with, before any admin change."""
    out = {}
    for name, cfg in config.models.items():
        weights = config.initial_weights(name)
        out[name] = ModelRoutes(loaded=list(cfg.versions), weights=weights,
                                configured=Configured(versions=list(cfg.versions), weights=weights))
    return out


def merger(
    configured: dict[str, ModelRoutes], notes: list[str], before: dict[str, ModelRoutes | None] | None = None
) -> Callable[[dict[str, ModelRoutes]], dict[str, ModelRoutes]]:
    """The store transaction's decision: every saved document (all of them) -> the ones to write.
    `notes` is refilled with the conflicts of the attempt that ran last (a transaction may be retried), and
    `before` with the saved documents it replaces."""
    before = {} if before is None else before

    def decide(saved: dict[str, ModelRoutes]) -> dict[str, ModelRoutes]:
        notes.clear()
        before.clear()
        out: dict[str, ModelRoutes] = {}
        for name, config in configured.items():
            doc = reconcile(name, saved.get(name), config, notes)
            if doc is not None:
                out[name] = doc
        for name, doc in saved.items():
            if name in configured or doc.origin == "runtime":
                continue
            if doc.configured is None or doc.configured.versions:
                notes.append(f"{name}: serving.yaml no longer lists it: not served (its saved routes are kept)")
                out[name] = doc.model_copy(update={"configured": Configured(versions=[], weights={})})
        before.update({name: saved.get(name) for name in out})
        return out

    return decide


def reconcile(name: str, saved: ModelRoutes | None, config: ModelRoutes, notes: list[str]) -> ModelRoutes | None:
    """The merged document for one configured model, or None when the saved one stands as it is."""
    if saved is None:
        return config if config.configured is not None else config.model_copy(update={
            "configured": Configured(versions=list(config.loaded), weights=dict(config.weights))})
    target = config.configured or Configured(versions=list(config.loaded), weights=dict(config.weights))
    r = saved.model_copy(deep=True)
    if saved.origin == "runtime":
        base = Configured(versions=[], weights={})
        notes.append(f"{name}: loaded at runtime, now listed in serving.yaml: a configured model from now on")
    else:  # a document from before `configured` was recorded: as if serving.yaml had said what it holds
        base = saved.configured or Configured(versions=list(saved.loaded), weights=dict(saved.weights))

    dropped = [v for v in r.loaded if v in base.versions and v not in target.versions]
    added = [v for v in target.versions if v not in r.loaded]
    r.loaded = list(target.versions) + [v for v in r.loaded if v not in target.versions and v not in dropped]
    if dropped:
        notes.append(f"{name}: serving.yaml no longer lists {dropped}: unloaded")
    if added:
        notes.append(f"{name}: serving.yaml lists {added}, which the saved state did not load: loaded")

    weights_replaced = False
    gone = sorted(v for v, w in r.weights.items() if w > 0 and v not in r.loaded)
    if target.weights != base.weights and r.weights != target.weights:
        notes.append(f"{name}: serving.yaml changed the weights to {target.weights} since the state was saved; "
                     f"they replace the saved {r.weights}")
        r.weights, weights_replaced = dict(target.weights), True
    elif gone:
        notes.append(f"{name}: the saved weights {r.weights} send traffic to {gone}, no longer loaded; "
                     f"serving.yaml's {target.weights} apply")
        r.weights, weights_replaced = dict(target.weights), True
    else:
        r.weights = {v: w for v, w in r.weights.items() if v in r.loaded}

    _stop_roles(name, r, weights_replaced, notes)
    r.origin, r.configured = "configuration", target
    same = r.model_dump(exclude={"revision"}) == saved.model_dump(exclude={"revision"})
    return None if same else r


def _stop_roles(name: str, r: ModelRoutes, weights_replaced: bool, notes: list[str]) -> None:
    """Experiment, shadow and running canary end when a version they name is gone or their weights were replaced."""
    loaded = set(r.loaded)
    if r.experiment is not None and (weights_replaced or not set(r.experiment.variants) <= loaded):
        notes.append(f"{name}: experiment {r.experiment.name} on {sorted(r.experiment.variants)} stopped "
                     "(a version it names is no longer loaded, or serving.yaml's weights replaced the saved ones)")
        r.experiment = None
    if r.shadow is not None and r.shadow.version not in loaded:
        notes.append(f"{name}: shadow to {r.shadow.version} cleared (no longer loaded)")
        r.shadow = None
    c = r.canary
    if c is not None and c.status == "running" and (weights_replaced or not {c.version, c.stable} <= loaded):
        reason = "serving.yaml changed the model's versions or weights since the canary started"
        notes.append(f"{name}: canary of {c.version} against {c.stable} aborted ({reason})")
        c.status = "aborted"
        c.decisions.append(CanaryDecision(at=time.time(), action="abort", step=c.step, weight=0, reason=reason, numbers={}))
        if r.shadow is not None and r.shadow.version == c.version:
            r.shadow = None
        if not weights_replaced and c.stable in loaded:
            r.weights = {c.stable: 100.0}
