"""Run the atheris targets: seed corpora from real requests, N seconds each, a table of what happened.

    python -m fuzz.run --seconds 60                 # every target (what `make fuzz` runs)
    python -m fuzz.run --seconds 10 --targets decode_json

Needs the demo models in the store (BENTOML_HOME): their signatures and real requests built from
them seed the corpora. Corpora grow across runs under --out; a crash leaves its input there under
crashes/<target>/ and makes the exit status 1. Reproduce one with
`RTSERVE_FUZZ_SIGNATURES=<out>/signatures.json python -m fuzz.<target> <crash file>`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fuzz import seeds
from fuzz.common import SIGNATURES_ENV

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"decode_json": "json", "decode_binary": "binary", "predict_rows": "rows", "token_claims": "claims",
           "job_upload": "upload", "request_head": "head", "repository_params": "repository"}  # target -> seed corpus kind
RSS_LIMIT_MB = 512


@dataclass
class Result:
    target: str
    seconds: float
    executions: int
    coverage: int
    corpus: int
    crashed: bool
    log: Path


def write_seeds(out: Path) -> Path:
    """The signatures file the harnesses read, and each target's seed corpus (real requests)."""
    out.mkdir(parents=True, exist_ok=True)
    models = seeds.served_models()
    signatures = out / "signatures.json"
    signatures.write_text(json.dumps({m.name: m.signature.to_metadata() for m in models}, indent=1))
    for target, kind in TARGETS.items():
        corpus = out / "corpus" / target
        corpus.mkdir(parents=True, exist_ok=True)
        for i, data in enumerate(seeds.corpus(kind)):
            (corpus / f"seed-{i:03d}").write_bytes(data)
    return signatures


def run_target(target: str, seconds: int, out: Path, signatures: Path) -> Result:
    crashes = out / "crashes" / target
    crashes.mkdir(parents=True, exist_ok=True)
    log = out / f"{target}.log"
    corpus = out / "corpus" / target
    started = time.monotonic()
    with log.open("wb") as f:
        proc = subprocess.run(
            [sys.executable, "-m", f"fuzz.{target}", str(corpus), f"-max_total_time={seconds}", f"-rss_limit_mb={RSS_LIMIT_MB}",
             "-malloc_limit_mb=256", "-timeout=10", f"-artifact_prefix={crashes}/", "-print_final_stats=1"],
            check=False, cwd=ROOT, env={**os.environ, SIGNATURES_ENV: str(signatures)}, stdout=f, stderr=subprocess.STDOUT,
        )
    text = log.read_text(errors="replace")
    executions = re.findall(r"stat::number_of_executed_units: (\d+)", text)
    coverage = re.findall(r"\bcov: (\d+)", text)
    return Result(
        target=target,
        seconds=time.monotonic() - started,
        executions=int(executions[-1]) if executions else 0,
        coverage=int(coverage[-1]) if coverage else 0,
        corpus=sum(1 for _ in corpus.iterdir()),
        crashed=proc.returncode != 0,
        log=log,
    )


def table(results: list[Result]) -> str:
    lines = ["| target | seconds | inputs executed | coverage (edges) | corpus | crashes |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| `{r.target}` | {r.seconds:.0f} | {r.executions:,} | {r.coverage} | {r.corpus} | {1 if r.crashed else 0} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60, help="fuzzing time per target")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated, from: " + ", ".join(TARGETS))
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "fuzz", help="corpora, crashes and logs")
    args = parser.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target(s) {sorted(unknown)}")
    signatures = write_seeds(args.out)
    results = [run_target(t, args.seconds, args.out, signatures) for t in targets]
    print(table(results))
    for r in results:
        if r.crashed:
            print(f"\n{r.target} crashed; log {r.log}, input under {args.out / 'crashes' / r.target}:", file=sys.stderr)
            print("\n".join(r.log.read_text(errors="replace").splitlines()[-40:]), file=sys.stderr)
    return 1 if any(r.crashed for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
