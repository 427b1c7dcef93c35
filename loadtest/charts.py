"""The benchmark's results as PNG charts, written next to its JSON: people compare curves faster than tables.

    python -m loadtest.charts loadtest/results/bench-20261207-201500.json

Writes, beside the JSON, whichever of these its data has:
  bench-<time>-closed-loop.png  req/s, p95 and p99 against connections, a line per server, a column per scenario
  bench-<time>-open-loop.png    p50 and p99 against the offered rate (Poisson arrivals), a line per server
  bench-<time>-scaling.png      req/s of the production configuration against its worker count, beside linear
  heavy-<time>-batch-curves.png a heavy-models run (make heavy-bench): rows/s and call latency against the batch
                                size per model, the batcher's predicted cost beside the measured

Each chart has the run's date and machine in its title, and lists its series in the PNG's "Description"
text chunk (which lines it draws), so a reader of the file alone knows what it shows.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only: no display on a server or in CI

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

OPEN_LOOP_P99_BOUND_MS = 10.0
"""The latency target the open loop searches against (loadtest/bench.py stops at the first rate past it)."""
SCALING_PREFIX = "ours-prod-"
"""Scaling rows are named ours-prod-<N>w by the benchmark."""


def _colours(names: Iterable[str]) -> dict[str, str]:
    """One colour per server, the same in every chart of a run."""
    palette = plt.get_cmap("tab10").colors
    return {name: matplotlib.colors.to_hex(palette[i % len(palette)]) for i, name in enumerate(sorted(set(names)))}


def _plain_log(ax) -> None:
    """A log latency axis labelled 20, 40, 100 rather than 2 x 10^1."""
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize="x-small")


def _subtitle(data: dict) -> str:
    run = data.get("run", {})
    return f"{run.get('date', 'date not recorded')}, {run.get('machine', 'machine not recorded')}"


def closed_loop(data: dict) -> Figure | None:
    """Throughput, p95 and p99 against connections: a column per scenario, a line per server (scaling rows apart)."""
    rows = [r for r in data.get("results", []) if not r["target"].startswith(SCALING_PREFIX)]
    if not rows:
        return None
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    targets = list(dict.fromkeys(r["target"] for r in rows))
    connections = sorted({r["connections"] for r in rows})
    colours = _colours(targets)
    fig, axes = plt.subplots(3, len(scenarios), figsize=(max(6.0, 4.2 * len(scenarios)), 9), squeeze=False, sharex="col")
    measures = (("rps", "requests/s"), ("p95_ms", "p95 (ms)"), ("p99_ms", "p99 (ms)"))
    for col, scenario in enumerate(scenarios):
        for row, (key, label) in enumerate(measures):
            ax = axes[row][col]
            for target in targets:
                points = sorted((r["connections"], r[key]) for r in rows if r["target"] == target and r["scenario"] == scenario)
                if points:
                    ax.plot(*zip(*points, strict=True), marker="o", color=colours[target], label=target)
            if key == "rps":
                ax.set_ylim(bottom=0)
            else:
                _plain_log(ax)  # peers differ by orders of magnitude in tail latency
            ax.set_xscale("log", base=2)
            ax.set_xticks(connections, [str(c) for c in connections])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.grid(True, which="both", alpha=0.3)
            if col == 0:
                ax.set_ylabel(label)
            if row == 0:
                ax.set_title(scenario)
            if row == len(measures) - 1:
                ax.set_xlabel("connections (closed loop)")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=min(4, len(targets)), fontsize="small")
    fig.suptitle(f"Closed loop, one worker per server\n{_subtitle(data)}", fontsize="medium")
    fig.tight_layout(rect=(0, 0.03 + 0.025 * ((len(targets) - 1) // 4 + 1), 1, 1))
    return fig


def open_loop(data: dict) -> Figure | None:
    """p50 and p99 against the offered rate, a line per server, with the p99 bound the search stops at."""
    points = data.get("open_loop") or []
    if not points:
        return None
    colours = _colours(p["target"] for p in points)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for target in dict.fromkeys(p["target"] for p in points):
        mine = sorted((p for p in points if p["target"] == target), key=lambda p: p["target_rps"])
        offered = [p["target_rps"] for p in mine]
        ax.plot(offered, [p["p99_ms"] for p in mine], marker="o", color=colours[target], label=f"{target} p99")
        ax.plot(offered, [p["p50_ms"] for p in mine], marker=".", linestyle="--", color=colours[target], label=f"{target} p50")
    ax.axhline(OPEN_LOOP_P99_BOUND_MS, color="grey", linestyle=":", label=f"{OPEN_LOOP_P99_BOUND_MS:g} ms")
    _plain_log(ax)
    ax.set_xlabel("offered requests/s (Poisson arrivals, 256 connections)")
    ax.set_ylabel("latency (ms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(f"Open loop, {points[0]['scenario']}\n{_subtitle(data)}", fontsize="medium")
    fig.tight_layout()
    return fig


def scaling(data: dict) -> Figure | None:
    """Requests/s against worker processes, beside perfect scaling from one worker."""
    rows = sorted(((int(m.group(1)), r) for r in data.get("results", [])
                   if (m := re.fullmatch(re.escape(SCALING_PREFIX) + r"(\d+)w", r["target"]))), key=lambda wr: wr[0])
    if not rows:
        return None
    workers = [w for w, _ in rows]
    rps = [r["rps"] for _, r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar([str(w) for w in workers], rps, color="tab:blue", label="measured")
    one = next((r["rps"] for w, r in rows if w == 1), None)
    if one is not None:
        ax.plot([str(w) for w in workers], [one * w for w in workers], marker="o", color="grey", linestyle="--",
                label="linear from 1 worker")
    for i, (value, (_, r)) in enumerate(zip(rps, rows, strict=True)):
        ax.annotate(f"{value:,.0f} req/s\np99 {r['p99_ms']:.1f} ms", (i, value / 2), ha="center", va="center", fontsize="small",
                    color="white")
    ax.set_xlabel("worker processes")
    ax.set_ylabel("requests/s")
    ax.set_ylim(0, max(rps + ([one * workers[-1]] if one else [])) * 1.25)
    ax.legend(fontsize="small", loc="upper left")
    ax.set_title(f"Scaling, {rows[0][1]['scenario']} at {rows[0][1]['connections']} connections\n{_subtitle(data)}",
                 fontsize="medium")
    fig.tight_layout()
    return fig


def heavy_curves(data: dict) -> Figure | None:
    """A heavy-models run (loadtest/heavy/bench.py): per model and input, rows/s against the batch size, and
    the measured latency of a call against what the batcher's cost model predicts for it."""
    curves = [(tag, curve) for tag, r in data.get("models", {}).items() for curve in r.get("curves", [])]
    if not curves:
        return None
    fig, axes = plt.subplots(2, len(curves), figsize=(max(6.0, 3.6 * len(curves)), 7), squeeze=False, sharex="col")
    for col, (tag, curve) in enumerate(curves):
        points = sorted(curve["points"], key=lambda p: p["batch"])
        batches = [p["batch"] for p in points]
        top, bottom = axes[0][col], axes[1][col]
        top.plot(batches, [p["rows_per_s"] for p in points], marker="o", color="tab:blue", label="rows/s")
        top.set_ylim(bottom=0)
        top.set_title(f"{tag.split(':')[0]}\n{curve['input']}", fontsize="small")
        bottom.plot(batches, [p["p50_ms"] for p in points], marker="o", color="tab:blue", label="measured p50")
        bottom.plot(batches, [p["predicted_ms"] for p in points], marker="x", linestyle="--", color="tab:orange",
                    label="cost model")
        _plain_log(bottom)
        bottom.set_xlabel("batch size")
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.set_xticks(batches, [str(b) for b in batches])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("rows/s (one thread)")
    axes[1][0].set_ylabel("latency of a call (ms)")
    fig.legend(*axes[1][0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize="small")
    fig.suptitle(f"Heavy models: the runner's own batch curve, no HTTP\n{data.get('date', 'date not recorded')}, "
                 f"{data.get('machine', 'machine not recorded')}", fontsize="medium")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


CHARTS = {"closed-loop": closed_loop, "open-loop": open_loop, "scaling": scaling, "batch-curves": heavy_curves}


def figures(data: dict) -> dict[str, Figure]:
    """Every chart the data has, by name."""
    return {name: fig for name, draw in CHARTS.items() if (fig := draw(data)) is not None}


def series(fig: Figure) -> list[str]:
    """What a chart draws: the label of each line and bar group, in drawing order."""
    labels = []
    for ax in fig.axes:
        for artist in [*ax.lines, *ax.containers]:
            label = artist.get_label()
            if label and not label.startswith("_") and label not in labels:
                labels.append(label)
    return labels


def write(result_json: Path) -> list[Path]:
    """The charts of one benchmark result, as PNGs beside it (bench-<time>.json -> bench-<time>-<chart>.png)."""
    data = json.loads(result_json.read_text())
    written = []
    for name, fig in figures(data).items():
        path = result_json.with_name(f"{result_json.stem}-{name}.png")
        fig.savefig(path, dpi=100, metadata={"Title": f"rtserve benchmark, {name}", "Description": json.dumps(series(fig))})
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("result", type=Path, help="a JSON written by loadtest/bench.py or loadtest/heavy/bench.py")
    args = parser.parse_args(argv)
    try:
        paths = write(args.result)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        parser.error(f"{args.result}: not a benchmark result ({type(exc).__name__}: {exc})")
    print("\n".join(str(p) for p in paths) if paths else f"{args.result}: no results to draw")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
