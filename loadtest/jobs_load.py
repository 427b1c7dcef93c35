"""Real-time latency while batch jobs run: the production path at half of saturation, without and with jobs.

    python -m loadtest.jobs_load               # about 3 minutes

`ours-prod` of the benchmark (auth, rate limits, cache, metrics, Redis; one worker) serves
digits-sklearn with unique inputs. A closed-loop wrk run at 64 connections measures saturation;
then wrk holds half of it as an open loop (Poisson arrivals over 256 connections) for `--seconds`,
alone and then while 100,000-row jobs on the same model run back to back, `--rounds` times (the
tail at half of saturation moves from run to run on a shared machine, so one pair proves little).
The first job is submitted, watched and fetched through `rtserve job`. Prints real-time p50/p99
both ways (medians over the rounds) and the jobs' rows per second. Passes when p99 with jobs is
within 20 % of p99 without.
"""

from __future__ import annotations

import argparse
import os
import statistics
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
from loadtest.servers import use_project_store

ROWS = 100_000


class BackToBack:
    """100,000-row jobs on digits-sklearn, one after another, until stopped (the one running is cancelled)."""

    def __init__(self, url: str, token: str, upload: bytes) -> None:
        self.client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        self.upload = upload
        self.rates: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            job = self.client.post("/v2/jobs", params={"model": "digits-sklearn"}, content=self.upload).json()
            while (doc := self.client.get(f"/v2/jobs/{job['id']}").json())["state"] not in ("succeeded", "failed", "cancelled"):
                if self._stop.is_set():
                    self.client.post(f"/v2/jobs/{job['id']}/cancel")
                time.sleep(0.2)
            if doc["state"] == "succeeded":
                self.rates.append(doc["rows_per_second"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20, help="length of each measurement")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of measurements, without then with jobs")
    parser.add_argument("--fraction", type=float, default=0.5)
    args = parser.parse_args(argv)
    use_project_store()
    scenario = SCENARIOS["sklearn-miss"]
    alone: list[dict] = []
    loaded: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="rtserve-jobs-load-") as tmp:
        work = Path(tmp)
        server = targets(work, 1)["ours-prod"]
        server.log_path = work / "server.log"
        server.start()
        try:
            req = request_for("ours-prod", scenario)
            saturation = measure(server, scenario, req, 64, 10, work).rps
            rate = saturation * args.fraction
            rows = np.tile(load_digits().data.astype(np.float32), (ROWS // 1797 + 1, 1))[:ROWS]
            np.save(work / "rows.npy", rows)
            from gateway.auth import AuthSettings
            from gateway.tokens import mint

            token = mint(AuthSettings(hs256_secret_file=work / "jwt-secret"), subject="load", scopes="batch", tenant="load",
                         ttl_s=3600)
            jobs = BackToBack(server.url, token, (work / "rows.npy").read_bytes())
            for round_ in range(args.rounds):
                alone.append(run_wrk(server, req, 256, args.seconds, work, rate=rate))
                result: dict = {}
                wrk = threading.Thread(target=lambda r=result: r.update(run_wrk(server, req, 256, args.seconds, work, rate=rate)))
                wrk.start()
                if round_ == 0:
                    through_cli(server.url, work)
                jobs.start()
                wrk.join()
                jobs.stop()
                loaded.append(result)
                print(f"round {round_ + 1}: p99 without jobs {alone[-1]['p99_us'] / 1000:.2f} ms, "
                      f"with jobs {result['p99_us'] / 1000:.2f} ms", flush=True)
        finally:
            server.stop()
    p99_alone = statistics.median(r["p99_us"] / 1000 for r in alone)
    p99_jobs = statistics.median(r["p99_us"] / 1000 for r in loaded)
    print(f"saturation {saturation:,.0f} req/s; open loop at {rate:,.0f} req/s, {args.rounds} x {args.seconds:g} s each way")
    for name, runs in (("without jobs", alone), ("with jobs", loaded)):
        p99s = ", ".join(f"{r['p99_us'] / 1000:.2f}" for r in runs)
        print(f"{name + ':':<14}p50 {statistics.median(r['p50_us'] for r in runs) / 1000:.2f} ms, "
              f"p99 {statistics.median(r['p99_us'] for r in runs) / 1000:.2f} ms (median of {p99s}), "
              f"non-2xx {sum(r['non2xx'] for r in runs)}")
    rates = ", ".join(f"{r:,.0f}" for r in jobs.rates)
    print(f"jobs of {ROWS:,} rows finished while measured: {len(jobs.rates)}, rows/s {rates}")
    ok = p99_jobs <= 1.2 * p99_alone
    print(f"p99 with jobs / without: {p99_jobs / p99_alone:.2f} ({'within' if ok else 'over'} 1.2)")
    return 0 if ok else 1


def through_cli(url: str, work: Path) -> None:
    """One job submitted, watched and fetched with `rtserve job`, as a user would."""
    env = {**os.environ, "RTSERVE_URL": url, "RTSERVE_AUTH_HS256_SECRET_FILE": str(work / "jwt-secret"), "RTSERVE_TENANT": "load"}
    rtserve = str(Path(sys.executable).parent / "rtserve")
    cli = subprocess.run([rtserve, "job", "submit", "digits-sklearn", str(work / "rows.npy"), "--wait"], check=False, env=env,
                         capture_output=True, text=True, timeout=600)
    print(cli.stdout.strip().splitlines()[-1] if cli.returncode == 0 else cli.stderr, flush=True)
    job_id = cli.stdout.split()[1].rstrip(":")
    fetched = subprocess.run([rtserve, "job", "get", job_id, "-o", str(work / "out.ndjson")], check=False, env=env,
                             capture_output=True, text=True, timeout=120)
    print(fetched.stderr.strip(), flush=True)


if __name__ == "__main__":
    sys.exit(main())
