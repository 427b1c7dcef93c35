"""Soak: the production path held at half of its measured saturation, minute after minute.

    make soak                                  # 10 minutes (about 11 with the saturation run)
    python -m loadtest.soak --minutes 2        # a quick check

`ours-prod` of the benchmark (auth, rate limits, cache, metrics, Redis; one worker) serves
digits-sklearn with unique inputs. First a closed-loop wrk run at 64 connections measures
saturation; then wrk holds `--fraction` of it as an open loop (Poisson arrivals over 256
connections) in runs of 60 s, one per minute. After each minute: wrk's p50/p99 and errors,
the worker's resident memory, and the minute's garbage-collection pauses from
`rtserve_gc_pause_seconds` (the service records them with RTSERVE_GC_PAUSES_ENABLED=true).

Passes when: no request failed, the last minute's p99 is within 20 % of the first's, the
worker's memory grew under 5 % from the end of the first minute to the end, and the last
minute's longest full (generation 2) collection is no longer than the first's (to the
histogram's bucket; a minute without one counts as no growth). Not part of the test suite.
Writes loadtest/results/soak-<time>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from loadtest.bench import RESULTS, measure, run_wrk, targets
from loadtest.scenarios import SCENARIOS
from loadtest.servers import use_project_store


@dataclass
class Minute:
    minute: int
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    socket_errors: int  # connect, read, write errors and timeouts (5 s)
    worker_rss_mib: float
    gc_full: int  # generation-2 collections in the minute
    gc_full_max_ms: float  # upper bound of the longest one (histogram bucket); 0 without one
    gc_pause_ms: float  # all generations, summed


def gc_histogram(url: str) -> dict[str, dict]:
    """From the metrics at `url` (the server's `metrics_url`), per generation: cumulative bucket counts (by upper bound), count and sum of pauses."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict] = {}
    text = httpx.get(url, timeout=30).text
    for family in text_string_to_metric_families(text):
        if family.name != "rtserve_gc_pause_seconds":
            continue
        for s in family.samples:
            g = out.setdefault(s.labels["generation"], {"buckets": {}, "count": 0.0, "sum": 0.0})
            if s.name.endswith("_bucket"):
                g["buckets"][float(s.labels["le"])] = s.value
            elif s.name.endswith("_count"):
                g["count"] = s.value
            elif s.name.endswith("_sum"):
                g["sum"] = s.value
    return out


def gc_minute(before: dict[str, dict], after: dict[str, dict]) -> tuple[int, float, float]:
    """(full collections, bound on the longest in ms, all pauses in ms) between two scrapes."""
    empty = {"buckets": {}, "count": 0.0, "sum": 0.0}
    total_ms = sum((after[g]["sum"] - before.get(g, empty)["sum"]) * 1000 for g in after)
    full, full_before = after.get("2", empty), before.get("2", empty)
    count = int(full["count"] - full_before["count"])
    longest = 0.0
    if count:
        bounds = sorted(full["buckets"])
        longest = next(b for b in bounds if full["buckets"][b] - full_before["buckets"].get(b, 0.0) == count) * 1000
    return count, longest, total_ms


def verdict(minutes: list[Minute]) -> list[str]:
    """What failed, one line each; empty when the soak passed."""
    first, last = minutes[0], minutes[-1]
    problems = []
    failed = sum(m.non2xx + m.socket_errors for m in minutes)
    if failed:
        sockets = sum(m.socket_errors for m in minutes)
        problems.append(f"{failed} failed requests ({failed - sockets} non-2xx, {sockets} socket errors or timeouts)")
    if last.p99_ms > 1.2 * first.p99_ms:
        problems.append(f"p99 grew from {first.p99_ms:.2f} ms to {last.p99_ms:.2f} ms (over 20 %)")
    if last.worker_rss_mib > 1.05 * first.worker_rss_mib:
        problems.append(f"worker memory grew from {first.worker_rss_mib:.0f} to {last.worker_rss_mib:.0f} MiB (over 5 %)")
    if first.gc_full and last.gc_full and last.gc_full_max_ms > first.gc_full_max_ms:
        problems.append(f"longest full collection grew from <= {first.gc_full_max_ms:g} ms to <= {last.gc_full_max_ms:g} ms")
    return problems


def behind(rate: float, minutes: list[Minute]) -> list[int]:
    """Minutes in which the load fell short of the rate by over 10 %: the machine (server and wrk
    share it) could not keep up, so latencies then measure the machine as much as the service."""
    return [m.minute for m in minutes if m.rps < 0.9 * rate]


def table(saturation: float, rate: float, minutes: list[Minute], gc_total: dict[str, dict]) -> str:
    recorded = ", ".join(f"generation {g}: {int(h['count'])} ({h['sum'] * 1000:.0f} ms)" for g, h in sorted(gc_total.items()))
    lines = [
        f"Saturation (closed loop, 64 connections): {saturation:,.0f} req/s; held: {rate:,.0f} req/s (open loop, 256 connections).",
        f"Collections recorded by the worker since it started: {recorded or 'none'}.",
        "",
        (
            "| minute | req/s | p50 ms | p99 ms | non-2xx | socket errors | worker RSS MiB | full GCs | longest full GC ms (<=) "
            "| all GC pauses ms |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {m.minute} | {m.rps:,.0f} | {m.p50_ms:.2f} | {m.p99_ms:.2f} | {m.non2xx} | {m.socket_errors} | {m.worker_rss_mib:.1f} | "
        f"{m.gc_full} | "
        f"{m.gc_full_max_ms:g} | {m.gc_pause_ms:.1f} |"
        for m in minutes
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--fraction", type=float, default=0.5, help="of the measured saturation")
    parser.add_argument("--scenario", default="sklearn-miss", choices=sorted(SCENARIOS))
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    use_project_store()
    scenario = SCENARIOS[args.scenario]
    req = scenario.oip
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rtserve-soak-") as tmp:
        work = Path(tmp)
        server = targets(work, args.workers)["ours-prod"]
        server.env["RTSERVE_GC_PAUSES_ENABLED"] = "true"
        print(f"starting {server.name} ...", flush=True)
        server.log_path = work / f"{server.name}.log"
        server.start()
        try:
            saturation = measure(server, scenario, req, 64, 10, work).rps
            rate = saturation * args.fraction
            print(f"saturation {saturation:,.0f} req/s; holding {rate:,.0f} req/s for {args.minutes} min", flush=True)
            minutes: list[Minute] = []
            before = gc_histogram(server.metrics_url)
            for i in range(1, args.minutes + 1):
                raw = run_wrk(server, req, 256, 60, work, rate=rate)
                after = gc_histogram(server.metrics_url)
                full, longest, paused = gc_minute(before, after)
                before = after
                m = Minute(
                    i,
                    raw["requests"] / (raw["duration_us"] / 1e6),
                    raw["p50_us"] / 1000,
                    raw["p99_us"] / 1000,
                    raw["non2xx"],
                    raw["socket_errors"],
                    server.worker_rss_bytes() / 2**20,
                    full,
                    longest,
                    paused,
                )
                minutes.append(m)
                print(
                    f"  minute {i}: {m.rps:,.0f} req/s, p99 {m.p99_ms:.2f} ms, errors {m.non2xx + m.socket_errors}, "
                    f"RSS {m.worker_rss_mib:.1f} MiB, full GCs {full} (longest <= {longest:g} ms)",
                    flush=True,
                )
        finally:
            server.stop()
    problems = verdict(minutes)
    md = (
        table(saturation, rate, minutes, before)
        + "\n\n"
        + ("Passed." if not problems else "Failed: " + "; ".join(problems) + ".")
    )
    if short := behind(rate, minutes):
        md += f"\nThe load fell more than 10 % short of {rate:,.0f} req/s in minutes {short}: the machine was saturated."
    print("\n" + md)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"soak-{stamp}.md").write_text(md + "\n")
    (RESULTS / f"soak-{stamp}.json").write_text(
        json.dumps(
            {
                "saturation_rps": saturation,
                "rate_rps": rate,
                "minutes": [asdict(m) for m in minutes],
                "problems": problems,
                "minutes_behind_rate": behind(rate, minutes),
            },
            indent=2,
        )
    )
    print(f"\nwritten: loadtest/results/soak-{stamp}.md and .json")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
