"""The throughput benchmark: this service and its peers, side by side, in one run.

    python -m loadtest.bench --open-loop --scaling    # the full matrix (about 40 minutes)
    python -m loadtest.bench --targets ours-prod,stock --scenarios sklearn-miss --connections 64

Servers (one worker each): `ours` (embedded defaults), `stock` (BentoML `batchable=True`,
peer b), `empty` (constant JSON mounted in BentoML, peer c), `raw` (constant JSON under
uvicorn, peer d), `triton` (NVIDIA Triton through PyTriton, dynamic batcher, scikit-learn scenarios
only; its virtual environment `.venv-triton` is created on first use). Ours comes in several
configurations: `ours-prod` (auth, rate limits, cache, metrics, Redis), `ours-embedded` (the
same without Redis), `ours-bare` (auth, limits and cache off), `ours-nobatch` (bare with
max_batch_size 1), `ours-nometrics` (bare without metrics).
Load: wrk, closed loop, and open loop at fixed rates with --open-loop (ours-prod, and raw as the
control). Every measurement also reads the worker's CPU time per request.
Writes loadtest/results/bench-<time>.{md,json}, and its charts beside them (loadtest/charts.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

import httpx
import yaml

from demo import data
from loadtest import charts, machine
from loadtest.peers import triton_peer
from loadtest.scenarios import SCENARIOS, Request, Scenario
from loadtest.servers import ROOT, Server, bentoml_server, use_project_store, uvicorn_server

LUA = ROOT / "loadtest" / "wrk" / "scenario.lua"
SERVICE = "service:InferenceService"
REDIS_URL = "redis://127.0.0.1:6379/0"
RESULTS = ROOT / "loadtest" / "results"
OPEN_LOOP_TARGETS = ("ours-prod", "raw")
"""raw is the control: how far open loop falls below closed loop for the bare HTTP stack on this machine."""
PEER_OF = {"b": "stock", "c": "empty", "d": "raw", "triton": "triton", "bare": "ours-bare", "nobatch": "ours-nobatch"}


@dataclass
class Result:
    target: str
    scenario: str
    connections: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    non2xx: int
    socket_errors: int
    steal_pct: float = 0.0
    """Share of the machine's CPU time the hypervisor gave to other guests during the run (a shared
    machine's noise: a vCPU taken away for milliseconds shows as tail latency)."""
    cpu_us: float = 0.0
    """CPU time of the serving worker per request (user and system), from its own counters."""


def targets(workdir: Path, workers: int) -> dict[str, Server]:
    """Every server the benchmark knows; each is started only when asked for."""
    secret = workdir / "jwt-secret"
    secret.write_text(secrets.token_hex(32))
    nobatch = workdir / "serving-nobatch.yaml"
    config = yaml.safe_load((ROOT / "serving.yaml").read_text())
    config["defaults"]["max_batch_size"] = 1
    config["defaults"]["max_latency_ms"] = 10_000  # measure batch size 1, not the latency budget's refusals
    for model in config["models"].values():
        model.pop("batching", None)
    nobatch.write_text(yaml.safe_dump(config))
    w = {"RTSERVE_WORKERS": str(workers), "RTSERVE_ROUTING_STATE_FILE": str(workdir / "routes.json")}
    gateway = {
        **w,
        "RTSERVE_AUTH_ENABLED": "true",
        "RTSERVE_AUTH_HS256_SECRET_FILE": str(secret),
        "RTSERVE_RATELIMIT_ENABLED": "true",
        "RTSERVE_RATELIMIT_RATE": "1000000",
        "RTSERVE_RATELIMIT_BURST": "1000000",
    }
    prefix = f"rtserve-bench:{secrets.token_hex(4)}:"
    production = {**gateway, "REDIS_URL": REDIS_URL, "RTSERVE_RATELIMIT_KEY_PREFIX": prefix + "rl:",
                  "RTSERVE_CACHE_KEY_PREFIX": prefix + "cache:", "RTSERVE_ROUTING_REDIS_PREFIX": prefix + "routes:"}
    bare = {**w, "REDIS_URL": "", "RTSERVE_CACHE_ENABLED": "false", "RTSERVE_AUTH_ENABLED": "false"}
    ready = "/v2/health/ready"
    return {
        "ours-prod": bentoml_server("ours-prod", SERVICE, production, ready),
        "ours-embedded": bentoml_server("ours-embedded", SERVICE, {**gateway, "REDIS_URL": ""}, ready),
        "ours-bare": bentoml_server("ours-bare", SERVICE, bare, ready),
        "ours-nobatch": bentoml_server("ours-nobatch", SERVICE, {**bare, "RTSERVE_CONFIG": str(nobatch)}, ready),
        "ours-nometrics": bentoml_server("ours-nometrics", SERVICE, {**bare, "RTSERVE_METRICS_ENABLED": "false"}, ready),
        "stock": bentoml_server("stock", "loadtest.peers.stock_batchable:StockBatchable"),
        "empty": bentoml_server("empty", "loadtest.peers.empty_bentoml:EmptyService", ready="/readyz"),
        "raw": uvicorn_server("raw", "loadtest.peers.raw_asgi:app"),
    }


def token_for(workdir: Path) -> str:
    from gateway.auth import AuthSettings
    from gateway.tokens import mint

    return mint(AuthSettings(hs256_secret_file=workdir / "jwt-secret"), subject="bench", scopes="predict", tenant="bench", ttl_s=86400)


def request_for(target: str, scenario: Scenario) -> Request | None:
    if target == "stock":
        return scenario.stock
    if target == "triton":
        return scenario.oip if scenario.model == triton_peer.MODEL_NAME else None
    return scenario.oip  # ours, and the constant peers, which read the same bytes


def run_wrk(server: Server, req: Request, connections: int, seconds: float, tmp: Path, rate: float = 0) -> dict:
    """One wrk run; `rate` > 0 holds that many requests/s in total (open loop) instead of as many as possible."""
    body = tmp / "body.json"
    body.write_bytes(req.body if isinstance(req.body, bytes) else req.body.encode())
    env = {**os.environ, **req.env, "RT_PATH": req.path, "RT_BODY": str(body), "RT_AUTH": token_for(tmp),
           "RT_RATE": str(rate), "RT_CONNS": str(connections)}
    threads = min(2, connections)
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{int(seconds)}s", "--timeout", "5s", "-s", str(LUA), server.url]
    out = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=seconds + 60).stdout
    match = re.search(r"@@RESULT (\{.*\})", out)
    if not match:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    return json.loads(match.group(1))


class Metered:
    """The machine's stolen CPU, and the worker's CPU seconds over the wall seconds of one stretch of load."""

    def __init__(self, server: Server) -> None:
        self.worker = server.worker()

    def __enter__(self) -> Self:
        self.machine, self.cpu, self.seconds = cpu_times(), self._worker_cpu(), time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stolen = steal_pct(self.machine, cpu_times())
        self.cpu, self.seconds = self._worker_cpu() - self.cpu, time.monotonic() - self.seconds

    def _worker_cpu(self) -> float:
        return sum(self.worker.cpu_times()[:2])  # user and system

    def us_per_request(self, raw: dict) -> float:
        return 1e6 * self.cpu / max(1, raw["requests"])


def measure(server: Server, scenario: Scenario, req: Request, connections: int, seconds: float, tmp: Path) -> Result:
    run_wrk(server, req, connections, min(3.0, seconds), tmp)  # warm-up: JIT, caches, batch cost model
    with Metered(server) as metered:
        raw = run_wrk(server, req, connections, seconds, tmp)
    return Result(
        target=server.name,
        scenario=scenario.name,
        connections=connections,
        rps=raw["requests"] / (raw["duration_us"] / 1e6),
        p50_ms=raw["p50_us"] / 1000,
        p95_ms=raw["p95_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        non2xx=raw["non2xx"],
        socket_errors=raw["socket_errors"],
        steal_pct=metered.stolen,
        cpu_us=metered.us_per_request(raw),
    )


def cpu_times() -> list[int]:
    """The machine's CPU time counters (user, nice, system, idle, iowait, irq, softirq, steal), in ticks."""
    with open("/proc/stat") as stat:
        return [int(v) for v in stat.readline().split()[1:9]]


def steal_pct(before: list[int], after: list[int]) -> float:
    spent = [b - a for a, b in zip(before, after, strict=True)]
    return 100.0 * spent[7] / max(1, sum(spent))


def open_loop(server: Server, scenario: Scenario, req: Request, closed_rps: float, seconds: float, tmp: Path) -> list[dict]:
    """p99 at fixed rates (fractions of the closed-loop throughput), up to the first rate that breaks 10 ms.

    256 connections keep each connection's gap (256 / rate) far above the latency, so the
    schedule, not the server, sets the pace. Each point also has the worker's CPU per request:
    requests that arrive alone cost more than the closed loop's, which shares loop turns."""
    points = []
    for fraction in (0.25, 0.35, 0.4, 0.5, 0.6, 0.75, 0.9):
        rate = closed_rps * fraction
        with Metered(server) as metered:
            raw = run_wrk(server, req, 256, seconds, tmp, rate=rate)
        got = raw["requests"] / (raw["duration_us"] / 1e6)
        points.append({"target": server.name, "scenario": scenario.name, "target_rps": round(rate), "achieved_rps": round(got),
                       "fraction": fraction, "p50_ms": raw["p50_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
                       "non2xx": raw["non2xx"] + raw["socket_errors"], "steal_pct": metered.stolen,
                       "cpu_us": metered.us_per_request(raw)})
        print(f"  open loop {scenario.name:<13} {rate:>7,.0f} req/s ({fraction:.0%}): achieved {got:,.0f}, "
              f"p99 {raw['p99_us'] / 1000:.2f} ms, worker CPU {metered.us_per_request(raw):.0f} µs a request, "
              f"stolen {metered.stolen:.0f} %", flush=True)
        if raw["p99_us"] > 10_000:
            break
    return points


def footprint(server: Server) -> dict:
    """Resident memory of the worker holding the models, and each model's load time from /metrics."""
    text = httpx.get(server.metrics_url, timeout=10).text
    loads = {f"{m}:{v}": float(x) for m, v, x in
             re.findall(r'rtserve_model_load_seconds\{model="([^"]+)",version="([^"]+)"\} ([0-9.e+-]+)', text)}
    return {"worker_rss_mib": server.worker_rss_bytes() / 2**20, "load_seconds": loads}


def ratios(results: list[Result]) -> dict[tuple[str, str, int], dict[str, float]]:
    index = {(r.target, r.scenario, r.connections): r for r in results}
    out: dict[tuple[str, str, int], dict[str, float]] = {}
    for r in results:
        if not r.target.startswith("ours"):  # the peers are what is compared against
            continue
        out[(r.target, r.scenario, r.connections)] = {
            f"/{peer}": r.rps / index[(name, r.scenario, r.connections)].rps
            for peer, name in PEER_OF.items()
            if name != r.target and (name, r.scenario, r.connections) in index
        }
    return out


RATIO_COLUMNS = {"/b": "vs (b) stock", "/c": "vs (c) empty", "/d": "vs (d) raw", "/triton": "vs Triton", "/bare": "vs gateway off", "/nobatch": "vs batch size 1"}


def table(results: list[Result]) -> str:
    rat = ratios(results)
    lines = [
        "| server | scenario | conns | req/s | p50 ms | p95 ms | p99 ms | non-2xx | CPU stolen | worker CPU µs/req | "
        + " | ".join(RATIO_COLUMNS.values()) + " |",
        "|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(RATIO_COLUMNS),
    ]
    for r in results:
        q = rat.get((r.target, r.scenario, r.connections), {})
        cells = [f"{q[k]:.2f}x" if k in q else "" for k in RATIO_COLUMNS]
        lines.append(
            f"| {r.target} | {r.scenario} | {r.connections} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p95_ms:.2f} | {r.p99_ms:.2f} | "
            f"{r.non2xx + r.socket_errors} | {r.steal_pct:.0f} % | {r.cpu_us:.0f} | {' | '.join(cells)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="ours-prod,ours-embedded,ours-bare,ours-nobatch,triton,stock,empty,raw")
    parser.add_argument("--workers", type=int, default=1, help="worker processes of our service")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--open-loop", action="store_true",
                        help="also find the highest rate with p99 <= 10 ms (ours-prod, and raw as the control)")
    parser.add_argument("--scaling", action="store_true", help="also run ours-prod with 2 workers (sklearn-miss, 64 conns)")
    args = parser.parse_args(argv)
    use_project_store()
    conns = [int(c) for c in args.connections.split(",")]
    scenarios = [SCENARIOS[s] for s in args.scenarios.split(",")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    extra: dict = {}
    with tempfile.TemporaryDirectory(prefix="rtserve-bench-") as tmp:
        work = Path(tmp)
        servers = targets(work, args.workers)
        for name in args.targets.split(","):
            server = triton_peer.triton_server(triton_peer.ensure_venv()) if name == "triton" else servers[name]
            print(f"starting {name} ...", flush=True)
            server.log_path = work / f"{server.name}.log"
            server.start()
            try:
                if name == "triton":
                    rows = triton_peer.check_answers(server, data.digits().x_test[:64])
                    print(f"  triton: labels and probabilities equal ours on {rows} held-out rows", flush=True)
                if name == "ours-prod":
                    extra["footprint"] = footprint(server)
                for scenario in scenarios:
                    req = request_for(name, scenario)
                    if req is None:
                        continue
                    for c in conns:
                        res = measure(server, scenario, req, c, args.duration, work)
                        print(f"  {scenario.name:<15} c={c:<3} {res.rps:>9,.0f} req/s  p99 {res.p99_ms:7.2f} ms  "
                              f"non-2xx {res.non2xx + res.socket_errors}  stolen {res.steal_pct:.0f} %", flush=True)
                        results.append(res)
                    if args.open_loop and name in OPEN_LOOP_TARGETS and scenario.name == "sklearn-miss":
                        best = max((r.rps for r in results if r.target == name and r.scenario == scenario.name), default=0)
                        extra.setdefault("open_loop", []).extend(open_loop(server, scenario, req, best, args.duration, work))
            finally:
                server.stop()
        if args.scaling:
            scenario = SCENARIOS["sklearn-miss"]
            for workers in (1, 2):
                server = targets(work, workers)["ours-prod"]
                server.name = f"ours-prod-{workers}w"
                server.log_path = work / f"{server.name}.log"
                server.start()
                try:
                    res = measure(server, scenario, scenario.oip, 64, args.duration, work)
                finally:
                    server.stop()
                print(f"  {server.name:<15} {res.rps:>9,.0f} req/s  p99 {res.p99_ms:7.2f} ms", flush=True)
                results.append(res)
    md = table(results) + "\n" + report_extra(extra, results)
    print("\n" + md)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"bench-{stamp}.md").write_text(md + "\n")
    result = RESULTS / f"bench-{stamp}.json"
    result.write_text(json.dumps({"run": run_info(args), "results": [asdict(r) for r in results], **extra}, indent=2))
    print(f"\nwritten: loadtest/results/bench-{stamp}.md and .json")
    for chart in charts.write(result):
        print(f"chart: {chart.relative_to(ROOT)}")
    return 0


def run_info(args: argparse.Namespace) -> dict:
    """When, where and how the run was made: written on its charts, since numbers mean little without the machine."""
    return {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine.describe(),
            "host": platform.node(), "duration_s": args.duration, "workers": args.workers}


def report_extra(extra: dict, results: list[Result]) -> str:
    lines = []
    if "open_loop" in extra:
        lines += ["", "Open loop, sklearn-miss (256 connections, Poisson arrivals; fractions of each server's own closed loop):", "",
                  "| server | target req/s | fraction | achieved | p50 ms | p99 ms | worker CPU µs/request | non-2xx | CPU stolen |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {p['target']} | {p['target_rps']:,} | {p['fraction']:.0%} | {p['achieved_rps']:,} | {p['p50_ms']:.2f} | "
                  f"{p['p99_ms']:.2f} | {p['cpu_us']:.0f} | {p['non2xx']} | {p['steal_pct']:.0f} % |" for p in extra["open_loop"]]
        for target in OPEN_LOOP_TARGETS:
            ok = [p for p in extra["open_loop"] if p["target"] == target and p["p99_ms"] <= 10]
            if ok:
                lines.append(f"\n{target}: highest rate with p99 <= 10 ms {ok[-1]['achieved_rps']:,} req/s "
                             f"({ok[-1]['fraction']:.0%} of its closed loop).")
        closed = {r.target: r.cpu_us for r in results if r.scenario == "sklearn-miss" and r.connections == 64}
        lines += [""] + [f"{t}: worker CPU per request in closed loop at 64 connections {closed[t]:.0f} µs." for t in OPEN_LOOP_TARGETS if t in closed]
    scale = {r.target: r.rps for r in results if r.target.startswith("ours-prod-")}
    if {"ours-prod-1w", "ours-prod-2w"} <= set(scale):
        lines.append(f"\nScaling, sklearn-miss at 64 connections: 1 worker {scale['ours-prod-1w']:,.0f} req/s, "
                     f"2 workers {scale['ours-prod-2w']:,.0f} req/s ({scale['ours-prod-2w'] / scale['ours-prod-1w']:.2f}x).")
    if "footprint" in extra:
        f = extra["footprint"]
        lines.append(f"\nWorker resident memory with all demo models loaded: {f['worker_rss_mib']:.0f} MiB.")
        lines.append("Load and warm-up time per version (s): " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(f["load_seconds"].items())))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
