"""`rtserve optimize`: a stored version converted to ONNX, quantized to int8 or compiled, and measured beside it.

    report = optimize("iris:v1", "int8", Path("/tmp/out"), sample=None, bounds=Bounds(0.99, 0.01))

The conversion and its measurement run in a throw-away subprocess with a time and a memory limit
(`models.optimize.job`, through `models.probe.run_isolated`), never in a serving worker. What it leaves in
`out` is a model file and its model.yaml, ready for the importer (`models.importer.import_model` with
`made_here`), which probes it like any deploy. The report says how far the result agrees with its source on
the sample, its latency beside the source's at batch 1 and 32, and both sizes; a result agreeing less than
`bounds.min_agreement` is refused with that report (`AgreementTooLow`), before anything is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml

from core.errors import AgreementTooLow, ModelNotFound, OptimizationRefused
from models.optimize.convert import TARGETS, check_supported
from models.optimize.isolated import Limits, run_isolated
from models.optimize.settings import OptimizeSettings

__all__ = ["TARGETS", "Bounds", "OptimizeSettings", "check_supported", "optimize", "source_metadata"]


@dataclass(frozen=True)
class Bounds:
    """How close to its source an optimized version must stay (see `models.optimize.compare`)."""

    min_agreement: float
    tolerance: float


def source_metadata(tag: str) -> tuple[Path, dict[str, Any]]:
    """The stored version's folder and metadata; ModelNotFound, or OptimizationRefused for a version made of
    no single file (an ensemble)."""
    try:
        model = bentoml.models.get(tag)
    except (bentoml.exceptions.NotFound, ValueError):
        raise ModelNotFound(f"{tag} is not in the model store") from None
    meta = dict(model.info.metadata)
    if "file" not in meta or "format" not in meta:
        raise OptimizationRefused(f"{tag} is not a model file the optimizer can read (an ensemble of served models, or "
                                  "a version saved before formats were recorded): optimize its members")
    return Path(model.path), meta


def optimize(tag: str, target: str, out: Path, sample: Path | None, bounds: Bounds,
             settings: OptimizeSettings) -> dict[str, Any]:
    """Convert `tag` into `out` and measure it; the report. Blocking (minutes for a compile): call it off the
    event loop. Raises ModelNotFound, OptimizationRefused (4xx) or AgreementTooLow (4xx, with the report)."""
    root, meta = source_metadata(tag)
    check_supported(target, meta["format"])
    request = {"metadata": meta, "root": str(root), "out": str(out), "target": target,
               "sample": str(sample) if sample else None, "sample_rows": settings.sample_rows,
               "tolerance": bounds.tolerance, "measure_s": settings.measure_s}
    answer, peak = run_isolated("models.optimize.job", request, Limits(
        settings.timeout_s, settings.memory_mb, "the optimization", "nothing was stored", "RTSERVE_OPTIMIZE_TIMEOUT_S",
        "RTSERVE_OPTIMIZE_MEMORY_MB", OptimizationRefused))
    report = {"source": tag, **answer["report"], "min_agreement": bounds.min_agreement, "peak_memory_mb": round(peak, 1)}
    if report["agreement"] < bounds.min_agreement:
        raise AgreementTooLow(
            f"the {target} version of {tag} agrees with it on {report['agreement']:.2%} of {report['rows']} sample rows "
            f"({report['counted_as']}; largest differences {_diffs(report)}), under the bound of "
            f"{bounds.min_agreement:.2%}; nothing was stored (--min-agreement, RTSERVE_OPTIMIZE_MIN_AGREEMENT)", report)
    return report


def _diffs(report: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in report["max_abs_diff"].items()) or "none"
