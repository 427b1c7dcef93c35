"""The heavy models through the whole service, against the runner's own limit and against peers, in one run.

    python -m loadtest.heavy.fullpath                        # make heavy-fullpath (make heavy-models first)
    python -m loadtest.heavy.fullpath --tiny --seconds 2     # the stand-ins, a quick check
    python -m loadtest.heavy.fullpath --table loadtest/results/heavy-fullpath-<date>.json

Per heavy model (the budget and batch size are the model's in loadtest/heavy/serving.yaml):
1. The runner's limit: its own batch curve (loadtest/heavy/bench.py, a fresh process, the model's intra-op
   threads from serving.yaml, no HTTP) at batch sizes up to max_batch_size; the limit is the best rows/s among batch sizes whose call (p50)
   fits max_latency_ms, and that call's latency.
2. Our full path: `bentoml serve` with one worker, auth (a minted token), rate limits (Redis, limits far above
   the load), the prediction cache on with every input distinct (all misses), metrics; OIP REST JSON. Closed loop
   at rising numbers of requests in flight, up to the first whose p99 passes the budget or that has errors; the
   best rows/s with p99 within the budget and no error, against the limit (goal: at least 0.90). Then open loop,
   Poisson arrivals at half the limit: p99 against the runner's latency at its limit's batch (goal: at most 2x).
3. Peers on the same files, same steps: NVIDIA Triton through PyTriton, its dynamic batcher feeding ONNX Runtime
   inside its Python callable (Triton's own ONNX Runtime backend is not in PyTriton's wheel), and stock BentoML
   `batchable=True`; one instance and the same intra-op threads each. The trees get stock BentoML only (XGBoost in
   Triton's Python callable is no different from its ONNX models' case). Each peer's answers are checked equal to
   ours on the same inputs before it is measured.

One row per request (an image, a text of --text-tokens tokens), but --tree-rows rows per tree request: at tens of
thousands of rows/s, one row a request would measure HTTP, not the model. Load comes from an asyncio httpx client
in this process; its CPU share is reported beside each point (near 100 % means the client, not the server, set
the pace). Writes loadtest/results/heavy-fullpath-<date>.json and .md, the servers' logs in heavy-fullpath-<date>-logs/.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import resource
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from loadtest import machine
from loadtest.bench import Metered, run_wrk, targets, token_for
from loadtest.heavy.bench import (
    HEAVY_CONFIG,
    RESULTS,
    input_label,
    single_token_words,
    spawn_worker,
    text_of_tokens,
    worker_result,
)
from loadtest.heavy.build import FEATURES, FULL, TINY, Size
from loadtest.peers import triton_peer
from loadtest.scenarios import Request
from loadtest.servers import ROOT, Server, bentoml_server, use_project_store
from models.tokenize import Tokenize

MODELS = ("heavy-resnet-onnx", "heavy-bert-onnx", "heavy-trees-xgb")
IN_FLIGHT = (1, 2, 4, 8, 16, 32)
LIMIT_SHARE, OPEN_SHARE, OPEN_P99_BOUND = 0.90, 0.5, 2.0
"""The goals: the full path's best throughput at least 90 % of the limit; in open loop at half the limit, p99
at most twice the runner's latency at its limit's batch size."""
CLIENT_BOUND_PCT = 80
"""The load generator's CPU share above which a point may measure the client rather than the server."""
OPEN_CONNECTIONS = 256
"""wrk's connections in open loop, as the main benchmark's."""
SENTINEL = 1234567.0
"""Stands in a body template for the value that makes each request's input distinct."""


# ---- the arithmetic of the goals ---------------------------------------------------------------------------------


def runner_limit(curve: list[dict[str, Any]], budget_ms: float) -> dict[str, Any] | None:
    """The curve's point with the most rows/s among those whose call (p50) fits the budget; None if none fits."""
    fits = [p for p in curve if p["p50_ms"] <= budget_ms]
    return max(fits, key=lambda p: p["rows_per_s"]) if fits else None


def best_within(points: list[dict[str, Any]], budget_ms: float) -> dict[str, Any] | None:
    """The closed-loop point with the most rows/s whose p99 fits the budget and that had no error."""
    fits = [p for p in points if p["p99_ms"] <= budget_ms and not p["errors"]]
    return max(fits, key=lambda p: p["rows_per_s"]) if fits else None


def ratios(limit: dict[str, Any] | None, closed: list[dict[str, Any]], open_point: dict[str, Any] | None,
           budget_ms: float) -> dict[str, Any]:
    """A server's best throughput within the budget over the limit's, and its open-loop p99 over the limit's call."""
    best = best_within(closed, budget_ms)
    return {"best": best,
            "of_limit": best["rows_per_s"] / limit["rows_per_s"] if best and limit else None,
            "open_p99_of_call": open_point["p99_ms"] / limit["p50_ms"] if open_point and limit else None}


# ---- what is sent ------------------------------------------------------------------------------------------------


@dataclass
class Template:
    """A body split around its one varying value, so each request's input is distinct for the price of a join:
    JSON text, or the OIP binary extension (a JSON header, then the tensor's bytes; the value its first float)."""

    head: bytes
    tail: bytes
    encode: Callable[[str], bytes] = str.encode
    headers: dict[str, str] = field(default_factory=dict)
    """What this body needs beside the target's headers (the binary extension's header length)."""

    @classmethod
    def of(cls, doc: Any, marker: str) -> Template:
        head, tail = json.dumps(doc).split(marker)
        return cls(head.encode(), tail.encode())

    @classmethod
    def binary(cls, input_name: str, x: np.ndarray) -> Template:
        """`x` (FP32) as raw bytes after its JSON header; the first of them vary."""
        data = x.astype(np.float32).tobytes()
        header = json.dumps({"inputs": [{"name": input_name, "shape": list(x.shape), "datatype": "FP32",
                                         "parameters": {"binary_data_size": len(data)}}]}).encode()
        return cls(header, data[4:], lambda v: struct.pack("<f", float(v)),
                   {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"})

    def __call__(self, value: str) -> bytes:
        return self.head + self.encode(value) + self.tail


@dataclass
class Workload:
    """One model's requests in each server's dialect: `body(kind, i)` for kinds "oip", "triton" and "stock"."""

    rows: int
    label: str
    output: str
    """The output compared between servers: ours answers it under this name, the peers answer it alone."""
    templates: dict[str, Template]
    value: Callable[[int], str]

    def body(self, kind: str, i: int) -> bytes:
        return self.templates[kind](self.value(i))

    def headers(self, target: Target) -> dict[str, str]:
        """The target's headers with what this workload's body for it needs."""
        return {**target.headers, **self.templates[target.kind].headers}


def tensor_workload(input_name: str, x: np.ndarray, label: str, binary: bool = False) -> Workload:
    """Rows of floats (images, features) written with 3 decimals, as a compact client would, or (`binary`) as the
    OIP binary extension to ours and Triton (stock BentoML takes JSON only); request i differs from the others in
    its first value, i/1024 (exact in FP32)."""
    x = x.round(3)
    x.flat[0] = SENTINEL
    marker = json.dumps(float(SENTINEL))
    oip = {"inputs": [{"name": input_name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    both = Template.binary(input_name, x) if binary else Template.of(oip, marker)
    templates = {"oip": both, "triton": both, "stock": Template.of({"input": x.tolist()}, marker)}
    return Workload(len(x), label + (", binary" if binary else ""), "probabilities", templates, lambda i: repr(i / 1024))


def text_workload(tokenize: Tokenize, tokens: int) -> Workload:
    """Texts of `tokens` tokens, each distinct in its first two words (single-token words of the model's own
    vocabulary), the rest a fixed text of the tokenizer's."""
    words = single_token_words(tokenize.tokenizer)
    rest = text_of_tokens(tokenize, tokens - 2)
    marker = "@TEXT@"
    templates = {"oip": Template.of({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [marker]}]}, marker),
                 "triton": Template.of({"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": [marker]}]},
                                       marker),
                 "stock": Template.of({"input": [marker]}, marker)}
    n, escaped = len(words), json.dumps(rest)[1:-1]  # the text as it stands inside a JSON string

    def value(i: int) -> str:
        return f"{words[i % n]} {words[i // n % n]} {escaped}"

    got = len(tokenize.tokenizer.encode(json.loads(f'"{value(0)}"')).ids)
    return Workload(1, f"{got} tokens", "embedding", templates, value)


def workload(name: str, tag: str, size: Size, text_tokens: int, tree_rows: int, binary: bool = False) -> Workload:
    rng = np.random.default_rng(0)
    if "bert" in name:
        import bentoml

        model = bentoml.models.get(tag)
        tokenize = Tokenize.of(model.info.metadata, Path(model.path))
        assert tokenize is not None, f"{tag} takes no text"
        return text_workload(tokenize, text_tokens)
    if "resnet" in name:
        return tensor_workload("pixels", rng.normal(size=(1, *size.image)), input_label(name, size, None), binary)
    return tensor_workload("features", rng.normal(size=(tree_rows, FEATURES)), f"{tree_rows} rows of {FEATURES} features",
                           binary)


# ---- the servers -------------------------------------------------------------------------------------------------


@dataclass
class Target:
    """A server under load: how to reach its model, in which dialect, and how to read the compared output."""

    server: Server
    kind: str
    path: str
    headers: dict[str, str]

    def answer(self, reply: dict[str, Any], output: str) -> np.ndarray:
        if self.kind == "stock":
            return np.asarray(reply, dtype=np.float32)
        out = next(o for o in reply["outputs"] if o["name"] == output)
        return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def serving_config(work: Path, name: str, version: str) -> Path:
    """loadtest/heavy/serving.yaml serving this one model at `version`, so its server loads nothing else."""
    config = yaml.safe_load(HEAVY_CONFIG.read_text())
    config["models"] = {name: {**config["models"][name], "versions": [version]}}
    path = work / f"serving-{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def ours(work: Path, name: str, version: str) -> Target:
    server = targets(work, 1)["ours-prod"]
    server.env["RTSERVE_CONFIG"] = str(serving_config(work, name, version))
    return Target(server, "oip", f"/v2/models/{name}/versions/{version}/infer",
                  {"Authorization": f"Bearer {token_for(work)}", "Content-Type": "application/json"})


def triton(name: str, tag: str, max_batch: int, threads: int) -> Target:
    import bentoml

    model = bentoml.models.get(tag)
    argv = [str(triton_peer.ensure_venv()), str(ROOT / "loadtest" / "peers" / "triton_onnx.py"), "--folder", model.path,
            "--name", name, "--port", "{port}", "--max-batch", str(max_batch),
            "--max-length", str((model.info.metadata.get("tokenizer") or {}).get("max_length", 128)), "--threads", str(threads)]
    server = Server("triton", argv, f"/v2/models/{name}/ready", {"OMP_NUM_THREADS": str(threads)})
    return Target(server, "triton", f"/v2/models/{name}/infer", {"Content-Type": "application/json"})


def stock(tag: str, max_batch: int, budget_ms: float, threads: int) -> Target:
    env = {"HEAVY_PEER_MODEL": tag, "HEAVY_PEER_MAX_BATCH": str(max_batch), "HEAVY_PEER_MAX_LATENCY_MS": str(budget_ms),
           "HEAVY_PEER_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    server = bentoml_server("stock", "loadtest.peers.stock_heavy:StockHeavy", env)
    return Target(server, "stock", "/predict", {"Content-Type": "application/json"})


# ---- load --------------------------------------------------------------------------------------------------------


class Load:
    """An asyncio httpx client sending one workload to one target; every request's input is new (`ids`)."""

    def __init__(self, target: Target, work: Workload, ids: Iterator[int], budget_s: float,
                 wrk_dir: Path | None = None) -> None:
        """`wrk_dir`: send with wrk instead (its body and token files there), for binary bodies only: a load
        generator in C, for a model whose requests outrun a Python client on the same cores."""
        self.target, self.work, self.ids, self.budget_s, self.wrk_dir = target, work, ids, budget_s, wrk_dir
        self.headers = work.headers(target)

    async def _send(self, client: httpx.AsyncClient, since: float, out: list[tuple[float, int]]) -> None:
        """One request; its latency and status (0: no answer, or given up on) are recorded however it ends."""
        body = self.work.body(self.target.kind, next(self.ids))
        status = 0
        try:
            status = (await client.post(self.target.path, content=body, headers=self.headers)).status_code
        except httpx.HTTPError:
            pass
        finally:
            out.append((time.perf_counter() - since, status))

    def _client(self, connections: int) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.target.server.url, timeout=120.0,
                                 limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections))

    async def _closed(self, in_flight: int, seconds: float, out: list[tuple[float, int]]) -> None:
        deadline = time.perf_counter() + seconds

        async def user(client: httpx.AsyncClient) -> None:
            while time.perf_counter() < deadline:
                await self._send(client, time.perf_counter(), out)

        async with self._client(in_flight) as client:
            await asyncio.gather(*(user(client) for _ in range(in_flight)))

    async def _open(self, rate: float, seconds: float, out: list[tuple[float, int]]) -> None:
        """Poisson arrivals; each latency counts from its scheduled arrival, so a late send is not hidden. Requests
        still unanswered a budget after the last arrival are given up on (errors): a rate the server cannot carry
        ends the run instead of queueing without end."""
        rng = random.Random(28)
        async with self._client(1024) as client:
            start, at, sent = time.perf_counter(), 0.0, []
            while at < seconds and time.perf_counter() < start + seconds:  # a client that falls behind sends less
                await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
                sent.append(asyncio.create_task(self._send(client, start + at, out)))
                at += rng.expovariate(rate)
            _, late = await asyncio.wait(sent, timeout=self.budget_s + 1.0)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)

    def run(self, seconds: float, in_flight: int = 0, rate: float = 0.0) -> dict[str, Any]:
        """Closed loop with `in_flight` requests, or open loop at `rate` requests/s; latency percentiles over all
        answers, throughput over the successful ones."""
        if self.wrk_dir is not None:
            return self._wrk(seconds, in_flight, rate)
        out: list[tuple[float, int]] = []
        with Metered(self.target.server) as server:
            cpu, wall = time.process_time(), time.perf_counter()
            asyncio.run(self._closed(in_flight, seconds, out) if in_flight else self._open(rate, seconds, out))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        ms = [1000 * t for t, _ in out]
        return self._point(in_flight, rate, len(out), sum(1 for _, status in out if status == 200), wall,
                           statistics.median(ms), float(np.percentile(ms, 99)), cpu, server)

    def _point(self, in_flight: int, rate: float, requests: int, ok: int, wall: float, p50_ms: float, p99_ms: float,
               client_cpu_s: float, server: Metered) -> dict[str, Any]:
        """One point of the run, whichever client measured it: throughput over the successful answers."""
        return {"in_flight": in_flight, "rate": rate, "requests": requests, "errors": requests - ok,
                "rps": ok / wall, "rows_per_s": ok * self.work.rows / wall, "p50_ms": p50_ms, "p99_ms": p99_ms,
                "client_cpu_pct": 100 * client_cpu_s / wall, "server_cpu_pct": 100 * server.cpu / server.seconds,
                "steal_pct": server.stolen}

    def _wrk(self, seconds: float, in_flight: int, rate: float) -> dict[str, Any]:
        """The same run by wrk (loadtest/wrk/scenario.lua, a fresh first value per request); its latency counts
        from each send, not from a scheduled arrival."""
        assert self.wrk_dir is not None
        template = self.work.templates[self.target.kind]
        header = template.headers.get("Inference-Header-Content-Length")
        if header is None:
            raise ValueError("--client wrk sends binary bodies only (--binary)")
        request = Request(self.target.path, self.work.body(self.target.kind, next(self.ids)),
                          {"RT_BINARY_HEADER_LEN": header})
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with Metered(self.target.server) as server:
            raw = run_wrk(self.target.server, request, in_flight or OPEN_CONNECTIONS, seconds, self.wrk_dir, rate)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        client = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        return self._point(in_flight, rate, raw["requests"], raw["requests"] - raw["non2xx"] - raw["socket_errors"],
                           raw["duration_us"] / 1e6, raw["p50_us"] / 1000, raw["p99_us"] / 1000, client, server)


async def _answers(target: Target, work: Workload, ids: list[int], in_flight: int) -> list[np.ndarray]:
    """Answers to the inputs `ids`, `in_flight` at a time: they share batches, and none waits past the budget."""
    gate = asyncio.Semaphore(in_flight)

    async def ask(client: httpx.AsyncClient, i: int) -> httpx.Response:
        async with gate:
            return await client.post(target.path, content=work.body(target.kind, i), headers=work.headers(target))

    async with httpx.AsyncClient(base_url=target.server.url, timeout=120.0) as client:
        replies = await asyncio.gather(*(ask(client, i) for i in ids))
    for reply in replies:
        reply.raise_for_status()
    return [target.answer(r.json(), work.output) for r in replies]


def check(target: Target, work: Workload, expected: list[np.ndarray], ids: list[int], in_flight: int) -> str:
    """The peer's answers to the inputs `ids` equal ours."""
    got = asyncio.run(_answers(target, work, ids, in_flight))
    worst = max(float(np.abs(a - b).max()) for a, b in zip(got, expected, strict=True))
    if worst > 1e-4:
        raise AssertionError(f"{target.server.name}'s {work.output} differ from ours by up to {worst:.2g}")
    return f"{work.output} equal ours on {len(ids)} inputs (max abs difference {worst:.1g})"


# ---- one model ---------------------------------------------------------------------------------------------------


def measure_target(target: Target, work: Workload, ids: Iterator[int], steps: list[int], full_batch: int,
                   seconds: float, budget_ms: float, open_rate: float | None, log: Callable[[str], None],
                   wrk_dir: Path | None = None) -> dict[str, Any]:
    """After a warm-up of full batches (a shape's first calls, the batcher's cost model), closed loop at each step
    up to the first past the budget, then open loop at `open_rate` (if any)."""
    load, closed = Load(target, work, ids, budget_ms / 1000, wrk_dir), []
    name = target.server.name
    load.run(min(seconds, 3.0), in_flight=full_batch)
    for in_flight in steps:
        point = load.run(seconds, in_flight=in_flight)
        closed.append(point)
        log(f"  {name:<7} {in_flight:>3} in flight: {point['rows_per_s']:9.1f} rows/s  p50 {point['p50_ms']:8.1f} ms  "
            f"p99 {point['p99_ms']:8.1f} ms  errors {point['errors']}  client CPU {point['client_cpu_pct']:.0f} %")
        if point["p99_ms"] > budget_ms or point["errors"]:
            break
    opened = None
    if open_rate:
        opened = load.run(seconds, rate=open_rate)
        log(f"  {name:<7} open loop {open_rate:.1f} req/s: {opened['rps']:.1f} req/s  p50 {opened['p50_ms']:.1f} ms  "
            f"p99 {opened['p99_ms']:.1f} ms  errors {opened['errors']}")
    return {"closed": closed, "open": opened}


def measure_model(name: str, size: Size, args: argparse.Namespace, work_dir: Path, logs: Path,
                  log: Callable[[str], None]) -> dict[str, Any]:
    """The runner's limit, then each server in turn; the servers' logs go to `logs`."""
    from app.config import load_serving

    tag = f"{name}:{size.version}"
    config = load_serving(HEAVY_CONFIG)
    settings = config.batch_settings(name)
    budget, max_batch = settings.max_latency_ms, settings.max_batch_size
    threads = settings.intra_op_threads or config.intra_op_threads  # the model's own, else the worker's
    work = workload(name, tag, size, args.text_tokens, args.tree_rows, args.binary)
    length = args.text_tokens if "bert" in name else None
    batches = sorted({b for b in (1, 2, 4, 8, 16, 32, 64) if b <= max_batch} | {max_batch})
    log(f"{tag}: the runner's batch curve ({work.label}), batches {batches}")
    curve = worker_result(spawn_worker("curve", tag=tag, threads=threads, batches=batches, length=length, seconds=args.seconds))
    limit = runner_limit(curve["points"], budget)
    open_rate = OPEN_SHARE * limit["rows_per_s"] / work.rows if limit else None
    result: dict[str, Any] = {"input": work.label, "rows_per_request": work.rows, "budget_ms": budget, "threads": threads,
                              "max_batch_size": max_batch, "curve": curve["points"], "limit": limit,
                              "open_rate": open_rate, "servers": {}}
    full_batch = max(1, max_batch // work.rows)  # requests that fill one batch
    ids, check_ids = itertools.count(), list(range(10**9, 10**9 + 2 * full_batch + 1))
    expected: list[np.ndarray] = []
    servers = {"ours": lambda: ours(work_dir, name, size.version),
               "triton": lambda: triton(name, tag, max_batch, threads),
               "stock": lambda: stock(tag, max_batch, budget, threads)}
    for label in args.servers:
        if label == "triton" and "onnx" not in name:
            result["servers"][label] = {"skipped": "Triton runs the ONNX models only"}
            continue
        target = servers[label]()
        target.server.log_path = logs / f"{name}-{label}.log"
        log(f"{tag}: starting {label}")
        try:
            target.server.start()
            if label == "ours":
                expected = asyncio.run(_answers(target, work, check_ids, full_batch))
                verdict = "the reference"
            else:
                verdict = check(target, work, expected, check_ids, full_batch) if expected else "not checked (ours did not run)"
            log(f"  {label}: {verdict}")
            wrk_dir = work_dir if args.client == "wrk" and target.kind != "stock" else None  # stock takes JSON only
            entry = measure_target(target, work, ids, args.in_flight, full_batch, args.seconds, budget, open_rate, log,
                                   wrk_dir)
        except Exception as exc:
            if label == "ours":
                raise
            log(f"  {label} failed, the run goes on without it: {exc}")  # a peer's failure is a result, not the end
            result["servers"][label] = {"skipped": f"failed: {' '.join(str(exc).split())[:300]}"}
            continue
        finally:
            target.server.stop()
        result["servers"][label] = {"check": verdict, **entry, **ratios(limit, entry["closed"], entry["open"], budget)}
    return result


# ---- report ------------------------------------------------------------------------------------------------------


def _ms(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def markdown(results: dict[str, Any]) -> str:
    lines = [f"Heavy models through the full path, {results['date']}, {results['machine']}: `{results['command']}`", "",
             ("The runner's limit: its own batch curve (the model's intra-op threads, no HTTP), the best rows/s whose "
             "call (p50) fits the model's budget"), "",
             "| model | input | threads | budget | batch curve: rows/s (p50 of a call) | limit |", "|---|---|---|---|---|---|"]
    for tag, m in results["models"].items():
        curve = ", ".join(f"{p['batch']}: {p['rows_per_s']:,.1f} ({_ms(p['p50_ms'])} ms)" for p in m["curve"])
        lim = m["limit"]
        limit = f"{lim['rows_per_s']:,.1f} rows/s at batch {lim['batch']}, {_ms(lim['p50_ms'])} ms" if lim else "none fits"
        lines.append(f"| `{tag}` | {m['input']} | {m.get('threads', 1)} | {m['budget_ms']:,.0f} ms | {curve} | {limit} |")
    lines += ["", ("Closed loop (one request = `rows` rows; errors are non-200 answers; client CPU is the load "
                  "generator's share of one core)"), "",
              "| model | server | in flight | rows/s | p50 ms | p99 ms | requests | errors | client CPU | server CPU | stolen |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for tag, m in results["models"].items():
        for label, s in m["servers"].items():
            for p in s.get("closed", []):
                lines.append(f"| `{tag}` | {label} | {p['in_flight']} | {p['rows_per_s']:,.1f} | {_ms(p['p50_ms'])} | "
                             f"{_ms(p['p99_ms'])} | {p['requests']} | {p['errors']} | {p['client_cpu_pct']:.0f} % | "
                             f"{p['server_cpu_pct']:.0f} % | {p['steal_pct']:.0f} % |")
    busy = [f"`{tag}` {label} at {p['in_flight']}" for tag, m in results["models"].items() for label, s in m["servers"].items()
            for p in s.get("closed", []) if p["client_cpu_pct"] >= CLIENT_BOUND_PCT]
    if busy:
        lines += ["", f"The client used {CLIENT_BOUND_PCT} % of a core or more (it may have set the pace): {', '.join(busy)}."]
    lines += ["", (f"Open loop, Poisson arrivals at {OPEN_SHARE:.0%} of the runner's limit (latency from each request's "
                  "scheduled arrival)"), "",
              "| model | server | rate req/s | achieved req/s | p50 ms | p99 ms | requests | errors | client CPU |",
              "|---|---|---|---|---|---|---|---|---|"]
    for tag, m in results["models"].items():
        for label, s in m["servers"].items():
            if p := s.get("open"):
                lines.append(f"| `{tag}` | {label} | {p['rate']:,.1f} | {p['rps']:,.1f} | {_ms(p['p50_ms'])} | "
                             f"{_ms(p['p99_ms'])} | {p['requests']} | {p['errors']} | {p['client_cpu_pct']:.0f} % |")
    lines += ["", (f"Against the limit: best rows/s with p99 within the budget and no error, over the limit's (goal >= "
                  f"{LIMIT_SHARE:.2f}); open-loop p99 over the limit's call (goal <= {OPEN_P99_BOUND:.0f}x); against ours"), "",
              "| model | server | answers | best rows/s (in flight) | / limit | open p99 / call | rows/s / ours |",
              "|---|---|---|---|---|---|---|"]
    for tag, m in results["models"].items():
        ours_best = (m["servers"].get("ours") or {}).get("best")
        for label, s in m["servers"].items():
            if "skipped" in s:
                lines.append(f"| `{tag}` | {label} | skipped: {s['skipped']} | | | | |")
                continue
            best = s["best"]
            cell = f"{best['rows_per_s']:,.1f} ({best['in_flight']})" if best else "none within the budget"
            vs = best["rows_per_s"] / ours_best["rows_per_s"] if best and ours_best else None
            lines.append(f"| `{tag}` | {label} | {s['check']} | {cell} | {_x(s['of_limit'])} | {_x(s['open_p99_of_call'])} | "
                         f"{_x(vs)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated heavy model names")
    parser.add_argument("--servers", default="ours,triton,stock", help="comma-separated: ours, triton, stock")
    parser.add_argument("--in-flight", default=",".join(map(str, IN_FLIGHT)), help="closed-loop steps")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per point (and per batch size of the curve)")
    parser.add_argument("--text-tokens", type=int, default=128, help="tokens of every text sent to the text model")
    parser.add_argument("--tree-rows", type=int, default=64, help="rows per request to the tree ensemble")
    parser.add_argument("--binary", action="store_true",
                        help="tensors to ours and Triton as the OIP binary extension (tritonclient's default), not JSON")
    parser.add_argument("--client", choices=("httpx", "wrk"), default="httpx",
                        help="the load generator: Python's httpx, or wrk (with --binary; stock BentoML keeps httpx)")
    parser.add_argument("--tiny", action="store_true", help="the stand-ins (make heavy-models HEAVY_ARGS=--tiny)")
    parser.add_argument("--table", metavar="JSON", type=Path, help="print the tables of an earlier run's results")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown(json.loads(args.table.read_text())))
        return 0
    use_project_store()
    args.servers = args.servers.split(",")
    args.in_flight = [int(c) for c in args.in_flight.split(",")]
    size = TINY if args.tiny else FULL
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"heavy-fullpath-{datetime.now(UTC).strftime('%Y%m%d-%H%M')}"
    logs = stem.with_name(stem.name + "-logs")
    logs.mkdir(exist_ok=True)
    results: dict[str, Any] = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                               "machine": machine.describe(),
                               "command": "python -m " + " ".join(["loadtest.heavy.fullpath", *sys.argv[1:]]), "models": {}}

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="rtserve-heavy-fullpath-") as tmp:
        for name in args.models.split(","):
            results["models"][f"{name}:{size.version}"] = measure_model(name, size, args, Path(tmp), logs, log)
            stem.with_suffix(".json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    stem.with_suffix(".md").write_text(table)
    print(table)
    log(f"written: {stem}.json, {stem}.md; servers' logs in {logs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
