"""Per-row latency of model versions measured on the runner itself, without HTTP or batching.

    python -m loadtest.runner_timing                   # the digits networks and their optimized variants
    python -m loadtest.runner_timing --onnx-options    # onnxruntime session options, one at a time

Candidates are timed in turns (each repetition times every candidate once, in a shuffled
order, since a session with thread pools leaves threads spinning into the next one's block),
so a busy machine slows all of them alike; each figure is the median over the repetitions of
the mean per-row time of a block of calls, on held-out digits.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from demo import data
from loadtest.servers import use_project_store

VARIANT_TAGS = ["digits-torch:v2", "digits-torch:v2-int8", "digits-onnx:v2", "digits-onnx:v2-int8", "digits-onnx:v2-opt"]
BATCHES = (1, 64)
ROWS_PER_BLOCK = 256  # rows each candidate runs per repetition: 256 calls at batch 1, 4 at batch 64


def per_row_us(candidates: dict[str, Callable[[np.ndarray], object]], x: np.ndarray, batch: int, reps: int) -> dict[str, float]:
    """Median over `reps` turns of the mean microseconds per row, for every candidate."""
    rows = np.ascontiguousarray(x[:batch])
    calls = max(1, ROWS_PER_BLOCK // batch)
    for fn in candidates.values():
        fn(rows)  # first call: lazy initialisation
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    order = list(candidates)
    rng = random.Random(0)
    for _ in range(reps):
        rng.shuffle(order)
        for name in order:
            fn = candidates[name]
            start = time.perf_counter()
            for _ in range(calls):
                fn(rows)
            samples[name].append((time.perf_counter() - start) / (calls * batch) * 1e6)
    return {name: statistics.median(v) for name, v in samples.items()}


def digits_rows(row_shape: tuple[int, ...]) -> np.ndarray:
    x = data.digits().x_test
    return x.reshape(len(x), *row_shape)


def variant_table(tags: list[str], reps: int) -> str:
    from runners.loader import load_runner

    runners = {tag: load_runner(tag, "cpu") for tag in tags}
    x = digits_rows(runners[tags[0]].input_spec.row_shape)
    timings = {b: per_row_us({t: r.run for t, r in runners.items()}, x, b, reps) for b in BATCHES}
    lines = ["| version | held-out accuracy | delta vs float | µs/row, batch 1 | µs/row, batch 64 | what runs in int8 |",
             "|---|---|---|---|---|---|"]
    for tag, r in runners.items():
        meta = r.metadata
        delta = meta.get("accuracy_delta")
        lines.append(f"| `{tag}` | {meta['accuracy']:.4f} | {'' if delta is None else f'{delta * 100:+.2f} pt'} | "
                     f"{timings[1][tag]:.1f} | {timings[64][tag]:.1f} | {', '.join(meta.get('quantized_layers', [])) or '-'} |")
    return "\n".join(lines)


def onnx_options_table(tag: str, reps: int) -> str:
    """The runner's default session options against each option changed alone."""
    import bentoml

    from runners.onnx_runner import OnnxRunner, SessionSettings

    model = bentoml.models.get(tag)
    base = SessionSettings()
    changes = {
        "defaults": {},
        "graph_optimization_level=disable": {"graph_optimization_level": "disable"},
        "graph_optimization_level=basic": {"graph_optimization_level": "basic"},
        "graph_optimization_level=extended": {"graph_optimization_level": "extended"},
        "intra_op_num_threads=2": {"intra_op_num_threads": 2},
        "inter_op_num_threads=2, execution_mode=parallel": {"inter_op_num_threads": 2, "execution_mode": "parallel"},
        "execution_mode=parallel": {"execution_mode": "parallel"},
        "enable_cpu_mem_arena=false": {"enable_cpu_mem_arena": False},
    }
    runners = {name: OnnxRunner(model, "cpu", replace(base, **change)) for name, change in changes.items()}
    x = digits_rows(runners["defaults"].input_spec.row_shape)
    timings = {b: per_row_us({n: r.run for n, r in runners.items()}, x, b, reps) for b in BATCHES}
    lines = [f"Session options on `{tag}`; defaults: {base}", "",
             "| session options | µs/row, batch 1 | vs defaults | µs/row, batch 64 | vs defaults |", "|---|---|---|---|---|"]
    for name in changes:
        lines.append(f"| {name} | {timings[1][name]:.1f} | {timings[1][name] / timings[1]['defaults']:.2f}x | "
                     f"{timings[64][name]:.1f} | {timings[64][name] / timings[64]['defaults']:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tags", default=",".join(VARIANT_TAGS), help="versions to time (digits models)")
    parser.add_argument("--onnx-options", metavar="TAG", nargs="?", const="digits-onnx:v2",
                        help="time onnxruntime session options on this ONNX version instead")
    parser.add_argument("--reps", type=int, default=25, help="repetitions; the median is reported")
    args = parser.parse_args(argv)
    use_project_store()
    from core.threads import cap_threads

    cap_threads(1)  # as a worker runs models (`intra_op_threads` in serving.yaml)
    if args.onnx_options:
        print(onnx_options_table(args.onnx_options, args.reps))
    else:
        print(variant_table(args.tags.split(","), args.reps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
