"""gRPC beside REST on the same server in one run: `tritonclient.grpc`'s wire format driven by h2load.

    python -m loadtest.grpcbench                  # ours-prod, 1, 16 and 64 connections (about 4 minutes)
    python -m loadtest.grpcbench --connections 64 --duration 5

There is no ghz on Debian or PyPI; h2load (Debian's nghttp2-client) is a C HTTP/2 load generator,
and a unary gRPC call is an HTTP/2 POST with a length-prefixed protobuf body, so h2load sends the
very bytes tritonclient.grpc sends (raw_input_contents). It sees HTTP status only, not grpc-status,
so every gRPC run is checked against the server's own count of error answers (rtserve_errors_total,
less the calls h2load itself abandons when a timed run ends). REST goes through wrk as in bench.py. One call in flight per connection
for both (h2load -m 1), so the connection counts compare; `--streams` adds multiplexed runs.

Scenarios (digits-sklearn on ours-prod: auth, rate limits, cache on Redis, metrics):
- fresh: one row per request, computed every time. REST sends unique rows (bench.py's sklearn-miss);
  gRPC repeats one row with `cache-control: no-cache` (h2load sends one body), which skips the lookup
  and still stores the answer: the same model and cache-write work.
- cached: the same row every time, answered from the cache (sklearn-hit).
- 64 rows: one request of 64 rows, repeated (sklearn-64rows; gRPC with no-cache, REST from cache).
Writes loadtest/results/grpc-<time>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2 as pb

from loadtest.bench import RESULTS, measure, targets, token_for
from loadtest.scenarios import SCENARIOS, _fixed_rows
from loadtest.servers import Server, free_port, use_project_store

INFER = "/inference.GRPCInferenceService/ModelInfer"


@dataclass
class Row:
    protocol: str
    scenario: str
    connections: int
    streams: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def grpc_frame(rows: int) -> bytes:
    """One ModelInfer call's HTTP/2 body: the gRPC length prefix and the request tritonclient.grpc would send."""
    x = np.asarray(_fixed_rows(rows), np.float32)
    request = pb.ModelInferRequest(
        model_name="digits-sklearn",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="pixels", datatype="FP32", shape=list(x.shape))],
        raw_input_contents=[x.tobytes()],
    )
    body = request.SerializeToString()
    return b"\0" + struct.pack(">I", len(body)) + body


def errors(server: Server) -> float:
    """The server's count of digits-sklearn error answers over all workers, but for calls the load generator
    itself gave up on when a timed run ended (code `cancelled`)."""
    total = 0.0
    for family in text_string_to_metric_families(httpx.get(server.metrics_url, timeout=10).text):
        for s in family.samples:
            if (
                s.name == "rtserve_errors_total"
                and s.labels.get("model") == "digits-sklearn"
                and s.labels.get("code") != "cancelled"
            ):
                total += s.value
    return total


def run_h2load(server: Server, port: int, frame: Path, token: str, conns: int, streams: int, seconds: float, fresh: bool,
               tmp: Path) -> tuple[float, float, float, int]:  # fmt: skip
    """(req/s, p50 ms, p99 ms, calls not answered OK) of one h2load run after a warm-up."""
    log = tmp / "h2load.log"
    headers = ["content-type: application/grpc", "te: trailers", f"authorization: Bearer {token}"]
    if fresh:
        headers.append("cache-control: no-cache")
    log.unlink(missing_ok=True)  # h2load appends
    before = errors(server)
    cmd = ["h2load", "-c", str(conns), "-m", str(streams), "-t", str(min(2, conns)), "-D", str(int(seconds)),
           "--warm-up-time", "2", "-d", str(frame), "--log-file", str(log),
           *[a for h in headers for a in ("-H", h)], f"http://127.0.0.1:{port}{INFER}"]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=seconds + 60).stdout
    lines = [line.split("\t") for line in log.read_text().splitlines() if line]
    latencies = np.array([int(f[2]) for f in lines], dtype=np.float64) / 1000.0
    sent = len(lines)
    not_ok = errors(server) - before + sum(1 for f in lines if f[1] != "200")
    if sent == 0:
        raise RuntimeError(f"h2load logged no request:\n{out}")
    start = min(int(f[0]) for f in lines)
    end = max(int(f[0]) + int(f[2]) for f in lines)
    return sent / ((end - start) / 1e6), float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99)), int(not_ok)


def table(rows: list[Row]) -> str:
    lines = ["| scenario | conns | streams/conn | REST req/s | REST p50 / p99 ms | gRPC req/s | gRPC p50 / p99 ms | gRPC / REST | errors |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    keyed = {(r.protocol, r.scenario, r.connections, r.streams): r for r in rows}
    for r in rows:
        if r.protocol != "grpc":
            continue
        rest = keyed.get(("rest", r.scenario, r.connections, 1))
        rest_cells = [f"{rest.rps:,.0f}", f"{rest.p50_ms:.2f} / {rest.p99_ms:.2f}"] if rest else ["", ""]
        ratio = f"{r.rps / rest.rps:.2f}x" if rest else ""
        errors = r.errors + (rest.errors if rest else 0)
        lines.append(f"| {r.scenario} | {r.connections} | {r.streams} | {rest_cells[0]} | {rest_cells[1]} | {r.rps:,.0f} | "
                     f"{r.p50_ms:.2f} / {r.p99_ms:.2f} | {ratio} | {errors} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--streams", default="", help="also multiplexed gRPC runs: calls in flight per connection, e.g. 16")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    use_project_store()
    conns = [int(c) for c in args.connections.split(",")]
    multiplexed = [int(s) for s in args.streams.split(",") if s]
    scenarios = [("fresh", "sklearn-miss", 1, True), ("cached", "sklearn-hit", 1, False), ("64 rows", "sklearn-64rows", 64, True)]
    rows: list[Row] = []
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rtserve-grpcbench-") as tmp:
        work = Path(tmp)
        server = targets(work, args.workers)["ours-prod"]
        grpc_port = free_port()
        server.env["RTSERVE_GRPC_PORT"] = str(grpc_port)
        server.log_path = work / "ours-prod.log"
        print("starting ours-prod ...", flush=True)
        server.start()
        try:
            token = token_for(work)
            for name, rest_scenario, n_rows, fresh in scenarios:
                frame = work / f"{n_rows}.bin"
                frame.write_bytes(grpc_frame(n_rows))
                scenario = SCENARIOS[rest_scenario]
                for c in conns:
                    rest = measure(server, scenario, scenario.oip, c, args.duration, work)
                    rows.append(Row("rest", name, c, 1, rest.rps, rest.p50_ms, rest.p99_ms, rest.non2xx + rest.socket_errors))
                    for streams in [1, *multiplexed]:
                        rps, p50, p99, errors = run_h2load(
                            server, grpc_port, frame, token, c, streams, args.duration, fresh, work
                        )
                        rows.append(Row("grpc", name, c, streams, rps, p50, p99, errors))
                        print(f"  {name:<8} c={c:<3} m={streams:<3} REST {rest.rps:>8,.0f} req/s p99 {rest.p99_ms:6.2f} ms | "
                              f"gRPC {rps:>8,.0f} req/s p99 {p99:6.2f} ms  errors {errors}", flush=True)  # fmt: skip
        finally:
            server.stop()
    md = table(rows)
    print("\n" + md)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"grpc-{stamp}.md").write_text(md + "\n")
    (RESULTS / f"grpc-{stamp}.json").write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
