"""A user's model into the running replica: imported into the store, then loaded by every worker.

    deployer = Deployer(repository, ImportSettings())
    model = await deployer.deploy("iris", "v1", Path("/tmp/upload/iris.skops"), ImportOptions())

Every entry path ends here: `rtserve deploy` (the admin upload), Triton's repository load with files
(REST and gRPC), and the Python client. The import (checks, probe load in a throw-away subprocess, copy
into the store) runs off the event loop; the load goes through the routing state, so every worker of
the replica loads the version and a restart keeps it (a model serving.yaml does not list is a runtime
model). With a model repository (RTSERVE_MODEL_REPOSITORY), the version is pushed there between the probe
and the load, so every other replica can pull it when the routes name it. A version that fails to load in a worker leaves the store again, so the same name and version
can be deployed once the file is fixed; a model that was never served leaves no trace.
Each deploy is one audit line (action `deploy`: who, the file, its format, the times), whatever its entry path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import bentoml

from core.errors import Conflict, LoadFailed, RepositoryTimeout, Unavailable
from models import store
from models.importer import ImportOptions, import_model
from models.probe import import_frameworks, start_fork_server
from models.remote import ObjectRepository
from models.remote.repository import Mismatch
from models.retention import StoreSettings, check_quota, size_of
from models.settings import ImportSettings
from pipeline.repository import ModelRepository
from routing.audit import record

log = logging.getLogger(__name__)


class Deployer:
    def __init__(self, repository: ModelRepository, settings: ImportSettings, remote: ObjectRepository | None = None,
                 store_settings: StoreSettings | None = None) -> None:
        self.repository = repository
        self.settings = settings
        self.remote = remote
        self.store_settings = store_settings or StoreSettings(keep_unserved_versions=None, quota_mb=None)

    async def deploy(
        self, name: str, version: str, source: Path | str, options: ImportOptions, timings: dict[str, float] | None = None,
        wait_s: float | None = None,
    ) -> bentoml.Model:
        """NAME:VERSION from `source` (a file, a directory, or a BentoML store tag), served by every worker
        when this returns. Raises what the import refuses (4xx, 507 past the store's quota) or LoadFailed /
        RepositoryTimeout (5xx). Once served, the model's oldest unserved versions may leave the store
        (models/retention.py). `timings`, when given, receives the seconds the import (probe and push included)
        and the load took; the load waits for every worker up to `wait_s` (default: the repository's wait, made
        for request deadlines)."""
        started = time.perf_counter()
        incoming = await asyncio.to_thread(_size, source)
        await asyncio.to_thread(check_quota, incoming, self.store_settings)
        model = await asyncio.to_thread(import_model, name, version, source, options, self.settings)
        if self.remote is not None:
            await self._push(str(model.tag))
        imported = time.perf_counter()
        if timings is not None:
            timings["import_s"] = imported - started
        admin = self.repository.admin
        before = await admin.store.get(name)
        meta = model.info.metadata
        what = (f"{version} from {meta.get('source', {}).get('name')} ({meta.get('format')}), "
                f"import {imported - started:.2f} s")
        try:
            await self.repository.load(name, [version], wait_s, audited=False)
        except LoadFailed as exc:
            await asyncio.to_thread(_forget, str(model.tag))
            await record(admin.audit, "deploy", name, before, await admin.store.get(name), f"{what}, not loaded: {exc.message}")
            raise
        except RepositoryTimeout:
            log.warning("deploy %s: still loading in some worker; it goes on in the background", model.tag)
            await record(admin.audit, "deploy", name, before, await admin.store.get(name), f"{what}, still loading")
            raise
        loaded = time.perf_counter() - imported
        if timings is not None:
            timings["load_s"] = loaded
        await record(admin.audit, "deploy", name, before, await admin.store.get(name), f"{what}, load {loaded:.2f} s")
        await admin.collect(name)
        return model

    async def preload(self) -> None:
        """The operator's `preload_frameworks` imported in this worker, and the probe's fork server started with
        them (and `probe_warm_frameworks` after, in the background), so no deploy waits for a framework's import
        in the probe. A failure is logged: the first deploy pays it then."""
        frameworks = self.settings.preload_frameworks
        try:
            await asyncio.to_thread(start_fork_server, frameworks, self.settings.probe_warm_frameworks)
            await asyncio.to_thread(import_frameworks, frameworks)
        except Exception as exc:  # noqa: BLE001 - serving goes on; the next deploy starts what is missing
            log.warning("preloading %s failed: %s: %s", frameworks, type(exc).__name__, exc)

    async def _push(self, tag: str) -> None:
        """Into the model repository before any worker loads it: a version the routes name must be there for
        every replica. A version that cannot be pushed leaves this store too, so the deploy can be retried."""
        assert self.remote is not None
        try:
            await asyncio.to_thread(self.remote.push, tag)
        except Mismatch as exc:
            await asyncio.to_thread(_forget, tag)
            raise Conflict(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - storage down or refusing: the deploy can be retried
            await asyncio.to_thread(_forget, tag)
            log.warning("deploy %s: push to %s failed: %s: %s", tag, self.remote.url, type(exc).__name__, exc)
            raise Unavailable(f"the model repository {self.remote.url} did not take {tag} "
                              f"({type(exc).__name__}: {exc}); deploy again once it answers",
                              headers={"Retry-After": "5"}) from None


def _size(source: Path | str) -> int:
    """Bytes a deploy brings into the store: its file or directory (a store tag is already there)."""
    path = Path(source)
    return size_of(path) if path.exists() else 0


def _forget(tag: str) -> None:
    """A version no worker could load leaves the store (the routes already dropped it)."""
    try:
        store.delete(tag)
    except bentoml.exceptions.NotFound:
        pass
