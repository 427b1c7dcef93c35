"""Where a worker's time goes under load: py-spy on the worker while wrk drives one scenario.

    python -m loadtest.profile                                   # ours-prod, sklearn-miss, 64 connections
    python -m loadtest.profile --target ours-bare --seconds 20 --top 30
    python -m loadtest.profile --open-rate 1200                  # Poisson arrivals at 1,200 req/s, 256 connections

Starts the target with one worker, warms it up, records the worker with py-spy (`--idle` off, so
only time spent running counts) while wrk holds the load, and prints the functions with the most
samples on top of the stack (own time) and anywhere on it (inclusive), as percentages of all
samples, and the worker's CPU time per request over the recording (closed and open loop differ a lot:
a request that arrives alone pays a loop turn of its own). The collapsed stacks go to loadtest/results/ (any flame graph tool reads them, e.g.
speedscope or flamegraph.pl).
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from loadtest.bench import RESULTS, Metered, request_for, run_wrk, targets
from loadtest.scenarios import SCENARIOS
from loadtest.servers import BIN, ROOT, use_project_store


def frame_name(frame: str) -> str:
    """`function (path/to/file.py:line)` as `function (file.py)`: lines differ, functions do not."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rstrip(")")
    return f"{name} ({Path(file).name})" if file else name


def tally(collapsed: str) -> tuple[collections.Counter, collections.Counter, int]:
    """(own samples, inclusive samples, total samples) per function from py-spy's collapsed stacks."""
    own: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [frame_name(f) for f in stack.split(";")]
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if frames and frames[0].startswith("thread "):
            frames = frames[1:]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    return own, inclusive, total


def report(collapsed: str, top: int) -> str:
    own, inclusive, total = tally(collapsed)
    lines = [f"{total} samples", "", "| own % | function |", "|---|---|"]
    lines += [f"| {100 * n / total:.1f} | `{f}` |" for f, n in own.most_common(top)]
    lines += ["", "| inclusive % | function |", "|---|---|"]
    lines += [f"| {100 * n / total:.1f} | `{f}` |" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="ours-prod")
    parser.add_argument("--scenario", default="sklearn-miss")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--open-rate", type=int, default=0, help="hold this many req/s over 256 connections instead")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    use_project_store()
    scenario = SCENARIOS[args.scenario]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    collapsed_path = RESULTS / f"profile-{args.target}-{stamp}.txt"
    with tempfile.TemporaryDirectory(prefix="rtserve-profile-") as tmp:
        work = Path(tmp)
        server = targets(work, 1)[args.target]
        server.log_path = work / "server.log"
        server.start()
        try:
            req = request_for(args.target, scenario)
            connections = 256 if args.open_rate else args.connections
            run_wrk(server, req, args.connections, 3, work)  # warm-up
            metered = Metered(server)
            load: dict = {}
            wrk = threading.Thread(target=lambda: load.update(
                run_wrk(server, req, connections, args.seconds + 4, work, rate=args.open_rate)))
            wrk.start()
            time.sleep(2)
            spy = [str(BIN / "py-spy"), "record", "--pid", str(metered.worker.pid), "--duration", str(args.seconds),
                   "--rate", str(args.rate), "--nonblocking"]
            with metered:
                subprocess.run([*spy, "--format", "raw", "--output", str(collapsed_path)], check=True, capture_output=True)
            wrk.join()
        finally:
            server.stop()
    rps = load["requests"] / (load["duration_us"] / 1e6) if load else 0.0
    how = f"open loop at {args.open_rate:,} req/s" if args.open_rate else f"{args.connections} connections"
    print(f"{args.target} {scenario.name}, {how}: {rps:,.0f} req/s while profiled (py-spy --nonblocking, {args.rate} Hz); "
          f"worker CPU {100 * metered.cpu / metered.seconds:.0f} % of a core, "
          f"{1e6 * metered.cpu / metered.seconds / max(rps, 1):.0f} µs per request")
    print(report(collapsed_path.read_text(), args.top))
    print(f"\nwritten: {collapsed_path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
