"""Redis operations per request, by configuration: `INFO commandstats` deltas over N requests.

One replica (one worker) on a Redis of its own, for each configuration: the production path with
the cache's Redis tier off for cheap models (the default) and on for every version, and rate limits
leased in blocks (the default tier) or decided one request at a time (a tier with a burst under 32).
The background work (route sync, controller lease, statistics) is measured idle first and taken off.

    python -m loadtest.redis_ops --requests 2000
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from deploy.cluster import replica_env
from gateway.auth import AuthSettings
from gateway.tokens import mint
from loadtest.servers import BIN, Server, free_port

CONFIGS = {
    "cache Redis tier off (default), limits leased in blocks": {},
    "cache Redis tier on, limits leased in blocks": {"RTSERVE_CACHE_REDIS_MIN_COST_MS": "0"},
    "cache Redis tier on, limits one request at a time (burst < 32)": {
        "RTSERVE_CACHE_REDIS_MIN_COST_MS": "0",
        "RTSERVE_RATELIMIT_BURST": "16",
    },
}
MODEL = "digits-sklearn"


def commandstats(port: int) -> Counter:
    """calls per command since the server started."""
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"], capture_output=True, text=True, check=True)
    calls = Counter()
    for line in out.stdout.splitlines():
        if line.startswith("cmdstat_"):
            name, fields = line[len("cmdstat_"):].split(":", 1)
            calls[name] = int(dict(f.split("=") for f in fields.split(","))["calls"])
    return calls


def measure(env: dict[str, str], requests: int, idle_s: float, work: Path) -> dict:
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL)
    secret = work / "jwt-secret"
    secret.write_text(secrets.token_hex(32))
    home = Path(tempfile.mkdtemp(dir=work))
    server_env = {**replica_env(secret, f"redis://127.0.0.1:{redis_port}/0", 1, home), "RTSERVE_RATELIMIT_RATE": "1000000",
                  "RTSERVE_RATELIMIT_BURST": "1000000", **env}
    server = Server("rtserve", [str(BIN / "bentoml"), "serve", "--host", "127.0.0.1", "--port", "{port}"],
                    "/v2/health/ready", server_env, work / f"serve-{redis_port}.log")
    token = mint(AuthSettings(hs256_secret_file=secret), subject="bench", scopes="predict", tenant="bench", ttl_s=3600)
    rows = np.random.default_rng(0).integers(0, 17, size=(requests + 100, 64)).astype(float)
    try:
        server.start(timeout=300)
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:

            def send(row: np.ndarray) -> None:
                body = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": row.tolist()}]}
                r = client.post(f"/v2/models/{MODEL}/infer", json=body)
                r.raise_for_status()

            for row in rows[requests:]:  # warm-up: routes read, blocks leased, scripts loaded
                send(row)
            before = commandstats(redis_port)
            time.sleep(idle_s)
            idle = commandstats(redis_port) - before
            result = {}
            for kind, batch in (("miss", rows[:requests]), ("hit", np.repeat(rows[:1], requests, axis=0))):
                before, started = commandstats(redis_port), time.monotonic()
                for row in batch:
                    send(row)
                took = time.monotonic() - started
                delta = commandstats(redis_port) - before
                delta.subtract({k: v * took / idle_s for k, v in idle.items()})
                result[kind] = {k: round(v / requests, 4) for k, v in delta.items() if v / requests >= 0.0005}
        result["idle_per_s"] = {k: round(v / idle_s, 2) for k, v in idle.items()}
        return result
    finally:
        server.stop()
        redis.terminate()
        redis.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--idle-s", type=float, default=5.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rtserve-redis-ops-"))
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    print("| configuration | miss: Redis calls per request | hit: Redis calls per request | idle, per second |")
    print("|---|---|---|---|")
    for name, env in CONFIGS.items():
        r = measure(env, args.requests, args.idle_s, work)

        def cell(d: dict) -> str:
            return f"{sum(d.values()):.3f} ({', '.join(f'{k} {v:g}' for k, v in sorted(d.items())) or '-'})"

        print(f"| {name} | {cell(r['miss'])} | {cell(r['hit'])} | {cell(r['idle_per_s'])} |", flush=True)
        print(json.dumps(r), file=open(work / "redis_ops.jsonl", "a"))  # noqa: SIM115


if __name__ == "__main__":
    main()
