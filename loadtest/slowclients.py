"""Slow and idle clients against a server, and what they do to normal requests.

    python -m loadtest.slowclients --url http://127.0.0.1:3000 --token $TOKEN --connections 300
    python -m loadtest.slowclients --connections 300          # starts its own server (one worker, no Redis)

Three kinds of slow connection, held open for the whole measurement (one the server closes is
opened again, so the count stays up):
- `idle`: connects and sends nothing;
- `headers`: sends a request's headers one byte at a time (slowloris);
- `body`: sends complete headers declaring a body, then trickles the body a byte at a time.

Normal requests are measured as a fixed sequence on one keep-alive connection, in blocks that
alternate between "no slow clients" and "slow clients held", so the noise of a shared machine
falls on both sides alike; the p99 of each side is over all its blocks.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import secrets
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

import httpx
import numpy as np

KINDS = ("idle", "headers", "body")
INFER_PATH = "/v2/models/digits-sklearn/infer"


@dataclass
class SlowStats:
    """What happened to the slow connections of one kind."""

    opened: int = 0
    refused: int = 0  # connection attempts that failed
    closed_by_server: int = 0
    answers: Counter = field(default_factory=Counter)  # status line code -> count
    held_s: list[float] = field(default_factory=list)  # how long each closed connection lasted


class SlowClients:
    """`per_kind` connections of each kind, held open by a process of their own until the `with`
    block ends (a process, so their work does not take the GIL from the client being measured)."""

    def __init__(self, url: str, per_kind: int, gap_s: float = 0.5, kinds: tuple[str, ...] = KINDS, token: str = "") -> None:
        self.args = (url, per_kind, gap_s, kinds, token)
        self.stats: dict[str, SlowStats] = {}

    def __enter__(self) -> Self:
        ctx = multiprocessing.get_context("spawn")
        self._ready, self._done, self._results = ctx.Event(), ctx.Event(), ctx.Queue()
        self._proc = ctx.Process(target=_hold, args=(*self.args, self._ready, self._done, self._results), daemon=True)
        self._proc.start()
        if not self._ready.wait(120):
            self._proc.kill()
            raise TimeoutError("slow clients did not connect within 120 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self.stats = self._results.get(timeout=60)
        self._proc.join(10)


def _hold(url: str, per_kind: int, gap_s: float, kinds: tuple[str, ...], token: str, ready, done, results) -> None:
    holder = _Holder(url, per_kind, gap_s, kinds, token)
    asyncio.run(holder.run(ready, done))
    results.put(holder.stats)


class _Holder:
    def __init__(self, url: str, per_kind: int, gap_s: float, kinds: tuple[str, ...], token: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.per_kind, self.gap_s, self.kinds = per_kind, gap_s, kinds
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        head = f"POST {INFER_PATH} HTTP/1.1\r\nHost: {self.host}\r\n{auth}Content-Type: application/json\r\n"
        self.header_bytes = (head + "Content-Length: 2\r\n\r\n").encode()
        self.body_head = (head + "Content-Length: 100000\r\n\r\n").encode()
        self.stats = {k: SlowStats() for k in kinds}
        self._stop = asyncio.Event()

    async def run(self, ready, done) -> None:
        loop = asyncio.get_running_loop()
        connected = asyncio.Semaphore(0)
        tasks = [asyncio.create_task(self._keep(kind, connected)) for kind in self.kinds for _ in range(self.per_kind)]
        for _ in tasks:
            await connected.acquire()
        ready.set()
        await loop.run_in_executor(None, done.wait)
        self._stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _keep(self, kind: str, connected: asyncio.Semaphore) -> None:
        """One slow connection of `kind`, opened again whenever the server ends it."""
        first = True
        stats = self.stats[kind]
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:  # refused, or out of descriptors: count it and try again
                stats.refused += 1
                if first:
                    connected.release()
                    first = False
                await asyncio.sleep(self.gap_s)
                continue
            stats.opened += 1
            if first:
                connected.release()
                first = False
            start = time.monotonic()
            sender = asyncio.create_task(self._send(kind, writer))
            try:
                line = await reader.readline()  # b"" when the server closes without answering
                if line:
                    stats.answers[line.split()[1].decode() if len(line.split()) > 1 else "?"] += 1
                    await reader.read()  # the rest, until the server closes
                stats.closed_by_server += 1
                stats.held_s.append(time.monotonic() - start)
            except (ConnectionError, asyncio.IncompleteReadError):
                stats.closed_by_server += 1
                stats.held_s.append(time.monotonic() - start)
            finally:
                sender.cancel()
                writer.close()

    async def _send(self, kind: str, writer: asyncio.StreamWriter) -> None:
        if kind == "idle":
            return
        if kind == "body":
            writer.write(self.body_head)
        data = self.header_bytes if kind == "headers" else b"1" * 100_000
        try:
            for i in range(len(data)):
                writer.write(data[i : i + 1])
                await writer.drain()
                await asyncio.sleep(self.gap_s)
        except ConnectionError:
            pass


def _row_body(i: int) -> dict:
    row = np.random.default_rng(i).integers(0, 17, 64).astype(float).tolist()
    return {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": row}]}


def normal_latencies(url: str, headers: dict[str, str], n: int, offset: int = 0) -> list[float]:
    """A fixed sequence of `n` inferences on one keep-alive connection; seconds each. Every one must be 200."""
    bodies = [_row_body(offset + i) for i in range(n)]
    out = []
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        client.post(INFER_PATH, json=bodies[0])  # the connection is open before timing starts
        for body in bodies:
            start = time.perf_counter()
            r = client.post(INFER_PATH, json=body)
            out.append(time.perf_counter() - start)
            if r.status_code != 200:
                raise RuntimeError(f"normal request answered {r.status_code}: {r.text}")
    return out


def p99(seconds: list[float]) -> float:
    return float(np.percentile(seconds, 99))


@dataclass
class Comparison:
    baseline: list[float]
    loaded: list[float]
    slow: dict[str, SlowStats]
    connections: int

    @property
    def ratio(self) -> float:
        return p99(self.loaded) / p99(self.baseline)

    def report(self) -> str:
        summary = (
            f"normal requests, p50 / p99 ms: without slow clients {statistics.median(self.baseline) * 1e3:.2f} / "
            f"{p99(self.baseline) * 1e3:.2f} ({len(self.baseline)} requests); with {self.connections} slow connections "
            f"{statistics.median(self.loaded) * 1e3:.2f} / {p99(self.loaded) * 1e3:.2f} ({len(self.loaded)}); p99 ratio {self.ratio:.2f}"
        )
        lines = [
            summary,
            "| kind | connections opened | refused | closed by the server | answers | held (s, median) |",
            "|---|---|---|---|---|---|",
        ]
        for kind, s in self.slow.items():
            held = f"{statistics.median(s.held_s):.1f}" if s.held_s else "whole run"
            lines.append(f"| {kind} | {s.opened} | {s.refused} | {s.closed_by_server} | {dict(s.answers) or '-'} | {held} |")
        return "\n".join(lines)


def compare(url: str, headers: dict[str, str], per_kind: int, requests: int, rounds: int = 3, gap_s: float = 0.5) -> Comparison:
    """Blocks of `requests` normal requests, alternately without and with slow connections held."""
    token = headers.get("Authorization", "").removeprefix("Bearer ")
    normal_latencies(url, headers, requests)  # warm-up: caches, the batch cost model
    baseline: list[float] = []
    loaded: list[float] = []
    stats = {k: SlowStats() for k in KINDS}
    for r in range(rounds):
        baseline += normal_latencies(url, headers, requests, offset=(2 * r + 1) * requests)
        with SlowClients(url, per_kind, gap_s, token=token) as slow:
            loaded += normal_latencies(url, headers, requests, offset=(2 * r + 2) * requests)
        for kind, s in slow.stats.items():
            stats[kind].opened += s.opened
            stats[kind].refused += s.refused
            stats[kind].closed_by_server += s.closed_by_server
            stats[kind].answers.update(s.answers)
            stats[kind].held_s += s.held_s
    return Comparison(baseline, loaded, stats, per_kind * len(KINDS))


def _own_server(workdir: Path):
    """One worker, embedded defaults (no Redis), auth with a key of its own."""
    from gateway.auth import AuthSettings
    from gateway.tokens import mint
    from loadtest.bench import SERVICE
    from loadtest.servers import bentoml_server

    secret = workdir / "jwt-secret"
    secret.write_text(secrets.token_hex(32))
    env = {
        "REDIS_URL": "",
        "RTSERVE_WORKERS": "1",
        "RTSERVE_AUTH_ENABLED": "true",
        "RTSERVE_AUTH_HS256_SECRET_FILE": str(secret),
        "RTSERVE_ROUTING_STATE_FILE": str(workdir / "routes.json"),
    }
    server = bentoml_server("slowclients", SERVICE, env, "/v2/health/ready")
    token = mint(AuthSettings(hs256_secret_file=secret), subject="slow", scopes="predict", tenant="slow", ttl_s=3600)
    return server, token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server; without it one is started (one worker, no Redis)")
    parser.add_argument("--token", default="", help="bearer token for --url")
    parser.add_argument("--connections", type=int, default=300, help="slow connections in all, split over the three kinds")
    parser.add_argument("--requests", type=int, default=500, help="normal requests per block")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between the bytes a slow client sends")
    args = parser.parse_args(argv)
    per_kind = max(1, args.connections // len(KINDS))
    with tempfile.TemporaryDirectory(prefix="rtserve-slowclients-") as tmp:
        server = None
        url, token = args.url, args.token
        if url is None:
            from loadtest.servers import use_project_store

            use_project_store()
            server, token = _own_server(Path(tmp))
            server.log_path = Path(tmp) / f"{server.name}.log"
            server.start()
            url = server.url
        try:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            result = compare(url, headers, per_kind, args.requests, args.rounds, args.gap)
        finally:
            if server is not None:
                server.stop()
    print(result.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
