"""Real-time latency while batch jobs run: the production path at half of saturation, without and with jobs.

    python -m loadtest.jobs_load               # about 2 minutes

`ours-prod` of the benchmark (auth, rate limits, cache, metrics, Redis; one worker) serves
digits-sklearn with unique inputs. A closed-loop wrk run at 64 connections measures saturation;
then wrk holds half of it as an open loop (Poisson arrivals over 256 connections) for `--seconds`,
first alone, then while 100,000-row jobs on the same model run back to back, the first one
submitted, watched and fetched through `rtserve job`. Prints real-time p50/p99 both ways and the
jobs' rows per second. Passes when p99 with jobs is within 20 % of p99 without.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from sklearn.datasets import load_digits

from loadtest.bench import measure, request_for, run_wrk, targets
from loadtest.scenarios import SCENARIOS

ROWS = 100_000


def jobs_back_to_back(url: str, token: str, upload: bytes, stop: threading.Event, rates: list[float]) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        while not stop.is_set():
            job = client.post("/v2/jobs", params={"model": "digits-sklearn"}, content=upload).json()
            while (doc := client.get(f"/v2/jobs/{job['id']}").json())["state"] not in ("succeeded", "failed", "cancelled"):
                time.sleep(0.2)
            rates.append(doc["rows_per_second"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--fraction", type=float, default=0.5)
    args = parser.parse_args(argv)
    scenario = SCENARIOS["sklearn-miss"]
    with tempfile.TemporaryDirectory(prefix="rtserve-jobs-load-") as tmp:
        work = Path(tmp)
        server = targets(work, 1)["ours-prod"]
        server.start()
        try:
            req = request_for("ours-prod", scenario)
            saturation = measure(server, scenario, req, 64, 10, work).rps
            rate = saturation * args.fraction
            rows = np.tile(load_digits().data.astype(np.float32), (ROWS // 1797 + 1, 1))[:ROWS]
            np.save(work / "rows.npy", rows)
            env = {**os.environ, "RTSERVE_URL": server.url, "RTSERVE_AUTH_HS256_SECRET_FILE": str(work / "jwt-secret"),
                   "RTSERVE_TENANT": "load"}
            rtserve = str(Path(sys.executable).parent / "rtserve")

            alone = run_wrk(server, req, 256, args.seconds, work, rate=rate)
            stop, rates = threading.Event(), []
            result: dict = {}
            wrk = threading.Thread(target=lambda: result.update(run_wrk(server, req, 256, args.seconds, work, rate=rate)))
            wrk.start()
            cli = subprocess.run([rtserve, "job", "submit", "digits-sklearn", str(work / "rows.npy"), "--wait"], check=False, env=env,
                                 capture_output=True, text=True, timeout=600)
            print(cli.stdout.strip().splitlines()[-1] if cli.returncode == 0 else cli.stderr)
            job_id = cli.stdout.split()[1].rstrip(":")
            fetched = subprocess.run([rtserve, "job", "get", job_id, "-o", str(work / "out.ndjson")], check=False, env=env,
                                     capture_output=True, text=True, timeout=120)
            print(fetched.stderr.strip())
            from gateway.auth import AuthSettings
            from gateway.tokens import mint

            token = mint(AuthSettings(hs256_secret_file=work / "jwt-secret"), subject="load", scopes="batch", tenant="load",
                         ttl_s=3600)
            more = threading.Thread(target=jobs_back_to_back, args=(server.url, token, (work / "rows.npy").read_bytes(), stop, rates))
            more.start()
            wrk.join()
            stop.set()
            more.join()
        finally:
            server.stop()
    p99_alone, p99_jobs = alone["p99_us"] / 1000, result["p99_us"] / 1000
    print(f"saturation {saturation:,.0f} req/s; open loop at {rate:,.0f} req/s for {args.seconds:g} s")
    print(f"without jobs: p50 {alone['p50_us'] / 1000:.2f} ms, p99 {p99_alone:.2f} ms, non-2xx {alone['non2xx']}")
    print(f"with jobs:    p50 {result['p50_us'] / 1000:.2f} ms, p99 {p99_jobs:.2f} ms, non-2xx {result['non2xx']}")
    print(f"jobs of {ROWS:,} rows during it: {1 + len(rates)}, rows/s " + ", ".join(f"{r:,.0f}" for r in rates))
    ok = p99_jobs <= 1.2 * p99_alone
    print(f"p99 with jobs / without: {p99_jobs / p99_alone:.2f} ({'within' if ok else 'over'} 1.2)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
