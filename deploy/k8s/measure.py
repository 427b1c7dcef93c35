"""Measure what the Kubernetes manifests are sized from: time to ready and resident memory.

Starts the real service (`tests.helpers.ServerProcess`, default serving.yaml: all nine demo
versions) with 1 and 2 workers, times start -> `/v2/health/ready` == 200 (the startup probe) in
wall-clock and in CPU seconds (what a dedicated core would take, on a shared machine),
drives a few hundred requests through every model so the workers' heaps are warm, then reads
RSS and PSS of every process in the tree with psutil (the memory requests and limits).

    BENTOML_HOME=$PWD/.bentoml .venv/bin/python -m deploy.k8s.measure
"""

from __future__ import annotations

import argparse
import json
import time

import httpx
import psutil

from tests.helpers import ServerProcess

MiB = 1024 * 1024
DIGITS_ROW = [float(i % 17) for i in range(64)]
REQUESTS: dict[str, dict] = {
    "digits-sklearn": {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": DIGITS_ROW}]},
    "digits-ensemble": {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": DIGITS_ROW}]},
    "digits-torch": {"inputs": [{"name": "pixels", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": DIGITS_ROW}]},
    "digits-onnx": {"inputs": [{"name": "pixels", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": DIGITS_ROW}]},
    "seq-torch": {"inputs": [{"name": "tokens", "shape": [1, 6], "datatype": "INT64", "data": [1, 2, 3, 16, 17, 18]}]},
}


def warm(url: str, per_version: int) -> None:
    """Every version of every model answers `per_version` requests (all must be 200)."""
    with httpx.Client(base_url=url, timeout=10) as client:
        for model, body in REQUESTS.items():
            for version in ("v1", "v2") if model != "seq-torch" else ("v1",):
                for _ in range(per_version):
                    response = client.post(f"/v2/models/{model}/versions/{version}/infer", json=body)
                    response.raise_for_status()


def footprint(pid: int) -> list[dict[str, float | str]]:
    """RSS and PSS (MiB) of each process in the server's tree, largest first."""
    root = psutil.Process(pid)
    rows = []
    for proc in [root, *root.children(recursive=True)]:
        info = proc.memory_full_info()
        rows.append(
            {"pid": proc.pid, "cmd": " ".join(proc.cmdline()[1:4])[:80], "rss_mib": info.rss / MiB, "pss_mib": info.pss / MiB}
        )
    return sorted(rows, key=lambda r: -r["rss_mib"])


def cpu_seconds(pid: int) -> float:
    """CPU time the server's tree has used so far: start-up cost without the wait for a shared core."""
    root = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


def measure(workers: int, per_version: int) -> dict:
    server = ServerProcess(env={"REDIS_URL": "", "RTSERVE_WORKERS": str(workers)})
    started = time.monotonic()
    try:
        server.start(timeout=600)
        ready_s = time.monotonic() - started
        cpu_s = cpu_seconds(server.proc.pid)
        warm(server.url, per_version)
        processes = footprint(server.proc.pid)
    finally:
        server.stop()
    return {
        "workers": workers,
        "ready_s": round(ready_s, 2),
        "cpu_s_to_ready": round(cpu_s, 2),
        "total_rss_mib": round(sum(p["rss_mib"] for p in processes), 1),
        "total_pss_mib": round(sum(p["pss_mib"] for p in processes), 1),
        "processes": [{**p, "rss_mib": round(p["rss_mib"], 1), "pss_mib": round(p["pss_mib"], 1)} for p in processes],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--requests", type=int, default=200, help="requests per model version before measuring memory")
    args = parser.parse_args()
    for workers in args.workers:
        print(json.dumps(measure(workers, args.requests), indent=1))


if __name__ == "__main__":
    main()
