"""Triton's model repository and statistics extensions over gRPC, on the work REST does too
(pipeline/repository.py, pipeline/statistics.py; the REST routes are frontends/extensions.py).

Repository calls need the `admin` scope, and loads and unloads need authentication on, as over
REST; versions come in the load or unload parameters (`version`, or tritonclient's `config` with
a version policy), or a load brings files (`config` plus `file:<version>/<name>` as bytes_param, in a
message of at most RTSERVE_REPOSITORY_MAX_LOAD_BYTES: see message_limits.py). Statistics need a
token unless their RPC is open, and show the models the caller may use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from tritonclient.grpc import service_pb2 as pb

from core.errors import BadRequest, Forbidden, Unavailable, shown
from frontends.parts import FrontendParts
from pipeline.repository import ModelRepository, repository_unavailable, requested_versions
from pipeline.statistics import Duration, VersionStats
from pipeline.triton_files import load_with_files, split_files

_PHASES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")


async def index(parts: FrontendParts, request: pb.RepositoryIndexRequest) -> pb.RepositoryIndexResponse:
    entries = await _repository(parts, request.repository_name).index(ready_only=request.ready)
    model = pb.RepositoryIndexResponse.ModelIndex
    return pb.RepositoryIndexResponse(
        models=[model(name=e.name, version=e.version, state=e.state, reason=e.reason) for e in entries]
    )


async def load(parts: FrontendParts, request: pb.RepositoryModelLoadRequest) -> pb.RepositoryModelLoadResponse:
    repository = _changing(parts, request.repository_name)
    files, parameters = split_files(_plain(request.parameters))
    if files:
        if parts.deployer is None:
            raise repository_unavailable()
        bad = sorted(k for k, v in files.items() if not isinstance(v, bytes))
        if bad:
            raise BadRequest(f"file parameter(s) {shown(bad)} must be bytes_param")
        await load_with_files(parts.deployer, request.model_name, parameters, files)
    else:
        await repository.load(request.model_name, requested_versions(parameters, load=True))
    return pb.RepositoryModelLoadResponse()


async def unload(parts: FrontendParts, request: pb.RepositoryModelUnloadRequest) -> pb.RepositoryModelUnloadResponse:
    repository = _changing(parts, request.repository_name)
    await repository.unload(request.model_name, requested_versions(_plain(request.parameters), load=False))
    return pb.RepositoryModelUnloadResponse()


async def statistics(
    parts: FrontendParts, request: pb.ModelStatisticsRequest, shown: Callable[[str], bool] | None = None
) -> pb.ModelStatisticsResponse:
    """`shown`: which models the caller may see (None: every one)."""
    if parts.statistics is None:
        raise Unavailable("statistics are not served by this front end's parts")
    parts.metrics_current()
    found = await asyncio.to_thread(parts.statistics.read, request.name or None, request.version or None)
    return pb.ModelStatisticsResponse(model_stats=[_model_stats(s) for s in found if shown is None or shown(s.name)])


def _repository(parts: FrontendParts, repository_name: str) -> ModelRepository:
    if repository_name:
        raise BadRequest("there is one model repository, the model store: leave repository_name empty")
    if parts.repository is None:
        raise repository_unavailable()
    return parts.repository


def _changing(parts: FrontendParts, repository_name: str) -> ModelRepository:
    if not parts.auth_enabled:
        raise Forbidden("model loads and unloads change routes and need authentication on (RTSERVE_AUTH_ENABLED)")
    return _repository(parts, repository_name)


def _plain(parameters: Mapping[str, pb.ModelRepositoryParameter]) -> dict[str, object]:
    """Each ModelRepositoryParameter as the value of its set field, the form `requested_versions` reads."""
    return {key: getattr(p, kind) for key, p in parameters.items() if (kind := p.WhichOneof("parameter_choice"))}


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def _model_stats(s: VersionStats) -> pb.ModelStatistics:
    return pb.ModelStatistics(
        name=s.name,
        version=s.version,
        last_inference=s.last_inference,
        inference_count=s.inference_count,
        execution_count=s.execution_count,
        inference_stats=pb.InferStatistics(**{p: _duration(getattr(s, p)) for p in _PHASES}),
        batch_stats=[
            pb.InferBatchStatistics(
                batch_size=b.batch_size,
                compute_input=_duration(b.compute_input),
                compute_infer=_duration(b.compute_infer),
                compute_output=_duration(b.compute_output),
            )
            for b in s.batch_stats
        ],
    )
