"""What runs in the probe's throw-away process (forked by models/fork_server.py): the format's checks, the
load, the signature, one sample call, the outputs checked, the memory the model took.

The answer goes to a result file as JSON: the metadata, or the error (a ServingError's code and message;
any other failure of the user's file becomes a model_refused error said in words). models/probe.py reads it.
"""

from __future__ import annotations

import importlib
import json
import resource
from pathlib import Path
from typing import Any

import psutil

from core.errors import ModelRefused, ServingError
from models import formats

FRAMEWORK_MODULES = {"onnx": "onnxruntime", "xgboost": "xgboost", "lightgbm": "lightgbm", "sklearn": "sklearn",
                     "pytorch": "torch"}
"""Imported before the baseline is taken, so the memory measured is the model's, not the framework's."""


def rss_kb() -> int:
    return psutil.Process().memory_info().rss // 1024


def _rss_mb() -> float:
    return rss_kb() / 1024


def probe(request: dict[str, Any]) -> dict[str, Any]:
    """In the child: the format's checks, then load, describe, run a sample, check the outputs. The metadata,
    what the format's checks record (e.g. skops' trusted types), and the model's memory."""
    from models.declared import Declared, TensorDecl
    from models.formats.base import Trust
    from models.outputs import Head
    from models.signature import datatype_of
    from models.spec import record_outputs, resolve, sample_inputs, served_outputs
    from models.tokenize import Tokenize

    fmt = formats.get(request["format"])
    module = FRAMEWORK_MODULES.get(fmt.framework)
    if module:
        importlib.import_module(module)
    baseline = _rss_mb()
    file = Path(request["file"])
    trust = request["trust"]
    checked = fmt.check(file, Trust(bool(trust["allow_code"]), tuple(trust["trusted_types"])))
    declared = Declared.model_validate(request["declared"])
    partial = {**request["metadata"], **checked}
    if declared.outputs:
        partial["declared_outputs"] = [o.model_dump() for o in declared.outputs]
    model = fmt.load(file, partial, "cpu")
    described = fmt.describe(model, file)
    sample = read_sample(Path(request["sample"])) if request.get("sample") else None
    if sample and not declared.inputs and not described.inputs:  # the sample says the inputs' datatypes and shapes
        declared = declared.model_copy(update={"inputs": [
            TensorDecl(name=n, datatype=datatype_of(a.dtype), shape=[-1, *a.shape[1:]]) for n, a in sample.items()]})
    meta = resolve(described, declared, f"{file.name} ({fmt.name})")
    tokenize = Tokenize.of(meta, file.parent)
    names = [t["name"] for t in meta["inputs"]]
    inputs = match_sample(sample, names) if sample else sample_inputs(tuple(_specs(meta["inputs"])))
    model_inputs = tokenize(inputs) if tokenize else inputs
    if "model_outputs" not in meta:
        meta["model_outputs"] = record_outputs(fmt.predict(model, model_inputs))
    signature = served_outputs(meta)
    meta.update(signature.to_metadata())
    rows = len(next(iter(inputs.values())))
    try:
        Head(meta, signature)(fmt.predict(model, model_inputs), rows)
    except ServingError as exc:
        raise ModelRefused(f"on a sample input: {exc.message}") from None
    return {"metadata": meta, "checked": checked, "memory_mb": round(max(_peak_rss_mb() - baseline, 0.0), 1)}


def _peak_rss_mb() -> float:
    """This process's peak resident memory. Not `ru_maxrss` where /proc is there: that survives `execve`, so a
    probe started by a process of 1 GB read at least 1 GB whatever the model took."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _specs(data: list[dict[str, Any]]) -> list[Any]:
    from models.signature import TensorSpec

    return [TensorSpec.from_metadata(t) for t in data]


def read_sample(path: Path) -> dict[str, Any]:
    """A sample input: one `.npy` array (named `input`), or an `.npz` with an array per input name."""
    import numpy as np

    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ModelRefused(f"sample input {path.name}: {exc}") from None
    arrays = {"input": loaded} if isinstance(loaded, np.ndarray) else {n: loaded[n] for n in loaded.files}
    if not arrays or any(a.ndim == 0 or len(a) == 0 for a in arrays.values()):
        raise ModelRefused(f"sample input {path.name}: give at least one row per input")
    return arrays


def match_sample(sample: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The sample's arrays under the model's input names (a lone `.npy` array goes to a lone input)."""
    if list(sample) == ["input"] and len(names) == 1:
        return {names[0]: sample["input"]}
    missing = sorted(set(names) - set(sample))
    if missing:
        raise ModelRefused(f"the sample input lacks {missing}; the model takes {names} (give an .npz by input name)")
    return {n: sample[n] for n in names}


def main(argv: list[str]) -> int:
    request_path, result_path = map(Path, argv)
    try:
        answer = probe(json.loads(request_path.read_text()))
    except ServingError as exc:
        answer = {"error": {"code": exc.code, "message": exc.message}}
    except Exception as exc:  # noqa: BLE001 - any failure of the user's model is a refusal, said in words
        answer = {"error": {"code": ModelRefused.code, "message": f"loading failed: {type(exc).__name__}: {str(exc)[:500]}"}}
    result_path.write_text(json.dumps(answer, default=str))
    return 0

