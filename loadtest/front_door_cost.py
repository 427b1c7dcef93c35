"""What the front door saves: worker CPU per request and requests/s with it on and off.

    python -m loadtest.front_door_cost [--requests 1500] [--rounds 4]

Starts two servers once (one worker each, no Redis, auth off, no gRPC), one with
`RTSERVE_FRONT_DOOR_ENABLED=false`, each with a BentoML home of its own around the project's model
store, and sends blocks of one-row digits-sklearn requests on one keep-alive connection, alternating
between them so the noise of a shared machine falls on both; prints each block and the medians.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from loadtest.bench import SERVICE
from loadtest.servers import ROOT, Server, bentoml_server

BODY = json.dumps({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [3.0] * 64}]})
PATH = "/v2/models/digits-sklearn/infer"


def server(name: str, home: Path, env: dict[str, str]) -> Server:
    home.mkdir()
    (home / "models").symlink_to(Path(os.environ.get("BENTOML_HOME", ROOT / ".bentoml")) / "models")
    base = {"BENTOML_HOME": str(home), "REDIS_URL": "", "RTSERVE_AUTH_ENABLED": "false", "RTSERVE_GRPC_ENABLED": "false",
            "RTSERVE_ROUTING_STATE_FILE": str(home / "routes.json")}
    s = bentoml_server(name, SERVICE, {**base, **env}, "/v2/health/ready")
    s.log_path = home / "serve.log"
    return s


def block(s: Server, requests: int) -> tuple[float, float]:
    """(worker CPU µs per request, requests/s) over `requests` sequential requests after a warm-up."""
    worker = s.worker()
    conn = http.client.HTTPConnection("127.0.0.1", s.port)
    try:
        for n in (50, requests):
            cpu, started = sum(worker.cpu_times()[:2]), time.perf_counter()
            for _ in range(n):
                conn.request("POST", PATH, BODY, {"Content-Type": "application/json"})
                answer = conn.getresponse()
                answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"{s.name}: {answer.status}")
        return 1e6 * (sum(worker.cpu_times()[:2]) - cpu) / requests, requests / (time.perf_counter() - started)
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1500, help="requests per block")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rtserve-front-door-") as tmp:
        servers = {"on": server("front-door-on", Path(tmp) / "on", {}),
                   "off": server("front-door-off", Path(tmp) / "off", {"RTSERVE_FRONT_DOOR_ENABLED": "false"})}
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
        try:
            for s in servers.values():
                s.start()
            for round_ in range(args.rounds):
                for name, s in servers.items():
                    results[name].append(block(s, args.requests))
                    print(f"round {round_}, front door {name}: {results[name][-1][0]:,.0f} µs worker CPU per request, "
                          f"{results[name][-1][1]:,.0f} requests/s", flush=True)
        finally:
            for s in servers.values():
                s.stop()
    for name, rows in results.items():
        print(f"front door {name}: median {statistics.median(r[0] for r in rows):,.0f} µs worker CPU per request, "
              f"{statistics.median(r[1] for r in rows):,.0f} requests/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
