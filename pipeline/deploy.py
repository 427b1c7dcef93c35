"""A user's model into the running replica: imported into the store, then loaded by every worker.

    deployer = Deployer(repository, ImportSettings())
    model = await deployer.deploy("iris", "v1", Path("/tmp/upload/iris.skops"), ImportOptions())

Every entry path ends here: `rtserve deploy` (the admin upload), Triton's repository load with files
(REST and gRPC), and the Python client. The import (checks, probe load in a throw-away subprocess, copy
into the store) runs off the event loop; the load goes through the routing state, so every worker of
the replica loads the version and a restart keeps it (a model serving.yaml does not list is a runtime
model). A version that fails to load in a worker leaves the store again, so the same name and version
can be deployed once the file is fixed; a model that was never served leaves no trace.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import bentoml

from core.errors import LoadFailed, RepositoryTimeout
from models import store
from models.importer import ImportOptions, import_model
from models.settings import ImportSettings
from pipeline.repository import ModelRepository

log = logging.getLogger(__name__)


class Deployer:
    def __init__(self, repository: ModelRepository, settings: ImportSettings) -> None:
        self.repository = repository
        self.settings = settings

    async def deploy(self, name: str, version: str, source: Path | str, options: ImportOptions) -> bentoml.Model:
        """NAME:VERSION from `source` (a file, a directory, or a BentoML store tag), served by every worker
        when this returns. Raises what the import refuses (4xx) or LoadFailed / RepositoryTimeout (5xx)."""
        model = await asyncio.to_thread(import_model, name, version, source, options, self.settings)
        try:
            await self.repository.load(name, [version])
        except LoadFailed:
            await asyncio.to_thread(_forget, str(model.tag))
            raise
        except RepositoryTimeout:
            log.warning("deploy %s: still loading in some worker; it goes on in the background", model.tag)
            raise
        return model


def _forget(tag: str) -> None:
    """A version no worker could load leaves the store (the routes already dropped it)."""
    try:
        store.delete(tag)
    except bentoml.exceptions.NotFound:
        pass
