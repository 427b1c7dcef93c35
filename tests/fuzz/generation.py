"""Real requests mixed into schemathesis' generated ones.

Purely generated cases almost never name a served model or fill a tensor's shape, so they stop
at the first check. Half the cases here get real model names and versions in their path, and
infer and /predict cases real bodies (bent a little), so fuzzing also reaches validation,
routing, the batcher and the models; job submissions get real rows and real `.npy` / `.npz` uploads (and
headers that must be refused before any array exists), job paths ids of the server's format and others.
The models are read from the store when the first case is drawn, after the session's `model_store`
fixture has built them.
"""

from __future__ import annotations

import functools

import orjson
import schemathesis
from hypothesis import strategies as st

from fuzz import seeds


@functools.cache
def _models() -> tuple[seeds.ServedModel, ...]:
    return tuple(seeds.served_models())


@functools.cache
def _uploads(name: str) -> tuple[bytes, ...]:
    return tuple(seeds.job_uploads(next(m for m in _models() if m.name == name).spec))


def _real_infer_input(model: seeds.ServedModel) -> st.SearchStrategy[tuple[dict, bytes]]:
    """An input of a real request (header entry, raw bytes), sometimes bent: one value, the shape,
    the datatype or the name."""

    @st.composite
    def entry(draw) -> tuple[dict, bytes]:
        spec = model.spec
        batch = seeds.rows(spec, draw(st.integers(1, 4)), seed=draw(st.integers(0, 200)))
        values = batch.ravel().tolist()
        doc = {"name": spec.name, "shape": list(batch.shape), "datatype": spec.datatype}
        bend = draw(st.sampled_from(["none", "none", "value", "shape", "datatype", "name"]))
        if bend == "value":
            values[draw(st.integers(0, len(values) - 1))] = draw(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(), st.booleans()))
        elif bend == "shape":
            doc["shape"] = draw(st.lists(st.integers(0, 70), min_size=1, max_size=5))
        elif bend == "datatype":
            doc["datatype"] = draw(st.sampled_from(["BOOL", "UINT8", "INT32", "INT64", "FP16", "FP32", "FP64"]))
        elif bend == "name":
            doc["name"] = draw(st.text(max_size=8))
        return {**doc, "data": values}, batch.tobytes()

    return entry()


def _real_rows(model: seeds.ServedModel) -> st.SearchStrategy[list]:
    @st.composite
    def rows(draw) -> list:
        out = seeds.predict_rows(model.spec, seeds.rows(model.spec, draw(st.integers(1, 4)), seed=draw(st.integers(0, 200))))
        if draw(st.booleans()):
            row = out[draw(st.integers(0, len(out) - 1))]
            row[draw(st.integers(0, len(row) - 1))] = draw(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(), st.text(max_size=3)))
        return out

    return rows()


def _with_real_parts(case: schemathesis.Case, draw) -> schemathesis.Case:
    """The case with real model names and versions in its path, and for infer and /predict a real body.
    Negative cases stay as generated: what they break is the point of them."""
    if case.meta is not None and not case.meta.generation.mode.is_positive:
        return case
    model = draw(st.sampled_from(_models()))
    path = dict(case.path_parameters or {})
    if "name" in path:
        path["name"] = model.name
    if "version" in path:
        path["version"] = draw(st.sampled_from([*model.versions, "v0"]))
    case.path_parameters = path
    if case.operation.path.endswith("/infer"):
        entry, raw = draw(_real_infer_input(model))
        if case.media_type == "application/octet-stream":
            del entry["data"]
            entry["parameters"] = {"binary_data_size": len(raw)}
            header = orjson.dumps({"inputs": [entry]})
            case.body = header + raw
            case.headers = {**(case.headers or {}), "Inference-Header-Content-Length": str(len(header))}
        else:
            case.body = {"inputs": [entry]}
    elif case.operation.path == "/v2/jobs":
        if case.media_type == "application/octet-stream":
            case.body = draw(st.sampled_from(_uploads(model.name)))
            query = {"model": model.name}
            if draw(st.booleans()):
                query["version"] = draw(st.sampled_from(model.versions))
            case.query = query
        else:
            case.body = {"model": model.name, "inputs": draw(_real_rows(model))}
    elif case.operation.path.startswith("/v2/jobs/"):
        path["job"] = draw(st.sampled_from(seeds.job_ids()))
    elif case.operation.path == "/predict":
        body = {"model": model.name, "inputs": draw(_real_rows(model))}
        if draw(st.booleans()):
            body["version"] = draw(st.sampled_from(model.versions))
        case.body = body
    return case


def mix_in_real_requests(schema: schemathesis.BaseSchema) -> None:
    """Register the hook on `schema`: every operation draws half its cases with real parts."""

    @schema.hook
    def before_generate_case(context, strategy):
        @st.composite
        def real(draw) -> schemathesis.Case:
            return _with_real_parts(draw(strategy), draw)

        return st.one_of(strategy, real())
