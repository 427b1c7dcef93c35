"""Triton's model repository extension: an index of the versions in the model store, and loads and
unloads that answer once every worker of this replica has done them.

    repository = ModelRepository(admin, registry, WorkerStates(metrics_directory, registry), RepositorySettings())
    await repository.index(ready_only: bool = False) -> list[IndexEntry]
    await repository.load(name: str, versions: list[str] | None = None) -> list[str]
    await repository.unload(name: str, versions: list[str] | None) -> list[str]
    requested_versions(parameters: Mapping[str, Any] | None, *, load: bool) -> list[str] | None

`requested_versions` reads the versions out of a load or unload request's parameters (plain values:
the gRPC front end passes each ModelRepositoryParameter's set field); the REST front end renders the
index as Triton's JSON list, the gRPC front end fills RepositoryIndexResponse.

Loads and unloads change the shared routing state through the routing admin (routing/admin.py), so
every worker and replica follows (routing/sync.py: background load, drained unload). This replica's
workers each write their version states into the `rtserve_model_version_state` gauge, one Prometheus
multiprocess file per worker pid; a load returns when every live worker reports the version ready,
fails at once when one reports it failed, and answers 504 after `RTSERVE_REPOSITORY_WAIT_TIMEOUT_S`
(the change goes on; the index shows how far it got). An unload returns when no worker holds the version.

Where Triton unloads a whole model, a served model here keeps at least one version (its routes need
one): an unload names its versions. A load without versions loads those serving.yaml names.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import BadRequest, Conflict, LoadFailed, ModelNotFound, RepositoryTimeout, Unavailable, shown
from core.processes import pid_alive
from routing.admin import RoutingAdmin
from runners.registry import ModelRegistry, VersionState

STATE_METRIC = "rtserve_model_version_state"
WORKER_METRIC = "rtserve_worker_up"
"""Set by every worker when it starts: a worker that holds no model yet still counts in "every worker"."""
READY, UNAVAILABLE, LOADING = "READY", "UNAVAILABLE", "LOADING"


class RepositorySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTSERVE_REPOSITORY_")

    wait_timeout_s: float = Field(8.0, gt=0)
    """How long a load or unload waits for every worker before answering 504 (the change goes on).
    Keep it under the server's traffic timeout (RTSERVE_TRAFFIC_TIMEOUT_S, 10 s), which cancels the request."""
    poll_interval_s: float = Field(0.05, gt=0)
    """How often a waiting load or unload reads the workers' states."""
    max_load_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    """Largest load request: a REST body (files in base64) or a gRPC RepositoryModelLoad message (files as
    bytes). Apart from the inference body limit; `rtserve deploy` streams larger files to disk."""


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str
    state: str
    """READY (every worker serves it), LOADING, or UNAVAILABLE (in the store but not loaded, failed, unloading)."""
    reason: str
    """Why it is not READY; empty when it is."""


def requested_versions(parameters: Mapping[str, Any] | None, *, load: bool) -> list[str] | None:
    """The versions a load or unload request names; None when it names none.

    `{"version": "v2"}` names one. tritonclient's `load_model(name, config=...)` sends a model
    configuration as a JSON string in `config`: its `version_policy.specific.versions` (Triton's way of
    choosing versions) names them, `name` must be the model's. Unload's `unload_dependents` must be false:
    an ensemble's members are models of their own here. A load with files is pipeline/triton_files.py's."""
    params = dict(parameters or {})
    versions: list[str] | None = None
    if "version" in params:
        versions = [_version(params.pop("version"), "parameters.version")]
    if load and "config" in params:
        from_config = _config_versions(params.pop("config"))
        if versions is not None and from_config is not None and from_config != versions:
            raise BadRequest(f"parameters.version {shown(versions)} and the config's versions {shown(from_config)} differ")
        versions = versions or from_config
    if not load and params.pop("unload_dependents", False) is not False:
        raise BadRequest("unload_dependents is not supported: an ensemble's members are models of their own")
    if any(key.startswith("file:") for key in params):
        raise BadRequest("model files come with a load, with its config (file:<version>/<name>)")
    if params:
        allowed = "version, config" if load else "version, unload_dependents"
        raise BadRequest(f"unknown parameter(s) {shown(sorted(params))}; accepted: {allowed}")
    return versions


def _version(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise BadRequest(f"{where} must be a version name")
    return str(value)


def _config_versions(raw: Any) -> list[str] | None:
    try:  # orjson, not json: it refuses documents nested over 1024 deep, where json recurses until RecursionError
        config = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"parameters.config must be a model configuration in JSON ({exc})") from None
    if not isinstance(config, dict):
        raise BadRequest("parameters.config must be a JSON object")
    unknown = set(config) - {"name", "version_policy"}
    if unknown:
        raise BadRequest(f"parameters.config: only 'version_policy' (and 'name') can be set, not {shown(sorted(unknown))}")
    policy = config.get("version_policy")
    if policy is None:
        return None
    specific = policy.get("specific") if isinstance(policy, dict) and set(policy) == {"specific"} else None
    versions = specific.get("versions") if isinstance(specific, dict) else None
    if not isinstance(versions, list) or not versions:
        raise BadRequest('parameters.config: version_policy must be {"specific": {"versions": [...]}} with at least one version')
    return [_version(v, "parameters.config version_policy.specific.versions[]") for v in versions]


class WorkerStates:
    """Each live worker's version states, read from the state gauge's multiprocess files (one per worker pid)."""

    def __init__(self, directory: str | Path | None, registry: ModelRegistry) -> None:
        """`directory`: where every worker writes its metrics; None without metrics, then this worker alone answers."""
        self.directory = directory
        self.registry = registry

    def read(self) -> list[dict[tuple[str, str], str]]:
        """Per live worker, (model, version) -> state (loading, ready, draining, failed) of what it holds.

        A process counts as a worker once it has started (its metrics say so), whether or not it holds a model;
        dead workers' files are left out."""
        if self.directory is None:
            return [{(n, v): e.state.value for n in self.registry.names() for v, e in self.registry.versions(n).items()}]
        from prometheus_client.mmap_dict import MmapedDict

        workers = []
        for path in glob.glob(os.path.join(self.directory, "gauge_livemax_*.db")):
            pid = int(os.path.basename(path)[len("gauge_livemax_") : -len(".db")])
            if not pid_alive(pid):
                continue
            held: dict[tuple[str, str], str] = {}
            recorded = False
            try:
                values = MmapedDict.read_all_values_from_file(path)
            except FileNotFoundError:  # the worker went away between the listing and now
                continue
            for key, value, _, _ in values:
                metric, _, labels, _ = json.loads(key)
                recorded = recorded or metric in (WORKER_METRIC, STATE_METRIC)
                if metric == STATE_METRIC and value == 1:
                    held[labels["model"], labels["version"]] = labels["state"]
            if recorded:
                workers.append(held)
        return workers


def replica_state(states: list[str | None], wanted: bool, error: str | None = None) -> tuple[str, str]:
    """(state, reason) of a version across the workers (`states`: each worker's state, None where it holds none).

    `wanted`: the routing state lists it as loaded; `error`: this worker's load error, when it has one."""
    workers = len(states)
    failed = states.count(VersionState.FAILED.value)
    if failed:
        return UNAVAILABLE, f"failed to load in {failed} of {workers} workers" + (f": {error}" if error else "")
    ready = states.count(VersionState.READY.value)
    if wanted:
        return (READY, "") if workers and ready == workers else (LOADING, f"ready in {ready} of {workers} workers")
    held = workers - states.count(None)
    return (UNAVAILABLE, f"unloading in {held} of {workers} workers") if held else (UNAVAILABLE, "unloaded")


class ModelRepository:
    def __init__(
        self, admin: RoutingAdmin, registry: ModelRegistry, states: WorkerStates, settings: RepositorySettings
    ) -> None:
        self.admin = admin
        self.registry = registry
        self.states = states
        self.settings = settings

    async def index(self, ready_only: bool = False) -> list[IndexEntry]:
        """Every version of every served model: those in the model store, loaded or not, and those the routes load."""
        routes = await self.admin.store.get_all()
        workers = await asyncio.to_thread(self.states.read)
        entries = []
        for name in sorted(self.registry.names()):
            wanted = set(routes[name].loaded) if name in routes else set()
            held = self.registry.versions(name)
            stored = await asyncio.to_thread(_stored_versions, name)
            seen = {v for w in workers for n, v in w if n == name}
            for version in sorted(stored | wanted | seen | set(held)):
                entry = held.get(version)
                state, reason = replica_state([w.get((name, version)) for w in workers], version in wanted,
                                              entry.error if entry is not None else None)
                if not ready_only or state == READY:
                    entries.append(IndexEntry(name, version, state, reason))
        return entries

    async def load(self, name: str, versions: list[str] | None = None, wait_s: float | None = None,
                   audited: bool = True) -> list[str]:
        """Load `versions` (None: those serving.yaml names) in every worker; returns them once every worker serves them,
        or RepositoryTimeout after `wait_s` (default: RTSERVE_REPOSITORY_WAIT_TIMEOUT_S). `audited=False`: the
        caller (a deploy) writes the audit line."""
        if versions is None:
            configured = self.registry.config.models.get(name)
            if configured is None:
                raise ModelNotFound(f"model {shown(name)} is not served here")
            versions = list(configured.versions)
        for version in versions:
            await self.admin.load(name, version, audited)
        try:
            await self._wait(name, versions, self._loaded, wait_s)
        except LoadFailed:
            workers = await asyncio.to_thread(self.states.read)
            for version in versions:  # what failed leaves the routes, so no worker retries it on every restart
                if any(w.get((name, version)) == VersionState.FAILED.value for w in workers):
                    await self.admin.forget_failed(name, version)
            raise
        return versions

    async def unload(self, name: str, versions: list[str] | None) -> list[str]:
        """Unload `versions` (drained: in-flight requests finish); returns once no worker holds them."""
        if not versions:
            self.registry.versions(name)  # an unknown model is 404 before anything else
            raise Conflict(f"a served model keeps at least one version: name the version(s) of {shown(name)} to unload "
                           '(parameters {"version": "v1"}, or ?version=v1)')
        for version in versions:
            await self.admin.unload(name, version)
        await self._wait(name, versions, _gone)
        return versions

    def _loaded(self, name: str, version: str, states: list[str | None], last: bool = False) -> bool:
        """Whether every worker serves it; LoadFailed once one failed. The reason is this worker's error: when
        another worker failed first, this one's own attempt is awaited (until the `last` look) to tell why."""
        entry = self.registry.versions(name).get(version) if name in self.registry.names() else None  # a new model
        state, reason = replica_state(states, True, entry.error if entry is not None else None)
        if state == UNAVAILABLE:
            if not last and (entry is None or entry.state is VersionState.LOADING):
                return False
            raise LoadFailed(f"'{name}:{version}' {reason}")
        return state == READY

    async def _wait(
        self, name: str, versions: list[str], done: Callable[[str, str, list[str | None]], bool], wait_s: float | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        wait_s = wait_s if wait_s is not None else self.settings.wait_timeout_s
        deadline = loop.time() + wait_s
        while True:
            workers = await asyncio.to_thread(self.states.read)
            pending = [v for v in versions if not done(name, v, [w.get((name, v)) for w in workers])]
            if not pending:
                return
            if loop.time() >= deadline:
                if done == self._loaded:  # a failure seen while this worker still loaded is the answer
                    for v in pending:
                        self._loaded(name, v, [w.get((name, v)) for w in workers], last=True)
                raise RepositoryTimeout(
                    f"'{name}' version(s) {pending} not done in every worker after {wait_s:g} s; "
                    "it goes on in the background (see POST /v2/repository/index)"
                )
            await asyncio.sleep(self.settings.poll_interval_s)


def _gone(name: str, version: str, states: list[str | None]) -> bool:
    return all(s is None for s in states)


def _stored_versions(name: str) -> set[str]:
    import bentoml
    from bentoml.exceptions import NotFound as StoreNotFound

    try:
        return {m.tag.version for m in bentoml.models.list(name)}
    except StoreNotFound:
        return set()


def repository_unavailable() -> Unavailable:
    """What a repository call answers before the shared routing state has been reached."""
    return Unavailable("routing state is not available yet", headers={"Retry-After": "1"})
