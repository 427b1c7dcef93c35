"""An optimized version beside its source: agreement on the sample, and latency measured side by side.

Agreement is on the served outputs (probabilities and label, predictions, tensors), as a client sees them:
- classifiers: top-1 agreement, the share of rows given the same label;
- regressors and tensor models: the share of rows whose every value is within the tolerance,
  |optimized - source| <= tolerance * (1 + |source|).
The largest absolute difference of every float output is reported too.

Latency: source and optimized are called in turns at each batch size (one call of one, then one of the
other), so both see the same load on the machine; the median of each is reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from models.outputs import CLASSIFICATION_TASKS

Call = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
WARMUP_CALLS = 5
"""Untimed calls of each batch size first: TorchScript profiles a new shape for its first calls, then optimizes."""
MIN_CALLS = 5


def agreement(task: str, source: dict[str, np.ndarray], optimized: dict[str, np.ndarray], tolerance: float) -> dict[str, Any]:
    """`agreement` (0..1), how it was counted, and the largest absolute difference per float output."""
    diffs = {name: float(np.max(np.abs(optimized[name].astype(np.float64) - arr.astype(np.float64))))
             for name, arr in source.items() if arr.dtype.kind == "f" and arr.size}
    if task in CLASSIFICATION_TASKS:
        same = source["label"] == optimized["label"]
        return {"agreement": float(np.mean(same)), "counted_as": "top-1 label", "max_abs_diff": diffs,
                "rows": len(same)}
    rows = len(next(iter(source.values())))
    within = np.ones(rows, dtype=bool)
    for name, arr in source.items():
        if arr.dtype.kind != "f":
            within &= (arr == optimized[name]).reshape(rows, -1).all(axis=1)
            continue
        ref = arr.astype(np.float64).reshape(rows, -1)
        close = np.abs(optimized[name].astype(np.float64).reshape(rows, -1) - ref) <= tolerance * (1.0 + np.abs(ref))
        within &= close.all(axis=1)
    return {"agreement": float(np.mean(within)), "counted_as": f"rows within tolerance {tolerance:g}",
            "max_abs_diff": diffs, "rows": rows}


def batch_of(sample: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """`rows` rows of the sample, repeated as needed."""
    out = {}
    for name, arr in sample.items():
        reps = -(-rows // len(arr))
        out[name] = np.ascontiguousarray(np.concatenate([arr] * reps)[:rows])
    return out


def latency(source: Call, optimized: Call, sample: dict[str, np.ndarray], batches: tuple[int, ...],
            seconds: float) -> dict[str, dict[str, float]]:
    """Median milliseconds per call at each batch size, for both, measured in turns for `seconds` per size."""
    report = {}
    for rows in batches:
        x = batch_of(sample, rows)
        for _ in range(WARMUP_CALLS):
            source(x)
            optimized(x)
        times: dict[str, list[float]] = {"source": [], "optimized": []}
        deadline = time.perf_counter() + seconds
        while len(times["source"]) < MIN_CALLS or time.perf_counter() < deadline:
            for which, call in (("source", source), ("optimized", optimized)):
                start = time.perf_counter()
                call(x)
                times[which].append(time.perf_counter() - start)
        s, o = (float(np.median(times[k])) * 1e3 for k in ("source", "optimized"))
        report[f"batch_{rows}"] = {"source_ms": round(s, 4), "optimized_ms": round(o, 4),
                                   "speedup": round(s / o, 2) if o > 0 else None, "calls": len(times["source"])}
    return report
