"""`PUT /admin/models/{name}/versions/{version}` (scope admin): a user's model uploaded, imported and served.

The body is multipart/form-data (what `rtserve deploy` and app/client.py send):
    model    the model file, or a tar (.tar, .tar.gz, .tgz) of its folder        required
    config   a model.yaml (models/declared.py)                                   optional
    sample   a sample input, .npy (or .npz by input name)                         optional
    options  JSON: {"allow_code": false, "trust": ["TYPE", ...],
                    and at most one of "weight": W, "shadow": PCT, "canary": {"percent": PCT, ...}}

The upload goes to a temporary folder on disk (RTSERVE_IMPORT_MAX_UPLOAD_BYTES, not the inference body
limit), a tar is extracted safely (models/archive.py), then `Deployer.deploy` imports it with its probe
load and loads it in every worker. Without a routing option a new model takes all its traffic and a new
version of a served one takes none; `weight` gives it W % (the other versions share the rest in their
proportions), `shadow` mirrors PCT % of the model's requests to it, `canary` starts a canary at PCT %
followed by the canary steps above it (the other fields as `POST /admin/models/{name}/canary`).
The answer: the version's metadata (format, signature, outputs, sha256, memory, the batch settings its
model.yaml suggests), the import and load seconds, the routes, and a `warning` when its load found one call
costs more than its latency budget (runners/registry.py `over_budget`). The deployer writes the deploy's
one audit line (pipeline/deploy.py).

No request deadline applies: a probe load may take up to RTSERVE_IMPORT_PROBE_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import InvalidInput, Unavailable
from frontends.admin_api import admin_route
from frontends.asgi import send_response
from frontends.parts import FrontendParts
from frontends.route_table import HttpRequest
from frontends.upload import receive_form
from models.archive import extract, is_archive, stem
from models.importer import ImportOptions
from models.names import check_name
from routing.admin import CanaryRequest, RoutingAdmin

SHOWN_METADATA = ("format", "framework", "task", "inputs", "outputs", "class_names", "sha256", "memory_mb", "source",
                  "trusted_by_deploy", "batching", "batch_settings", "modes")
"""What the answer shows of the version's metadata."""


class CanaryOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    percent: float = Field(gt=0.0, le=100.0)
    """The first step; the canary steps above it follow (`steps`, else the server's)."""
    stable: str | None = None
    steps: list[float] | None = Field(None, min_length=1)
    hold_s: float | None = Field(None, ge=0.0)
    min_requests: int | None = Field(None, ge=0)
    thresholds: dict[str, Any] | None = None
    mirror_fraction: float = Field(0.0, ge=0.0, le=1.0)


class DeployOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    allow_code: bool = False
    trust: list[str] = []
    weight: float | None = Field(None, ge=0.0, le=100.0)
    shadow: float | None = Field(None, gt=0.0, le=100.0)
    canary: CanaryOptions | None = None

    @model_validator(mode="after")
    def _one_routing(self) -> DeployOptions:
        if sum(x is not None for x in (self.weight, self.shadow, self.canary)) > 1:
            raise ValueError("give at most one of weight, shadow and canary")
        return self


async def deploy(served: FrontendParts, request: HttpRequest) -> None:
    """The route's handler. It sends its own answer: declared `streams`, it runs outside the whole-request
    timeout, which a probe load may well exceed."""
    status, body, content_type = await _deploy(served, request)
    await send_response(request.send, status, body, request.extra, content_type)


@admin_route
async def _deploy(admin: RoutingAdmin, served: FrontendParts, request: HttpRequest) -> tuple[int, dict[str, Any]]:
    name, version = request.params["name"], request.params["version"]
    check_name("model name", name)
    check_name("version", version)
    deployer = served.deployer
    if deployer is None:
        raise Unavailable("routing state is not available yet", headers={"Retry-After": "1"})
    settings = deployer.settings
    folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="rtserve-deploy-"))
    try:
        received = await receive_form(request.receive, request.headers, folder, max_bytes=settings.max_upload_bytes,
                                      idle_timeout_s=served.limits.body_read_timeout_s,
                                      files={"model", "config", "sample"}, fields={"options"})
        if "model" not in received.files:
            raise InvalidInput("the 'model' part (the model file, or a tar of its folder) is missing")
        options = _options(received.fields.get("options"))
        source = received.files["model"]
        if is_archive(source.name):
            source = await asyncio.to_thread(extract, source, folder / "extracted" / stem(source.name),
                                             max_bytes=settings.max_upload_bytes, max_files=settings.max_upload_files)
        timings: dict[str, float] = {}
        model = await deployer.deploy(name, version, source, ImportOptions(
            allow_code=options.allow_code, trust=tuple(options.trust), config=received.files.get("config"),
            sample=received.files.get("sample"), origin="deploy"), timings, settings.load_wait_s)
    finally:
        await asyncio.to_thread(shutil.rmtree, folder, True)
    meta = model.info.metadata
    routes = await _route(admin, name, version, options)  # a routing change is audited on its own
    return 201, {
        "model": name,
        "version": version,
        "metadata": {k: meta[k] for k in SHOWN_METADATA if k in meta},
        "import_seconds": round(timings["import_s"], 3),
        "load_seconds": round(timings["load_s"], 3),
        "routes": routes.model_dump(mode="json"),
        **({"warning": warning} if (warning := _warning(served, name, version)) else {}),
    }


def _warning(served: FrontendParts, name: str, version: str) -> str | None:
    """What the load in this worker found an operator should know (every worker loads the same files and settings)."""
    registry = served.catalog.registry
    entry = registry.versions(name).get(version) if name in registry.names() else None
    return entry.warning if entry is not None else None


def _options(raw: bytes | None) -> DeployOptions:
    try:
        return DeployOptions.model_validate(orjson.loads(raw) if raw else {})
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"options: not JSON ({exc})") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        raise InvalidInput(f"options.{where}: {err['msg']}" if where else f"options: {err['msg']}") from None


async def _route(admin: RoutingAdmin, name: str, version: str, options: DeployOptions):
    """The routes once the new version has its traffic (see the module's docstring)."""
    routes = await admin.store.get(name)
    if options.weight is not None:
        others = {v: w for v, w in routes.weights.items() if v != version}
        total = sum(others.values())
        rest = 100.0 - options.weight
        weights = {v: (rest * w / total if total else 0.0) for v, w in others.items()} | {version: options.weight}
        return await admin.set_weights(name, weights)
    if options.shadow is not None:
        return await admin.set_shadow(name, version, options.shadow / 100.0)
    if options.canary is not None:
        c = options.canary
        steps = [c.percent] + [s for s in (c.steps or admin.defaults["canary_steps"]) if s > c.percent]
        request = _canary_request({**c.model_dump(exclude={"percent"}, exclude_none=True), "version": version,
                                   "steps": steps})
        return await admin.start_canary(name, request)
    return routes


def _canary_request(doc: dict[str, Any]) -> CanaryRequest:
    try:
        return CanaryRequest.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InvalidInput(f"options.canary.{'.'.join(str(p) for p in err.get('loc', ()))}: {err['msg']}") from None

