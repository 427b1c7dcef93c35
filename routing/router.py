"""This worker's view of the route tables, and the choice of a version for each request.

Tables are rebuilt from the shared routing state whenever it changes (see routing/sync.py);
choosing a version is a dict lookup and a bisect.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from core.errors import ModelNotFound, shown
from routing.document import ModelRoutes
from routing.table import RouteTable
from runners.registry import LoadedVersion, VersionState


@dataclass(frozen=True)
class Compiled:
    routes: ModelRoutes
    table: RouteTable
    experiment: RouteTable | None
    canary: str | None  # the version a running canary is moving traffic to


def compile_routes(name: str, routes: ModelRoutes) -> Compiled:
    exp = routes.experiment
    canary = routes.canary.version if routes.canary is not None and routes.canary.status == "running" else None
    return Compiled(
        routes=routes,
        table=RouteTable(routes.weights, salt=name),
        experiment=RouteTable(exp.variants, salt=exp.salt) if exp is not None else None,
        canary=canary,
    )


class Router:
    def __init__(self, routes: Mapping[str, ModelRoutes]) -> None:
        self._compiled: dict[str, Compiled] = {}
        self.apply(routes)

    def apply(self, routes: Mapping[str, ModelRoutes]) -> None:
        self._compiled = {**self._compiled, **{name: compile_routes(name, r) for name, r in routes.items()}}

    def forget(self, name: str) -> None:
        """A model loaded at runtime whose document was removed is no longer routed."""
        self._compiled = {n: c for n, c in self._compiled.items() if n != name}

    def routes(self, name: str) -> ModelRoutes:
        return self._get(name).routes

    def all_routes(self) -> dict[str, ModelRoutes]:
        return {name: c.routes for name, c in self._compiled.items()}

    def _get(self, name: str) -> Compiled:
        try:
            return self._compiled[name]
        except KeyError:
            raise ModelNotFound(f"model {shown(name)} is not served here") from None

    def route(self, name: str, user: str | None = None) -> tuple[str, str]:
        """(version, variant): an experiment assigns users sticky by hash; otherwise weights, at random."""
        compiled = self._get(name)
        if compiled.experiment is not None:
            return compiled.experiment.choose(user), "experiment"
        version = compiled.table.choose(None)
        return version, "canary" if version == compiled.canary else "stable"

    def choose(self, name: str, user: str | None, versions: Mapping[str, LoadedVersion]) -> tuple[str, str]:
        """(version, variant): the route's choice for this user, or, while that is not ready among this
        worker's `versions`, the fallback below (variant "stable"); the choice itself when none stands in."""
        version, variant = self.route(name, user)
        chosen = versions.get(version)
        if chosen is not None and chosen.state is VersionState.READY:
            return version, variant
        ready = {v for v, e in versions.items() if e.state is VersionState.READY}
        failed = chosen is not None and chosen.state is VersionState.FAILED
        return self.fallback(name, ready, failed) or version, "stable"

    def fallback(self, name: str, ready: set[str], failed: bool = False) -> str | None:
        """The heaviest-weighted version that is ready here, for when the chosen one is not (yet).

        While the chosen one loads, any ready version stands in; once it has `failed`, only a version that
        takes traffic already does: one given no weight on purpose is not made to take it, and the request
        answers 503 with the failure until an admin moves the weight."""
        weights = self._get(name).routes.weights
        candidates = [v for v in ready if weights.get(v, 0) > 0] or ([] if failed else sorted(ready))
        return max(candidates, key=lambda v: weights.get(v, 0)) if candidates else None

    def shadow(self, name: str) -> tuple[str, float] | None:
        """(candidate version, fraction) to mirror to: a configured shadow, else a running canary or experiment."""
        compiled = self._get(name)
        r = compiled.routes
        if r.shadow is not None:
            return r.shadow.version, r.shadow.fraction
        if r.experiment is not None and r.experiment.mirror_fraction > 0:
            others = [v for v in r.experiment.variants if v != r.experiment.control]
            return (random.choice(others), r.experiment.mirror_fraction) if others else None
        return None
