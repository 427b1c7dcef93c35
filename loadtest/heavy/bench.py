"""The heavy models' own numbers, without HTTP: load time, memory, the runner's batch curve, threads against workers.

    python -m loadtest.heavy                        # make heavy-bench: every heavy model (make heavy-models first)
    python -m loadtest.heavy --models heavy-trees-xgb --batches 1,8,64 --seconds 2

Per model, each measurement in fresh processes ("workers"), so one does not inherit another's memory or threads:
- load: from the load call to ready, warm-up included, as the server loads a version (`ModelRegistry.load` with
  the model's serving settings from `loadtest/heavy/serving.yaml`); resident memory before the load (frameworks
  imported), after it, and after unloading it as the server does (`ModelRegistry.unload`, which gives the freed
  heap back with `malloc_trim`); with 1 worker and with 2 loading at once.
- batch curve: the runner alone (`Runner.run`, no queue, no HTTP) at batch sizes 1..64 on fixed input sizes
  (224x224 images, texts of 32 and 128 tokens, 64-feature rows): rows/s and the latency of a call.
- threads against workers: one worker with 2 intra-op threads against two workers with 1 each, running the
  same batch flat out on the same cores: rows/s and p99 of a call.

Writes `loadtest/results/heavy-<date>.json`, `.md` and the batch curves' chart (loadtest/charts.py). Timings on a shared machine are only comparable within
one run: each table is measured side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.threads import cap_threads
from loadtest import charts, machine
from loadtest.heavy.build import FULL, TINY, Size
from loadtest.servers import ROOT, use_project_store

RESULTS = ROOT / "loadtest" / "results"
HEAVY_CONFIG = Path(__file__).with_name("serving.yaml")
MODELS = ("heavy-resnet-onnx", "heavy-resnet-torch", "heavy-bert-onnx", "heavy-trees-xgb")
TEXT_LENGTHS = (32, 128)
BATCHES = (1, 2, 4, 8, 16, 32, 64)


# ---- in the worker process -------------------------------------------------------------------------------------


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def model_input(runner: Any, batch: int, length: int | None) -> Any:
    """A fixed-size batch: images of the model's size, texts of `length` tokens, or feature rows."""
    rng = np.random.default_rng(0)
    spec = runner.input_spec
    if runner.tokenize is not None:
        return np.array([text_of_tokens(runner.tokenize, length or 128)] * batch, dtype=object)
    return rng.normal(size=(batch, *spec.row_shape)).astype(spec.dtype)


def text_of_tokens(tokenize: Any, tokens: int) -> str:
    """A text that tokenizes to exactly `tokens` positions ([CLS] and [SEP] included), from the tokenizer's own
    vocabulary, so every row of a batch runs the same sequence length."""
    from loadtest.heavy.build import corpus

    def count(text: str) -> int:
        return len(tokenize.tokenizer.encode(text).ids)

    words = " ".join(corpus(200_000)).split()
    lo, hi = 1, len(words)
    while lo < hi:  # the fewest words that reach `tokens` (truncation caps it there)
        mid = (lo + hi) // 2
        if count(" ".join(words[:mid])) >= tokens:
            hi = mid
        else:
            lo = mid + 1
    text = " ".join(words[:lo])
    if count(text) > tokens:  # the last word is several tokens: without it, then words of one token each
        text = " ".join(words[:lo - 1])
        text = " ".join([text, *single_token_words(tokenize.tokenizer)[: tokens - count(text)]])
    return text


def single_token_words(tokenizer: Any) -> list[str]:
    """The vocabulary's whole lower-case words that are one token each, in order: each adds exactly one position."""
    return sorted(w for w in tokenizer.get_vocab() if w.isalpha() and w.islower() and len(w) > 1
                  and len(tokenizer.encode(w).ids) == 3)  # [CLS] word [SEP]


def worker_load(tag: str, threads: int) -> dict[str, Any]:
    """Load the version as the server does, then unload it as the server does; memory at each step."""
    import asyncio
    import gc

    import onnxruntime  # noqa: F401 - the frameworks a worker has loaded before any model
    import xgboost  # noqa: F401

    from runners.registry import ModelRegistry
    from runners.settings import ServingConfig

    cap_threads(threads)
    name, version = tag.split(":")
    config = ServingConfig(defaults=_batch_settings(tag), models={name: {"versions": [version]}})
    registry = ModelRegistry(config)
    gc.collect()
    before = _rss_mb()
    start = time.perf_counter()
    entry = registry.load(name, version)
    seconds = time.perf_counter() - start
    if entry.error:
        raise RuntimeError(entry.error)
    loaded = _rss_mb()
    async def unload() -> None:
        await registry.unload(name, version)
        await registry.trimming  # the heap given back, as the server's unload does in the background

    asyncio.run(unload())
    del entry
    gc.collect()
    return {"load_s": seconds, "rss_before_mb": before, "rss_loaded_mb": loaded, "model_mb": loaded - before,
            "rss_unloaded_mb": _rss_mb()}


def worker_curve(tag: str, threads: int, batches: list[int], length: int | None, seconds: float) -> dict[str, Any]:
    """The runner's own batch curve: per batch size, rows/s and call latency; beside each, the cost the batcher
    predicts after the server's warm-up (in work: rows, or rows x tokens), and what a cost model of rows alone,
    warmed up at length 8, predicts."""
    from runners.cost import BatchCost
    from runners.loader import load_runner

    cap_threads(threads)
    runner = load_runner(tag, "cpu")
    settings = _batch_settings(tag)
    by_work, by_rows = BatchCost(), BatchCost()
    for work, secs in runner.warmup((1, settings.max_batch_size), tuple(settings.warmup_lengths)):
        by_work.observe(work, secs)
    if runner.varies:  # the former warm-up: length 8, its timings counted in rows
        for work, secs in runner.warmup((1, settings.max_batch_size), (8,)):
            by_rows.observe(max(1, work // 8), secs)
    points = []
    for batch in batches:
        x = model_input(runner, batch, length)
        runner.run(x)  # the first call of a shape pays its lazy initialisation
        times = _timed_calls(runner, x, seconds)
        points.append({"batch": batch, "calls": len(times), "rows_per_s": batch * len(times) / sum(times),
                       "p50_ms": 1000 * statistics.median(times), "max_ms": 1000 * max(times),
                       "work": runner.work(x), "predicted_ms": 1000 * by_work.estimate(runner.work(x)),
                       "predicted_by_rows_ms": 1000 * by_rows.estimate(batch) if runner.varies else None})
    return {"points": points, "varies": runner.varies}


def _batch_settings(tag: str) -> Any:
    from app.config import load_serving

    return load_serving(HEAVY_CONFIG).batch_settings(tag.split(":")[0])


def _timed_calls(runner: Any, x: Any, seconds: float, at_least: int = 2) -> list[float]:
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < at_least or time.perf_counter() < deadline:
        start = time.perf_counter()
        runner.run(x)
        times.append(time.perf_counter() - start)
    return times


def worker_run(tag: str, threads: int, batch: int, length: int | None, seconds: float, ready: str, go: str) -> dict[str, Any]:
    """Calls of one batch size, flat out for `seconds` once the file `go` exists (the parent creates it when every
    worker has created its `ready` file, so the workers run together)."""
    from runners.loader import load_runner

    cap_threads(threads)
    runner = load_runner(tag, "cpu")
    x = model_input(runner, batch, length)
    runner.run(x)
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.01)
    times = _timed_calls(runner, x, seconds)
    return {"times": times}


# ---- in the parent ---------------------------------------------------------------------------------------------


def spawn_worker(mode: str, **kwargs: Any) -> subprocess.Popen:
    """One measurement (`worker_<mode>`) in a fresh process, which inherits no model, memory or thread pool."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.Popen([sys.executable, "-m", "loadtest.heavy.bench", "--worker", json.dumps({"mode": mode, **kwargs})],
                            stdout=subprocess.PIPE, env=env, cwd=ROOT)


def worker_result(proc: subprocess.Popen) -> dict[str, Any]:
    """What a `spawn_worker` process measured (its last line of output), once it has exited."""
    out, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"a benchmark worker failed (exit {proc.returncode})")
    return json.loads(out.decode().strip().splitlines()[-1])


def measure_load(tag: str) -> dict[str, Any]:
    one = worker_result(spawn_worker("load", tag=tag, threads=1))
    two = [worker_result(p) for p in [spawn_worker("load", tag=tag, threads=1) for _ in range(2)]]
    return {"one_worker": one, "two_workers": two}


def lengths_of(name: str) -> list[int | None]:
    return list(TEXT_LENGTHS) if "bert" in name else [None]


def input_label(name: str, size: Size, length: int | None) -> str:
    """What one row of a model's batch curve is: a text of `length` tokens, an image, or a row of features."""
    if length:
        return f"{length} tokens"
    return "x".join(map(str, size.image[1:])) + " images" if "resnet" in name else "64 features"


def measure_threads(tag: str, batch: int, length: int | None, seconds: float) -> dict[str, Any]:
    """1 worker x 2 threads against 2 workers x 1 thread, each flat out on the same batch."""
    out = {}
    for label, workers, threads in (("1x2", 1, 2), ("2x1", 2, 1)):
        with tempfile.TemporaryDirectory(prefix="heavy-threads-") as tmp:
            go, ready = Path(tmp) / "go", [Path(tmp) / f"ready-{i}" for i in range(workers)]
            procs = [spawn_worker("run", tag=tag, threads=threads, batch=batch, length=length, seconds=seconds,
                             ready=str(r), go=str(go)) for r in ready]
            while not all(r.exists() for r in ready):  # every worker loaded and warm
                if any(p.poll() is not None for p in procs):
                    break  # one failed: worker_result says so
                time.sleep(0.05)
            go.touch()
            runs = [worker_result(p)["times"] for p in procs]
        calls = [t for r in runs for t in r]
        out[label] = {"rows_per_s": sum(batch * len(r) / sum(r) for r in runs),
                      "p50_ms": 1000 * statistics.median(calls), "p99_ms": 1000 * float(np.percentile(calls, 99)),
                      "calls": len(calls)}
    return out


def markdown(results: dict[str, Any]) -> str:
    load = results.get("load_average")
    lines = [f"Heavy models, {results['date']}, {results.get('machine', f'{os.cpu_count()} cores')}"
             + (f", load average {load[0]} at the start, {load[1]} at the end" if load else "") + f": {results['command']}", "",
             ("| model | load to ready (warm-up incl.) | model RSS, 1 worker | per worker, 2 workers | RSS kept after "
              "unload (malloc_trim incl.) |"), "|---|---|---|---|---|"]
    for tag, r in results["models"].items():
        one, two = r["load"]["one_worker"], r["load"]["two_workers"]
        # a run from before the server trimmed on unload recorded the trim apart, as rss_trimmed_mb
        kept = one.get("rss_trimmed_mb", one["rss_unloaded_mb"]) - one["rss_before_mb"]
        lines.append(f"| `{tag}` | {one['load_s']:.1f} s (2 workers: {max(w['load_s'] for w in two):.1f} s) | "
                     f"{one['model_mb']:.0f} MB | {', '.join(format(w['model_mb'], '.0f') for w in two)} MB | "
                     f"{kept:.0f} MB |")
    lines += ["", ("Runner's own batch curve (one intra-op thread, no HTTP): rows/s over every call (at the p50 call), "
                   "and p50 / max latency of a call"), "",
              "| model | input | " + " | ".join(f"batch {b}" for b in results["batches"]) + " |",
              "|---|---|" + "---|" * len(results["batches"])]
    for tag, r in results["models"].items():
        for curve in r["curves"]:
            cells = {p["batch"]: f"{p['rows_per_s']:.1f}/s ({1000 * p['batch'] / p['p50_ms']:.1f}/s), "
                                 f"{p['p50_ms']:.1f} / {p['max_ms']:.0f} ms" for p in curve["points"]}
            lines.append(f"| `{tag}` | {curve['input']} | " + " | ".join(cells.get(b, "-") for b in results["batches"]) + " |")
    lines += ["", ("The batcher's cost model against the measured cost of a call (p50): predicted from the server's warm-up "
                   "in work (rows, or rows x tokens), and by rows alone from a warm-up at length 8 (the former model)"), "",
              "| model | input | batch | work | measured | predicted (work) | predicted (rows, length 8) |", "|---|---|---|---|---|---|---|"]
    for tag, r in results["models"].items():
        for curve in r["curves"]:
            for p in curve["points"]:
                by_rows = p.get("predicted_by_rows_ms")
                lines.append(f"| `{tag}` | {curve['input']} | {p['batch']} | {p['work']} | {p['p50_ms']:.1f} ms | "
                             f"{p['predicted_ms']:.1f} ms | {'-' if by_rows is None else f'{by_rows:.1f} ms'} |")
    lines += ["", "Threads against workers on the same cores (same batch, flat out): rows/s, p50 / p99 of a call", "",
              "| model | batch | 1 worker x 2 threads | 2 workers x 1 thread | 2x1 / 1x2 throughput |", "|---|---|---|---|---|"]
    for tag, r in results["models"].items():
        t = r["threads"]
        a, b = t["1x2"], t["2x1"]
        lines.append(f"| `{tag}` | {t['batch']} ({t['input']}) | {a['rows_per_s']:.1f}/s, {a['p50_ms']:.0f} / {a['p99_ms']:.0f} ms | "
                     f"{b['rows_per_s']:.1f}/s, {b['p50_ms']:.0f} / {b['p99_ms']:.0f} ms | {b['rows_per_s'] / a['rows_per_s']:.2f} |")
    return "\n".join(lines) + "\n"


def run(size: Size, names: list[str], batches: list[int], seconds: float, thread_batch: int, out: Path) -> dict[str, Any]:
    """Every measurement of every model; the results so far are rewritten to `out` after each model."""
    results: dict[str, Any] = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine.describe(),
                               "load_average": [round(os.getloadavg()[0], 1)] * 2, "batches": batches,
                               "command": "python -m " + " ".join(["loadtest.heavy", *sys.argv[1:]]), "models": {}}
    for name in names:
        tag = f"{name}:{size.version}"
        print(f"{tag}: load and memory", file=sys.stderr)
        entry: dict[str, Any] = {"load": measure_load(tag), "curves": []}
        for length in lengths_of(name):
            what = input_label(name, size, length)
            print(f"{tag}: batch curve, {what}", file=sys.stderr)
            curve = worker_result(spawn_worker("curve", tag=tag, threads=1, batches=batches, length=length, seconds=seconds))
            entry["curves"].append({"input": what, **curve})
        length = lengths_of(name)[-1]
        print(f"{tag}: threads against workers", file=sys.stderr)
        entry["threads"] = {"batch": thread_batch, "input": entry["curves"][-1]["input"],
                            **measure_threads(tag, thread_batch, length, seconds)}
        results["models"][tag] = entry
        results["load_average"] = [results["load_average"][0], round(os.getloadavg()[0], 1)]
        out.write_text(json.dumps(results, indent=2))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated heavy model names")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per point (at least 3 calls)")
    parser.add_argument("--thread-batch", type=int, default=8, help="batch size of the threads-against-workers runs")
    parser.add_argument("--tiny", action="store_true", help="the stand-ins (make heavy-models HEAVY_ARGS=--tiny)")
    parser.add_argument("--table", metavar="JSON", type=Path, help="print the tables of an earlier run's results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.table:
        print(markdown(json.loads(args.table.read_text())))
        return 0
    use_project_store()
    if args.worker:
        job = json.loads(args.worker)
        mode = job.pop("mode")
        result = {"load": worker_load, "curve": worker_curve, "run": worker_run}[mode](**job)
        print(json.dumps(result))
        return 0
    size = TINY if args.tiny else FULL
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"heavy-{datetime.now(UTC).strftime('%Y%m%d-%H%M')}"
    results = run(size, args.models.split(","), [int(b) for b in args.batches.split(",")], args.seconds, args.thread_batch,
                  stem.with_suffix(".json"))
    table = markdown(results)
    stem.with_suffix(".md").write_text(table)
    print(table)
    for chart in charts.write(stem.with_suffix(".json")):
        print(f"chart: {chart}", file=sys.stderr)
    print(f"written: {stem}.json, {stem}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
