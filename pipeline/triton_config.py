"""Triton's model configuration, both ways: a load request's `config` read into what a deploy needs
(the format, a `model.yaml`'s `Declared`, the versions to deploy), and a served version written back
as Triton's JSON model config (`GET /v2/models/{name}/config`, the ModelConfig RPC).

    plan = read_config("iris", '{"backend": "fil", "max_batch_size": 8, "parameters": {...}}')
    plan.format, plan.declared, plan.choose(["1", "2"])
    served_config(entry) -> {"name": ..., "platform": ..., "max_batch_size": ..., "input": [...], ...}

Honoured fields: `name` (must be the model's), `platform` or `backend` (PLATFORMS; a `torch.export` program
is a PyTorch platform with parameters.model_type `torch_export`), `input` and `output`
(`name`, `data_type`, `dims`; the batch dimension is added when `max_batch_size` > 0), `max_batch_size`
(0 turns batching off; above 0 the server's adaptive batcher sizes batches), `version_policy`
(`latest` (Triton's default: the newest one), `all`, `specific`) and `parameters` (PARAMETERS).
`dynamic_batching` and `instance_group` are accepted and have no effect (batching is adaptive; every
worker holds one instance). Anything else is refused, naming these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from core.errors import BadRequest, shown
from models.declared import Declared, TensorDecl
from runners.registry import LoadedVersion

DATATYPES: dict[str, str] = {
    **{f"TYPE_{t}": t for t in ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                                "FP16", "FP32", "FP64")},
    "TYPE_STRING": "BYTES",
}
"""Triton's data_type -> the signature datatype (TYPE_BF16 is not served)."""
TRITON_TYPES = {v: k for k, v in DATATYPES.items()}

PLATFORMS: dict[str, str] = {
    "onnxruntime_onnx": "onnx",
    "onnxruntime": "onnx",
    "pytorch_libtorch": "torchscript",
    "pytorch": "torchscript",
}
"""Triton's platform or backend -> the format; `fil` and `sklearn` pick theirs by parameters.model_type."""
MODEL_TYPES: dict[str, dict[str, str]] = {
    "fil": {"xgboost_json": "xgboost", "xgboost_ubj": "xgboost", "lightgbm": "lightgbm"},
    "sklearn": {"skops": "skops", "pickle": "pickle"},
}
"""backend -> parameters.model_type -> format (FIL's own names; `sklearn` defaults to skops)."""
TORCH_TYPES: dict[str, str] = {"torchscript": "torchscript", "torch_export": "torch_export"}
"""parameters.model_type of the PyTorch platforms -> format: TorchScript (the default, as Triton's libtorch
backend reads) or a `torch.export` program (`torch.export.save`, a `.pt2`)."""
SERVED = sorted([*PLATFORMS, *MODEL_TYPES])

PARAMETERS = {
    "model_type": "the file's kind for backend fil (xgboost_json, xgboost_ubj, lightgbm), sklearn (skops, pickle) "
                  "or the PyTorch platforms (torchscript, torch_export)",
    "allow_code": '"true" to load a format that can run code (TorchScript, pickle); the operator must allow it too',
    "trust": "comma-separated extra skops types to trust (the operator must allow deploys to trust types)",
    "task": "classification, regression or tensors, where the model does not say",
    "class_names": "comma-separated class names, in the order of the model's classes",
    "softmax": '"true": the model returns logits; softmax makes the probabilities',
}
"""Parameters a load's config may set, each a string (Triton's `{"string_value": ...}` or a plain string)."""
ACCEPTED_FIELDS = {"name", "platform", "backend", "input", "output", "max_batch_size", "version_policy", "parameters"}
IGNORED_FIELDS = {"dynamic_batching", "instance_group"}
TENSOR_FIELDS = {"name", "data_type", "dims"}


@dataclass(frozen=True)
class LoadPlan:
    """What a load request's config asks for."""

    format: str
    declared: Declared
    allow_code: bool
    trust: tuple[str, ...]
    policy: dict[str, Any] | None
    """Triton's version_policy; None is its default, the newest version."""

    def choose(self, versions: list[str]) -> list[str]:
        """The versions (Triton's numeric folders, as strings) the policy picks, oldest first."""
        ordered = sorted(versions, key=int)
        policy = self.policy
        if policy is None:
            return ordered[-1:]
        (kind, value), = policy.items()
        if kind == "all":
            return ordered
        if kind == "latest":
            return ordered[-value["num_versions"]:]
        missing = [v for v in value if v not in ordered]
        if missing:
            raise BadRequest(f"version_policy names version(s) {shown(missing)} with no files; the files hold {ordered}")
        return [v for v in ordered if v in value]


def read_config(name: str, raw: Any) -> LoadPlan:
    """The plan of a load with files; BadRequest naming what is wrong and what is honoured."""
    try:  # orjson: it refuses documents nested over 1024 deep, where json recurses until RecursionError
        config = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"parameters.config must be a model configuration in JSON ({exc})") from None
    if not isinstance(config, dict):
        raise BadRequest("parameters.config must be a JSON object")
    unknown = set(config) - ACCEPTED_FIELDS - IGNORED_FIELDS
    if unknown:
        raise BadRequest(f"config field(s) {shown(sorted(unknown))} are not served; honoured: "
                         f"{', '.join(sorted(ACCEPTED_FIELDS))} ({', '.join(sorted(IGNORED_FIELDS))} accepted, no effect)")
    if config.get("name", name) != name:
        raise BadRequest(f"config name {shown(config['name'])} is not the model's name {shown(name)}")
    parameters = _parameters(config.get("parameters"))
    fmt = _format(config.get("platform"), config.get("backend"), parameters.get("model_type"))
    max_batch = config.get("max_batch_size", 0)
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 0:
        raise BadRequest("config max_batch_size must be a whole number, 0 or more")
    declared: dict[str, Any] = {"format": fmt}
    for field, key in (("input", "inputs"), ("output", "outputs")):
        if config.get(field):
            declared[key] = [_tensor(t, f"config {field}[{i}]", max_batch) for i, t in enumerate(_list(config, field))]
    if "outputs" in declared and fmt in ("xgboost", "lightgbm", "skops", "pickle"):
        raise BadRequest(f"config output: a {fmt} model serves its own outputs (probabilities and label, or "
                         "predictions); leave output out")
    if max_batch == 0:
        declared["batching"] = False
    if "task" in parameters:
        declared["task"] = parameters["task"]
    if "class_names" in parameters:
        declared["class_names"] = [c.strip() for c in parameters["class_names"].split(",")]
    if "softmax" in parameters:
        declared["softmax"] = _flag(parameters, "softmax")
    try:
        planned = Declared.model_validate(declared)
    except ValueError as exc:
        raise BadRequest(f"config: {exc}") from None
    trust = tuple(t.strip() for t in parameters.get("trust", "").split(",") if t.strip())
    return LoadPlan(fmt, planned, _flag(parameters, "allow_code"), trust, _policy(config.get("version_policy")))


def _list(config: Mapping[str, Any], field: str) -> list[Any]:
    value = config[field]
    if not isinstance(value, list):
        raise BadRequest(f"config {field} must be a list")
    return value


def _parameters(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadRequest("config parameters must be an object")
    unknown = set(raw) - set(PARAMETERS)
    if unknown:
        raise BadRequest(f"config parameter(s) {shown(sorted(unknown))} are not known; known: {', '.join(PARAMETERS)}")
    values = {}
    for key, value in raw.items():
        if isinstance(value, dict) and set(value) == {"string_value"}:
            value = value["string_value"]
        if not isinstance(value, str):
            raise BadRequest(f'config parameter {key} must be {{"string_value": "..."}}')
        values[key] = value
    return values


def _flag(parameters: Mapping[str, str], key: str) -> bool:
    value = parameters.get(key, "false").lower()
    if value not in ("true", "false"):
        raise BadRequest(f'config parameter {key} must be "true" or "false"')
    return value == "true"


def _format(platform: Any, backend: Any, model_type: str | None) -> str:
    named = [p for p in (platform, backend) if p]
    if not named:
        raise BadRequest(f"config must name a platform or backend; served: {', '.join(SERVED)}")
    if any(not isinstance(p, str) or p not in SERVED for p in named):
        raise BadRequest(f"platform/backend {shown(named)} is not served here; served: {', '.join(SERVED)}")
    kinds = {PLATFORMS.get(p, p) for p in named}
    if len(kinds) > 1:
        raise BadRequest(f"platform {shown(platform)} and backend {shown(backend)} differ")
    (kind,) = kinds
    if kind == "torchscript" and model_type is not None:
        if model_type not in TORCH_TYPES:
            raise BadRequest(f"platform {shown(named[0])} takes parameter model_type {sorted(TORCH_TYPES)}; "
                             f"got {shown(model_type)}")
        return TORCH_TYPES[model_type]
    if kind not in MODEL_TYPES:
        if model_type is not None:
            raise BadRequest(f"parameter model_type is for backends {sorted(MODEL_TYPES)} and the PyTorch "
                             f"platforms, not {kind}")
        return kind
    types = MODEL_TYPES[kind]
    if model_type is None and kind == "sklearn":
        model_type = "skops"
    if model_type not in types:
        raise BadRequest(f"backend {kind} needs parameter model_type, one of {sorted(types)}; got {shown(model_type)}")
    return types[model_type]


def _tensor(raw: Any, where: str, max_batch: int) -> TensorDecl:
    if not isinstance(raw, dict) or not {"name", "data_type", "dims"} <= set(raw):
        raise BadRequest(f"{where} must have name, data_type and dims")
    unknown = set(raw) - TENSOR_FIELDS
    if unknown:
        raise BadRequest(f"{where}: field(s) {shown(sorted(unknown))} are not served; honoured: name, data_type, dims")
    if raw["data_type"] not in DATATYPES:
        raise BadRequest(f"{where}: data_type {shown(raw['data_type'])} is not served; served: {', '.join(DATATYPES)}")
    dims = raw["dims"]
    if not isinstance(dims, list) or any(isinstance(d, bool) or not isinstance(d, int) or d < -1 or d == 0 for d in dims):
        raise BadRequest(f"{where}: dims must be a list of sizes (-1 for a variable one)")
    shape = [-1, *dims] if max_batch > 0 else dims
    try:
        return TensorDecl(name=raw["name"], datatype=DATATYPES[raw["data_type"]], shape=shape)
    except ValueError as exc:
        raise BadRequest(f"{where}: {exc}") from None


def _policy(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    ok = isinstance(raw, dict) and len(raw) == 1
    kind, value = next(iter(raw.items())) if ok else (None, None)
    if kind == "all" and value == {}:
        return raw
    if kind == "latest" and isinstance(value, dict) and set(value) == {"num_versions"}:
        n = value["num_versions"]
        if isinstance(n, int) and not isinstance(n, bool) and n >= 1:
            return raw
    if kind == "specific" and isinstance(value, dict) and set(value) == {"versions"} and isinstance(value["versions"], list):
        versions = value["versions"]
        if versions and all(_numeric(v) for v in versions):
            return {"specific": [str(int(v)) for v in versions]}
    raise BadRequest('config version_policy must be {"latest": {"num_versions": N}}, {"all": {}} or '
                     '{"specific": {"versions": [1, ...]}}')


def _numeric(value: Any) -> bool:
    """A Triton version: a positive whole number (JSON may carry int64 as a string)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return value.isascii() and value.isdigit() and int(value) > 0
    return isinstance(value, int) and value > 0


def served_config(entry: LoadedVersion) -> dict[str, Any]:
    """A loaded version as Triton's JSON model config: what a client needs to send and what it gets back."""
    runner = entry.runner
    doc: dict[str, Any] = {"name": entry.name}
    if runner is None:
        return doc
    metadata = runner.metadata
    fmt = str(metadata.get("format") or runner.framework)
    doc |= _platform(fmt, str(metadata.get("file", "")))
    batching = runner.batching and all(s.shape[:1] == (-1,) for s in runner.signature.inputs)
    doc["max_batch_size"] = entry.batcher.max_batch_size if batching and entry.batcher is not None else 0
    for field, specs in (("input", runner.signature.inputs), ("output", runner.signature.outputs)):
        doc[field] = [{"name": s.name, "data_type": TRITON_TYPES[s.datatype],
                       "dims": list(s.shape[1:] if batching else s.shape)} for s in specs]
    parameters = {"format": fmt, "task": str(metadata.get("task", "")), **doc.pop("parameters", {})}
    if metadata.get("class_names"):
        parameters["class_names"] = ",".join(str(c) for c in metadata["class_names"])
    doc["parameters"] = {k: {"string_value": v} for k, v in parameters.items() if v}
    return doc


def _platform(fmt: str, file: str) -> dict[str, Any]:
    """Triton's platform/backend for a format, with FIL's and sklearn's model_type; the format itself otherwise."""
    for platform, backend in (("onnxruntime_onnx", "onnxruntime"), ("pytorch_libtorch", "pytorch")):
        if PLATFORMS[platform] == fmt:
            return {"platform": platform, "backend": backend}
    if fmt == TORCH_TYPES["torch_export"]:
        return {"platform": "pytorch_libtorch", "backend": "pytorch", "parameters": {"model_type": fmt}}
    for backend, types in MODEL_TYPES.items():
        matching = [t for t, f in types.items() if f == fmt]
        if matching:
            model_type = "xgboost_ubj" if file.endswith(".ubj") and fmt == "xgboost" else matching[0]
            return {"backend": backend, "parameters": {"model_type": model_type}}
    return {"backend": fmt}
