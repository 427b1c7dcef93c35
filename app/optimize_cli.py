"""`rtserve optimize NAME:VERSION --to onnx|int8|compiled`: the server converts a stored version, measures it
beside its source and serves it as a new version with no traffic; the report is printed."""

from __future__ import annotations

import argparse
from typing import Any

from app import client
from app.cli_client import CommandError, command
from models.optimize.settings import OptimizeSettings


def register(sub: argparse._SubParsersAction) -> None:
    defaults = OptimizeSettings.model_fields
    c = command(sub, "optimize", _optimize, "make an ONNX, int8 or compiled version of a stored version on the server, "
                "measured beside it (agreement on a sample, latency at batch 1 and 32, size) and served with no traffic: "
                "canary it like any version")
    c.add_argument("source", metavar="NAME:VERSION", help="the version to optimize, as the model store names it")
    c.add_argument("--to", required=True, choices=("onnx", "int8", "compiled"),
                   help="onnx: PyTorch, scikit-learn, XGBoost or LightGBM to ONNX; int8: dynamic int8 of the fully "
                   "connected layers (through ONNX); compiled: an AOTInductor package (frozen TorchScript for TorchScript)")
    c.add_argument("--sample", help="rows to compare on, .npy (or .npz by input name) (default: the server's seeded rows, "
                   f"{defaults['sample_rows'].default} of them)")
    c.add_argument("--version", help="the new version's name (default: VERSION-TO, e.g. v1-int8)")
    c.add_argument("--min-agreement", type=float, help="least agreement with the source on the sample, 0 to 1: top-1 for "
                   "classifiers, the share of rows within the tolerance otherwise (default: the server's, "
                   f"{defaults['min_agreement'].default:g} unless RTSERVE_OPTIMIZE_MIN_AGREEMENT says otherwise)")
    c.add_argument("--tolerance", type=float, help="how far a regressor's or a tensor's value may move and still agree, "
                   "|new - source| <= tol * (1 + |source|) (default: the server's, "
                   f"{defaults['tolerance'].default:g} unless RTSERVE_OPTIMIZE_TOLERANCE says otherwise)")


def _optimize(a: argparse.Namespace) -> None:
    name, sep, version = a.source.partition(":")
    if not sep or not name or not version:
        raise CommandError(f"optimize: give the source as NAME:VERSION, not '{a.source}'")
    doc = client.optimize_model(name, version, a.to, new_version=a.version, sample=a.sample,
                                min_agreement=a.min_agreement, tolerance=a.tolerance)
    report = doc["report"]
    print(f"optimize: {doc['model']}:{doc['version']} from {doc['source_version']} ({report['method']}), served by every "
          f"worker with no traffic; canary it: rtserve canary start {doc['model']} {doc['version']}")
    for line in report_lines(report):
        print(f"  {line}")


def report_lines(report: dict[str, Any]) -> list[str]:
    """The report as a person reads it: agreement, the latency table, the sizes."""
    diffs = ", ".join(f"{k} {v:.3g}" for k, v in report["max_abs_diff"].items()) or "-"
    size = report["size"]
    lines = [
        (f"agreement {report['agreement']:.2%} ({report['counted_as']}, bound {report['min_agreement']:.2%}) on "
         f"{report['sample']['rows']} rows ({report['sample']['from']}); largest absolute difference: {diffs}"),
        f"{'latency, 1 thread':<18} {'source ms':>10} {'optimized ms':>13} {'speedup':>8}",
    ]
    for batch, t in report["latency_ms"].items():
        lines.append(f"{batch.replace('_', ' '):<18} {t['source_ms']:>10.4f} {t['optimized_ms']:>13.4f} {t['speedup']:>7}x")
    lines.append(f"size {size['source_bytes'] / 2**20:.3f} MB -> {size['optimized_bytes'] / 2**20:.3f} MB "
                 f"({size['ratio']:.2f}x); {report['seconds']:.1f} s to convert and measure")
    lines.extend(f"note: {n}" for n in report.get("notes", []))
    return lines
