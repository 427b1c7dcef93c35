"""A stored version optimized into a new version, served by every worker with no traffic of its own.

    optimizer = Optimizer(deployer, OptimizeSettings())
    model, report = await optimizer.optimize("iris", "v1", "int8", sample=None)

The conversion and its measurement run in a throw-away subprocess with a time limit (`models.optimize`),
off the event loop, one at a time per worker. The result enters like any deploy, through the same
`Deployer` (import, probe load, model repository, load in every worker), as NAME:NEW (default
`<version>-<target>`) with the report in its metadata (`optimization`). It takes no traffic: the user
canaries it like any version (`rtserve canary start NAME NEW`). Refused (4xx, nothing stored) when no
converter knows the model, or when the result agrees with its source less than the bound.

AOTInductor packages (`--to compiled` of a torch.export program or a pickled module) hold native code. The
importer refuses them from any deploy; the optimizer may store them because it compiled them here, from a
version the operator let in, and only while the operator allows formats that run code
(RTSERVE_IMPORT_ALLOW_CODE_FORMATS), as it does for the source. The version's metadata records where it came
from (`source.origin: optimize`, `optimized_from`) and the package's SHA-256, checked before each load.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import bentoml

from core.errors import CodeFormatNotAllowed, Conflict, ModelRefused
from models import store
from models.importer import ImportOptions
from models.names import check_name
from models.optimize import Bounds, OptimizeSettings, check_supported, optimize, source_metadata
from models.versions import version_problem
from pipeline.deploy import Deployer


class Optimizer:
    def __init__(self, deployer: Deployer, settings: OptimizeSettings) -> None:
        self.deployer = deployer
        self.settings = settings
        self._one_at_a_time = asyncio.Lock()
        """A conversion takes the machine's cores for seconds to minutes: a worker runs one at a time."""

    async def optimize(self, name: str, version: str, target: str, new_version: str | None = None,
                       sample: Path | None = None, min_agreement: float | None = None, tolerance: float | None = None,
                       timings: dict[str, float] | None = None) -> tuple[bentoml.Model, dict[str, Any]]:
        """NAME:NEW made from NAME:VERSION and served by every worker (weight 0); the model and the report."""
        new_version = new_version or f"{version}-{target}"
        for kind, value in (("model name", name), ("version", version), ("version", new_version)):
            check_name(kind, value)
        if (problem := version_problem(new_version)) is not None:
            raise ModelRefused(f"version '{new_version}' {problem}")
        _, meta = await asyncio.to_thread(source_metadata, f"{name}:{version}")
        check_supported(target, meta["format"])
        if target == "compiled" and not self.deployer.settings.allow_code_formats:
            raise CodeFormatNotAllowed("--to compiled makes native code (or TorchScript), which this server serves only "
                                       "while the operator allows formats that run code (RTSERVE_IMPORT_ALLOW_CODE_FORMATS)")
        if await asyncio.to_thread(store.exists, f"{name}:{new_version}"):
            raise Conflict(f"{name}:{new_version} already exists; name another version (--version)")
        bounds = Bounds(self.settings.min_agreement if min_agreement is None else min_agreement,
                        self.settings.tolerance if tolerance is None else tolerance)
        folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="rtserve-optimize-"))
        out = folder / f"{name}-{version}-{target}"  # the version's recorded source name
        out.mkdir()
        try:
            async with self._one_at_a_time:
                report = await asyncio.to_thread(optimize, f"{name}:{version}", target, out, sample, bounds, self.settings)
            options = ImportOptions(allow_code=True, config=out / "model.yaml", origin="optimize", made_here=True,
                                    metadata={"optimization": report, "optimized_from": version})
            model = await self.deployer.deploy(name, new_version, out, options, timings,
                                               self.deployer.settings.load_wait_s)
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)
        return model, report
