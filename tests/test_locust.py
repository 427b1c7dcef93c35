"""The Locust scenarios run headless against a real server with auth, and every request succeeds."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import ROOT


def test_locust_mix_runs_headless_without_failures(gateway, tmp_path):
    token_env = {"RTSERVE_AUTH_HS256_SECRET_FILE": str(gateway.auth.hs256_secret_file)}
    csv = tmp_path / "locust"
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py", "--headless", "-u", "8", "-r", "8", "-t", "6s",
         "--host", gateway.url, "--csv", str(csv), "--only-summary"],
        cwd=ROOT, env={**os.environ, **token_env}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stats = (tmp_path / "locust_stats.csv").read_text()
    for name in ("digits-sklearn 1 row (miss)", "digits-torch 1 row", "seq-torch 1-64 tokens", "digits-sklearn 64 rows"):
        assert name in stats
    total = [line for line in stats.splitlines() if line.split(",")[1] == "Aggregated"][0].split(",")
    assert int(total[2]) > 50 and int(total[3]) == 0  # requests, failures
