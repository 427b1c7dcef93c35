"""The probe load: a new model file is first opened in a throw-away subprocess, never in a serving worker.

The subprocess loads the file, reads its signature, runs it once on a sample input and checks the
outputs against that signature; it reports the version's metadata and the memory the model took.
It runs with a clean environment (no `RTSERVE_*`, `AWS_*`, `REDIS_URL` or other secrets: only
the variables in `KEPT_ENV`), a time limit, and a memory limit enforced by watching its resident
memory (psutil), since an address-space limit (RLIMIT_AS) breaks torch and onnxruntime, which
reserve far more address space than they use. A file that crashes the process, hangs or goes
over the limit is refused with a `ProbeFailed` error.

This is resource isolation, not a sandbox: the probe runs as the server's user and can read
what the server can read. That is why formats that can run code stay opt-in.

    python -m models.probe REQUEST.json RESULT.json     (the child; REQUEST as `run_probe` writes it)
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from core.errors import ModelRefused, ProbeFailed, ServingError, _subclasses

KEPT_ENV = ("PATH", "PYTHONPATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "VIRTUAL_ENV",
            "OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""The only variables the probe inherits; everything else (credentials, tokens, URLs) stays behind."""
FRAMEWORK_MODULES = {"onnx": "onnxruntime", "xgboost": "xgboost", "lightgbm": "lightgbm", "sklearn": "sklearn",
                     "pytorch": "torch"}
"""Imported before the baseline is taken, so the memory measured is the model's, not the framework's."""
POLL_S = 0.02


def probe_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in KEPT_ENV}
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_probe(request: dict[str, Any], timeout_s: float, memory_mb: int) -> dict[str, Any]:
    """The version's metadata from the probe, with `memory_mb`; ModelRefused or a subclass when it is refused."""
    with tempfile.TemporaryDirectory(prefix="rtserve-probe-") as tmp:
        req, result, log = Path(tmp) / "request.json", Path(tmp) / "result.json", Path(tmp) / "stderr.log"
        req.write_text(json.dumps(request))
        with log.open("wb") as err:
            proc = psutil.Popen([sys.executable, "-m", "models.probe", str(req), str(result)], env=probe_env(),
                                cwd=tmp, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
            peak = _watch(proc, timeout_s, memory_mb)
        if result.exists():
            answer = json.loads(result.read_text())
            if "error" in answer:
                raise _error(answer["error"])
            return {**answer["metadata"], "memory_mb": answer["memory_mb"], "probe_peak_mb": round(peak, 1)}
        tail = log.read_text(errors="replace")[-800:].strip()
        how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        raise ProbeFailed(f"the probe load crashed ({how}); the file is refused" + (f": {tail}" if tail else ""))


def _watch(proc: psutil.Popen, timeout_s: float, memory_mb: int) -> float:
    """Wait for the probe; kill it at the time or memory limit. Its peak resident memory in MB."""
    start, peak = time.monotonic(), 0.0
    while proc.poll() is None:
        try:
            family = [proc, *proc.children(recursive=True)]
            rss = sum(p.memory_info().rss for p in family) / 2**20
        except psutil.NoSuchProcess:
            continue
        peak = max(peak, rss)
        if rss > memory_mb:
            _kill(proc)
            raise ProbeFailed(f"the probe load went over its memory limit of {memory_mb} MB (at {rss:.0f} MB); "
                              "the file is refused (RTSERVE_IMPORT_PROBE_MEMORY_MB sets the limit)")
        if time.monotonic() - start > timeout_s:
            _kill(proc)
            raise ProbeFailed(f"the probe load did not finish within {timeout_s:g} s; the file is refused "
                              "(RTSERVE_IMPORT_PROBE_TIMEOUT_S sets the limit)")
        time.sleep(POLL_S)
    return peak


def _kill(proc: psutil.Popen) -> None:
    for p in [*proc.children(recursive=True), proc]:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def _error(data: dict[str, str]) -> ServingError:
    classes = {cls.code: cls for cls in _subclasses(ModelRefused)}
    return classes.get(data["code"], ModelRefused)(data["message"])


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def probe(request: dict[str, Any]) -> dict[str, Any]:
    """In the child: load, describe, run a sample, check. The metadata and the model's memory."""
    from models import formats
    from models.declared import Declared, TensorDecl
    from models.outputs import Head
    from models.signature import datatype_of
    from models.spec import record_outputs, resolve, sample_inputs, served_outputs

    fmt = formats.get(request["format"])
    module = FRAMEWORK_MODULES.get(fmt.framework)
    if module:
        importlib.import_module(module)
    baseline = _rss_mb()
    file = Path(request["file"])
    declared = Declared.model_validate(request["declared"])
    partial = dict(request["metadata"])
    if declared.outputs:
        partial["declared_outputs"] = [o.model_dump() for o in declared.outputs]
    model = fmt.load(file, partial, "cpu")
    described = fmt.describe(model, file)
    sample = _read_sample(Path(request["sample"])) if request.get("sample") else None
    if sample and not declared.inputs and not described.inputs:  # the sample says the inputs' datatypes and shapes
        declared = declared.model_copy(update={"inputs": [
            TensorDecl(name=n, datatype=datatype_of(a.dtype), shape=[-1, *a.shape[1:]]) for n, a in sample.items()]})
    meta = resolve(described, declared, f"{file.name} ({fmt.name})")
    names = [t["name"] for t in meta["inputs"]]
    inputs = _match(sample, names) if sample else sample_inputs(tuple(_specs(meta["inputs"])))
    if "model_outputs" not in meta:
        meta["model_outputs"] = record_outputs(fmt.predict(model, inputs))
    signature = served_outputs(meta)
    meta.update(signature.to_metadata())
    rows = len(next(iter(inputs.values())))
    try:
        Head(meta, signature)(fmt.predict(model, inputs), rows)
    except ServingError as exc:
        raise ModelRefused(f"on a sample input: {exc.message}") from None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"metadata": meta, "memory_mb": round(max(peak - baseline, 0.0), 1)}


def _specs(data: list[dict[str, Any]]) -> list[Any]:
    from models.signature import TensorSpec

    return [TensorSpec.from_metadata(t) for t in data]


def _read_sample(path: Path) -> dict[str, Any]:
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


def _match(sample: dict[str, Any], names: list[str]) -> dict[str, Any]:
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
