"""`POST /admin/models/{name}/versions/{version}/optimize` (scope admin): a stored version converted to ONNX,
quantized to int8 or compiled, measured beside its source, and served as a new version with no traffic.

The body is JSON, or multipart/form-data when it brings a sample (what `rtserve optimize` sends):
    options  JSON: {"to": "onnx" | "int8" | "compiled",           required
                    "version": "v1-int8",                          default <version>-<to>
                    "min_agreement": 0.99, "tolerance": 0.01}      default the server's (RTSERVE_OPTIMIZE_*)
    sample   a sample input, .npy (or .npz by input name)         optional (multipart only; default: seeded rows)

`pipeline.optimize.Optimizer` does the work: a subprocess with a time limit for the conversion, then the same
import, probe load and load in every worker a deploy takes. The answer (201): the new version, the report
(agreement, largest differences, latency at batch 1 and 32 beside the source's, sizes) and the routes, in which
the new version has no weight. Refused: 422 `optimization_refused` (no converter for the model, or a sample that
does not fit) and 422 `agreement_too_low` (the report in the answer too); nothing is stored then. One audit line
records it with who asked. No request deadline applies: a compile may take minutes (RTSERVE_OPTIMIZE_TIMEOUT_S).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.errors import BadRequest, Unavailable
from frontends.admin_api import admin_route, parse_model
from frontends.asgi import read_body, send_response
from frontends.deploy_api import SHOWN_METADATA
from frontends.parts import FrontendParts
from frontends.route_table import HttpRequest
from frontends.upload import receive_form
from routing.admin import RoutingAdmin
from routing.audit import record

OPTIONS_BYTES = 64 * 1024


class OptimizeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    to: Literal["onnx", "int8", "compiled"]
    version: str | None = Field(None, min_length=1, max_length=128)
    min_agreement: float | None = Field(None, ge=0.0, le=1.0)
    tolerance: float | None = Field(None, ge=0.0)


async def optimize(served: FrontendParts, request: HttpRequest) -> None:
    """The route's handler. Declared `streams`, it runs outside the whole-request timeout, as a deploy does."""
    status, body, content_type = await _optimize(served, request)
    await send_response(request.send, status, body, request.extra, content_type)


@admin_route
async def _optimize(admin: RoutingAdmin, served: FrontendParts, request: HttpRequest) -> tuple[int, dict[str, Any]]:
    name, version = request.params["name"], request.params["version"]
    optimizer = served.optimizer
    if optimizer is None:
        raise Unavailable("routing state is not available yet", headers={"Retry-After": "1"})
    folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="rtserve-optimize-upload-"))
    try:
        options, sample = await _receive(served, request, folder)
        before = await admin.store.get(name)
        timings: dict[str, float] = {}
        model, report = await optimizer.optimize(name, version, options.to, options.version, sample,
                                                 options.min_agreement, options.tolerance, timings)
    finally:
        await asyncio.to_thread(shutil.rmtree, folder, True)
    new = model.tag.version
    meta = model.info.metadata
    latency = report["latency_ms"]
    await record(admin.audit, "optimize", name, before, await admin.store.get(name),
                 f"{new} from {version} --to {options.to} ({report['method']}): agreement {report['agreement']:.4f} "
                 f"({report['counted_as']}), batch 1 {latency['batch_1']['speedup']}x, batch 32 {latency['batch_32']['speedup']}x")
    return 201, {
        "model": name,
        "version": new,
        "source_version": version,
        "report": report,
        "metadata": {k: meta[k] for k in SHOWN_METADATA if k in meta},
        "import_seconds": round(timings["import_s"], 3),
        "load_seconds": round(timings["load_s"], 3),
        "routes": (await admin.store.get(name)).model_dump(mode="json"),
    }


async def _receive(served: FrontendParts, request: HttpRequest, folder: Path) -> tuple[OptimizeOptions, Path | None]:
    content_type = request.headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if content_type == b"application/json":
        body = await read_body(request.receive, request.headers, OPTIONS_BYTES, served.limits.body_read_timeout_s)
        return parse_model(OptimizeOptions, body), None
    if content_type != b"multipart/form-data":
        raise BadRequest('send JSON options ({"to": "int8", ...}), or multipart/form-data with an \'options\' JSON part '
                         "and a 'sample' file part (rtserve optimize does)")
    assert served.deployer is not None
    received = await receive_form(request.receive, request.headers, folder,
                                  max_bytes=served.deployer.settings.max_upload_bytes,
                                  idle_timeout_s=served.limits.body_read_timeout_s, files={"sample"}, fields={"options"})
    if "options" not in received.fields:
        raise BadRequest("the 'options' part (JSON with at least \"to\") is missing")
    return parse_model(OptimizeOptions, received.fields["options"]), received.files.get("sample")
