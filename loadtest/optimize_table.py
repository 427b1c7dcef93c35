"""The `rtserve optimize` table of docs/models.md: each conversion of the small models, measured beside its source.

    python -m loadtest.optimize_table                    # every row, 3 s of timing per batch size
    python -m loadtest.optimize_table --measure-s 6 --no-compile

Works on the BentoML store of BENTOML_HOME (the demo models: `python -m demo.build` first) and imports the
test files of tests/models/makers.py into it once (m-xgb, m-lgb, m-pt2, m-mlp). Each row is one
`models.optimize.optimize` call (the subprocess the server runs), with a bound of 0 so every result is shown;
nothing is stored. The AOTInductor row compiles for minutes on a loaded 2-core machine (`--no-compile` skips it).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from models import store
from models.importer import ImportOptions, import_model
from models.optimize import Bounds, OptimizeSettings, optimize
from models.settings import ImportSettings

DIGITS_SAMPLE = "digits"


def made_models(folder: Path) -> None:
    """The test files, imported once into the store as a user's models."""
    from tests.models import makers

    settings = ImportSettings(allow_code_formats=True)
    for name, make in (("m-xgb", makers.cancer_xgboost), ("m-lgb", makers.wine_lightgbm), ("m-pt2", makers.wine_pt2),
                       ("m-mlp", makers.iris_torchscript)):
        if not store.exists(f"{name}:v1"):
            (folder / name).mkdir()
            path = make(folder / name).path
            import_model(name, "v1", path.parent if name == "m-mlp" else path, ImportOptions(allow_code=True), settings)


def rows(compile_too: bool) -> list[tuple[str, str, str | None]]:
    listed = [("digits-torch:v2", "onnx", None), ("digits-torch:v2", "int8", None), ("digits-torch:v2", "int8", DIGITS_SAMPLE),
              ("digits-torch:v2", "compiled", None), ("digits-onnx:v2", "int8", DIGITS_SAMPLE), ("m-mlp:v1", "int8", None),
              ("m-pt2:v1", "onnx", None), ("m-pt2:v1", "compiled", None), ("digits-sklearn:v2", "onnx", None),
              ("m-xgb:v1", "onnx", None), ("m-lgb:v1", "onnx", None)]
    return [r for r in listed if compile_too or r[:2] != ("m-pt2:v1", "compiled")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measure-s", type=float, default=3.0, help="seconds of timing per batch size (default: 3)")
    parser.add_argument("--no-compile", action="store_true", help="skip the AOTInductor compile (minutes)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="rtserve-optimize-table-"))
    made_models(folder)
    from demo.data import digits

    digits_sample = folder / "digits.npy"
    np.save(digits_sample, digits().x_test.reshape(-1, 1, 8, 8))
    settings = OptimizeSettings(measure_s=args.measure_s)
    print("| source (format) | --to | sample rows | agreement | largest diff | batch 1 ms | batch 32 ms | size, KB | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for tag, target, sample in rows(not args.no_compile):
        out = Path(tempfile.mkdtemp(dir=folder))
        r = optimize(tag, target, out, digits_sample if sample else None, Bounds(0.0, settings.tolerance), settings)
        b1, b32, size = r["latency_ms"]["batch_1"], r["latency_ms"]["batch_32"], r["size"]
        print(f"| {tag} ({r['source_format']}) | {target} ({r['format']}) | {r['rows']} | {r['agreement']:.2%} "
              f"({r['counted_as']}) | {max(r['max_abs_diff'].values(), default=0):.2g} | "
              f"{b1['source_ms']:.3f} / {b1['optimized_ms']:.3f} ({b1['speedup']}x) | "
              f"{b32['source_ms']:.3f} / {b32['optimized_ms']:.3f} ({b32['speedup']}x) | "
              f"{size['source_bytes'] / 1024:.1f} / {size['optimized_bytes'] / 1024:.1f} | {r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
