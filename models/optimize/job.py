"""The optimizer's throw-away subprocess: convert one stored version, then measure the result beside it.

    python -m models.optimize.job REQUEST.json RESULT.json     (REQUEST as `models.optimize.optimize` writes it)

It loads the source through its format's reader (a code-running format only after its file matches the
SHA-256 recorded when it was deployed), makes the sample (the user's, or seeded rows inside the declared
value ranges), converts (`models.optimize.convert`), loads the result through its own reader, and
compares the two on the served outputs (`models.optimize.compare`), each on one thread. It writes the
new version's model.yaml (the source's signature, task, class names and batching) beside the files, and
answers the report. Conversions and compilers can crash, hang or balloon: that is why this is a subprocess
with limits, as the probe load is.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from core.errors import OptimizationRefused, ServingError
from models.optimize.compare import agreement, batch_of, latency
from models.optimize.convert import TORCH, Converted, convert

BATCHES = (1, 32)
SEED = 0
CPU_ONLY = ("int8", "compiled")
"""Targets whose kernels are the CPU's: int8 matrix products, an AOTInductor package compiled for the CPU."""


def run(request: dict[str, Any]) -> dict[str, Any]:
    from models import formats
    from models.importer import sha256
    from models.outputs import Head
    from models.signature import Signature, TensorSpec

    started = time.perf_counter()
    meta, root, out = request["metadata"], Path(request["root"]), Path(request["out"])
    source_format = meta["format"]
    file = root / meta["file"]
    reader = formats.get(source_format)
    if reader.runs_code and meta.get("sha256", {}).get(meta["file"]) != sha256(file):
        raise OptimizationRefused(f"{file.name} does not match the SHA-256 recorded when it was deployed")
    loaded = _load(reader, file, meta)
    _one_thread()
    specs = tuple(TensorSpec.from_metadata(t) for t in meta["inputs"])
    sample, sample_from = _sample(request, specs)
    converted = convert(request["target"], source_format, loaded, {**meta, "_file": str(file)}, batch_of(sample, 2), out)
    made = formats.get(converted.format)
    optimized = _load(made, out / converted.file, {"model_outputs": meta["model_outputs"]})
    head = Head(meta, Signature.from_metadata(meta))
    rows = len(next(iter(sample.values())))

    def served(fmt: Any, model: Any) -> Any:
        return lambda x: head(fmt.predict(model, x), len(next(iter(x.values()))))

    source_call, optimized_call = served(reader, loaded), served(made, optimized)
    try:
        agreed = agreement(meta["task"], source_call(sample), optimized_call(sample), request["tolerance"])
    except ServingError as exc:
        raise OptimizationRefused(f"the {converted.format} version does not answer as its source does: {exc.message}") from None
    timings = latency(source_call, optimized_call, sample, BATCHES, request["measure_s"])
    _write_config(out, converted, meta, request["target"])
    size = {"source_bytes": _size(root, meta), "optimized_bytes": sum(p.stat().st_size for p in out.rglob("*")
                                                                       if p.is_file() and p.name != "model.yaml")}
    return {"report": {
        "target": request["target"], "source_format": source_format, "format": converted.format,
        "method": converted.method, "notes": converted.notes,
        "sample": {"rows": rows, "from": sample_from}, **agreed, "tolerance": request["tolerance"],
        "latency_ms": timings, "threads": 1, "size": {**size, "ratio": round(size["optimized_bytes"] / max(size["source_bytes"], 1), 3)},
        "seconds": round(time.perf_counter() - started, 2),
    }}


def _one_thread() -> None:
    """Both sides measured on one intra-op thread (onnxruntime's is set per session in `_load`)."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _load(reader: Any, file: Path, meta: dict[str, Any]) -> Any:
    if reader.name == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        return reader.load(file, meta, "cpu", options)
    return reader.load(file, meta, "cpu")


def _sample(request: dict[str, Any], specs: tuple[Any, ...]) -> tuple[dict[str, np.ndarray], str]:
    """The user's sample under the model's input names, or `sample_rows` seeded rows: uniform inside a declared
    value range, standard normal where none is declared."""
    from models.probe_child import match_sample, read_sample

    names = [s.name for s in specs]
    if request.get("sample"):
        sample = match_sample(read_sample(Path(request["sample"])), names)
        for spec in specs:
            if sample[spec.name].dtype.kind in "fiu" and spec.dtype.kind in "fiu":
                sample[spec.name] = sample[spec.name].astype(spec.dtype, copy=False)
        return sample, "the request's sample"
    rng = np.random.default_rng(SEED)
    rows = request["sample_rows"]
    sample = {}
    for spec in specs:
        if spec.datatype == "BYTES":
            raise OptimizationRefused(f"input '{spec.name}' takes strings: give a sample of them (--sample)")
        shape = (rows, *(8 if d < 0 else d for d in spec.row_shape))
        if spec.min_value is not None and spec.max_value is not None:
            values = rng.uniform(spec.min_value, spec.max_value, shape)
        else:
            values = rng.standard_normal(shape)
        sample[spec.name] = (np.rint(values) if spec.dtype.kind in "iu" else values).astype(spec.dtype)
    return sample, f"{rows} generated rows (seed {SEED}): uniform in declared value ranges, else standard normal"


def _write_config(out: Path, converted: Converted, meta: dict[str, Any], target: str) -> None:
    """The new version's model.yaml: what the source serves, declared, so the result serves the same."""
    config: dict[str, Any] = {
        "format": converted.format,
        "task": meta["task"],
        "inputs": meta["inputs"],
        "softmax": bool(meta.get("softmax")),
        "batching": bool(meta.get("batching", True)),
    }
    if config["batching"] and meta.get("batch_settings"):  # the settings its model.yaml suggested, kept
        config["batching"] = meta["batch_settings"]
    if converted.format in TORCH or converted.format == "torch_aoti":  # TorchScript and packages carry no output names
        config["outputs"] = meta["model_outputs"]
    for key in ("class_names", "modes"):
        if meta.get(key):
            config[key] = meta[key]
    config["device"] = "cpu" if target in CPU_ONLY else meta.get("device", "auto")
    (out / "model.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def _size(root: Path, meta: dict[str, Any]) -> int:
    """The source's model files (the ones recorded with their hashes; its whole folder but model.yaml otherwise)."""
    files = [root / f for f in meta.get("sha256", {})] or [p for p in root.rglob("*") if p.name != "model.yaml"]
    return sum(p.stat().st_size for p in files if p.is_file())


def main(argv: list[str]) -> int:
    from models.optimize.isolated import child_main

    return child_main(argv, run, OptimizationRefused, "the optimization failed")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
