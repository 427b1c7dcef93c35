"""The format x entry-path table, from the cells tests/app/test_deploy_matrix.py recorded in its last run.

    python -m tests.app.deploy_matrix_table            # Markdown, to stdout
    python -m tests.app.deploy_matrix_table --check    # also exit 1 when a cell failed or did not run

A cell reads "served (the tolerance it was checked to)" or "refused (status: reason)"; one that failed, or
was not run, says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "build" / "deploy-matrix.json"
PATHS = {
    "cli": "CLI (`rtserve deploy`)",
    "http": "tritonclient HTTP",
    "grpc": "tritonclient gRPC",
    "bentoml": "BentoML saver (`bentoml:TAG`)",
    "python": "Python `deploy_model`",
}
"""Entry path -> its column heading."""


def table(doc: dict) -> str:
    cells = doc["cells"]
    lines = ["| format | " + " | ".join(PATHS[p] for p in doc["paths"]) + " |",
             "|---|" + "---|" * len(doc["paths"])]
    for row, title in doc["rows"].items():
        shown = []
        for path in doc["paths"]:
            cell = cells.get(f"{row}|{path}")
            shown.append("not run" if cell is None else cell.get("text", "FAILED"))
        lines.append(f"| {title} | " + " | ".join(s.replace("|", "/") for s in shown) + " |")
    ways = sorted({w for c in cells.values() for w in c.get("ways", [])})
    if ways:
        lines.append("")
        lines.append(f"Each served cell was asked over: {', '.join(ways)} (`.npy`/`.npz` jobs for numeric inputs only).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a cell failed or did not run")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON the test module wrote")
    a = parser.parse_args(argv)
    if not a.results.exists():
        print(f"{a.results}: no results; run pytest tests/app/test_deploy_matrix.py first", file=sys.stderr)
        return 1
    doc = json.loads(a.results.read_text())
    print(table(doc))
    bad = [k for k in (f"{r}|{p}" for r in doc["rows"] for p in doc["paths"])
           if doc["cells"].get(k, {}).get("verdict") not in ("served", "refused")]
    return 1 if a.check and bad else 0


if __name__ == "__main__":
    sys.exit(main())
