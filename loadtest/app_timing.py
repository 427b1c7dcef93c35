"""CPU per request of the service's own HTTP app, without a server or a network in the way.

    python -m loadtest.app_timing                         # production configuration, Redis, 64 in flight
    python -m loadtest.app_timing --config bare --profile  # and the top functions by own time (cProfile)

Builds the worker's runtime from the same settings as the benchmark's `ours-*` targets, in this
process, and sends the sklearn-miss scenario (a unique 64-float row per request) straight to the
ASGI app: `--concurrency` requests per round, as one loop turn of a loaded server would see them.
What it reports is the app's share of a request (decode, admit, route, cache, batch, encode,
metrics), which uvicorn's per-request cost comes on top of; repeatable to a few per cent on a
quiet machine, so a change on the hot path can be judged before a wrk run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import secrets
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from loadtest.servers import use_project_store

PROD = {
    "RTSERVE_AUTH_ENABLED": "true",
    "RTSERVE_RATELIMIT_ENABLED": "true",
    "RTSERVE_RATELIMIT_RATE": "1000000",
    "RTSERVE_RATELIMIT_BURST": "1000000",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}
BARE = {"REDIS_URL": "", "RTSERVE_CACHE_ENABLED": "false", "RTSERVE_AUTH_ENABLED": "false"}


_ROWS = np.random.default_rng(0)
"""One stream for the whole run: every call draws new rows, so a repeated measurement meets no cache entry
of the one before (a cache holds far more than one measurement's worth at concurrency 1)."""


def bodies(n: int) -> list[bytes]:
    rows = _ROWS.integers(0, 17, size=(n, 64))
    return [orjson.dumps({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": r.tolist()}]}) for r in rows]


async def one(app, scope: dict, body: bytes) -> int:
    sent: list[dict] = []
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"]


async def run(app, token: str | None, rounds: int, concurrency: int, gap_s: float = 0.0) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the process, answers not 200) for `rounds` rounds of `concurrency` requests,
    with the loop asleep for `gap_s` between rounds (neither clock counts the sleep)."""
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    scope = {"type": "http", "method": "POST", "path": "/v2/models/digits-sklearn/infer", "root_path": "",
             "query_string": b"", "headers": headers}
    payloads = bodies(rounds * concurrency)
    bad, wall, cpu = 0, 0.0, 0.0
    for r in range(rounds):
        chunk = payloads[r * concurrency:(r + 1) * concurrency]
        if gap_s:
            await asyncio.sleep(gap_s)
        start, cpu_start = time.perf_counter(), time.process_time()
        statuses = await asyncio.gather(*(one(app, dict(scope, headers=list(headers)), b) for b in chunk))
        wall, cpu = wall + time.perf_counter() - start, cpu + time.process_time() - cpu_start
        bad += sum(s != 200 for s in statuses)
    return wall, cpu, bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=["prod", "bare"], default="prod")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--gap-ms", type=float, default=0.0,
                        help="sleep between rounds: what a request costs when it wakes an idle loop, as in open loop")
    parser.add_argument("--profile", action="store_true", help="also print the top functions by own time")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="one more setting, e.g. RTSERVE_METRICS_ENABLED=false")
    args = parser.parse_args(argv)
    use_project_store()
    tmp = Path(tempfile.mkdtemp(prefix="rtserve-app-timing-"))
    secret = tmp / "jwt-secret"
    secret.write_text(secrets.token_hex(32))
    prefix = f"rtserve-timing:{secrets.token_hex(4)}:"
    os.environ.update(PROD if args.config == "prod" else BARE)
    os.environ.update({"RTSERVE_AUTH_HS256_SECRET_FILE": str(secret), "RTSERVE_ROUTING_STATE_FILE": str(tmp / "routes.json"),
                       "RTSERVE_RATELIMIT_KEY_PREFIX": prefix + "rl:", "RTSERVE_CACHE_KEY_PREFIX": prefix + "cache:",
                       "RTSERVE_ROUTING_REDIS_PREFIX": prefix + "routes:", "PROMETHEUS_MULTIPROC_DIR": str(tmp)})
    os.environ.update(dict(item.split("=", 1) for item in args.set))

    from app.config import load_config
    from app.wiring import Runtime
    from frontends.rest import InferenceApp
    from gateway.tokens import mint

    gc.set_threshold(50_000, 50, 100)  # as the service sets it (service.py)
    config = load_config()
    runtime = Runtime.from_config(config)
    runtime.start().join()
    app = InferenceApp()
    app.bind(runtime.parts)
    token = mint(config.auth, subject="timing", scopes="predict", tenant="timing", ttl_s=3600) if config.auth.enabled else None

    async def session() -> None:
        await run(app, token, 30, args.concurrency)  # warm-up: cost model, token cache, rate-limit lease
        profiler = cProfile.Profile() if args.profile else None
        best, best_cpu = float("inf"), float("inf")
        for _ in range(5):
            if profiler is not None:
                profiler.enable()
            seconds, cpu, bad = await run(app, token, args.rounds, args.concurrency, args.gap_ms / 1000)
            if profiler is not None:
                profiler.disable()
            best, best_cpu = min(best, seconds), min(best_cpu, cpu)
        n = args.rounds * args.concurrency
        print(f"{args.config}: {best / n * 1e6:.1f} µs of the app per request, {best_cpu / n * 1e6:.1f} µs of CPU "
              f"({n} requests, {args.concurrency} at a time, {args.gap_ms:g} ms apart, best of 5; {bad} not 200)")
        if profiler is not None:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)

    import uvloop

    uvloop.run(session())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
