"""The benchmark's charts, drawn from real results: JSONs written by `python -m loadtest.bench` runs (data/).

bench-short.json: `--targets ours-bare --scenarios sklearn-miss --connections 8 --duration 3` (closed loop only).
bench-make.json: `make bench BENCH_ARGS="--targets ours-prod,raw --scenarios sklearn-miss,sklearn-hit
--connections 16,64 --duration 3"` (closed loop, open loop and scaling).
heavy-tiny.json: `python -m loadtest.heavy --tiny --seconds 0.3 --batches 1,4,16 --thread-batch 4` (the stand-ins).
Checked: the PNGs exist, are images, and draw the series the data has (their labels and values), not pixels.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from loadtest import charts

DATA = Path(__file__).parent / "data"


def run_charts(path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}  # no display, as on a server
    return subprocess.run([sys.executable, "-m", "loadtest.charts", str(path)], capture_output=True, text=True, timeout=120,
                          env=env, check=False, cwd=Path(__file__).parents[2])


def png_series(path: Path) -> list[str]:
    with Image.open(path) as img:
        img.verify()  # the file's structure and checksums
    with Image.open(path) as img:
        img.load()  # its pixels decode
        assert img.format == "PNG" and img.width >= 400 and img.height >= 300
        return json.loads(img.text["Description"])


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> tuple[dict, dict[str, Path]]:
    result = tmp_path_factory.mktemp("charts") / "bench-20261207-201500.json"
    shutil.copy(DATA / "bench-make.json", result)
    done = run_charts(result)
    assert done.returncode == 0, done.stderr
    written = {p.name.removeprefix(result.stem + "-").removesuffix(".png"): p for p in result.parent.glob("*.png")}
    assert sorted(done.stdout.split()) == sorted(str(p) for p in written.values())
    return json.loads(result.read_text()), written


def test_a_full_run_draws_every_chart_beside_its_json(full):
    _, written = full
    assert set(written) == {"closed-loop", "open-loop", "scaling"}


def test_closed_loop_draws_every_server_and_measure(full):
    data, written = full
    servers = sorted({r["target"] for r in data["results"] if not r["target"].startswith(charts.SCALING_PREFIX)})
    assert servers == ["ours-prod", "raw"]
    assert sorted(png_series(written["closed-loop"])) == servers
    fig = charts.closed_loop(data)
    scenarios = list(dict.fromkeys(r["scenario"] for r in data["results"]))
    assert [ax.get_title() for ax in fig.axes[: len(scenarios)]] == scenarios  # the first row, one column per scenario
    for col, scenario in enumerate(scenarios):
        for row, key in enumerate(("rps", "p95_ms", "p99_ms")):
            ax = fig.axes[row * len(scenarios) + col]
            for line in ax.lines:
                rows = sorted((r["connections"], r[key]) for r in data["results"]
                              if r["target"] == line.get_label() and r["scenario"] == scenario)
                assert list(line.get_xdata()) == [c for c, _ in rows] and list(line.get_ydata()) == [v for _, v in rows]
            assert sorted(line.get_label() for line in ax.lines) == servers
    assert data["run"]["machine"] in fig.get_suptitle() and data["run"]["date"] in fig.get_suptitle()


def test_open_loop_draws_latency_against_offered_rate(full):
    data, written = full
    targets = list(dict.fromkeys(p["target"] for p in data["open_loop"]))
    expected = [f"{t} {q}" for t in targets for q in ("p99", "p50")] + [f"{charts.OPEN_LOOP_P99_BOUND_MS:g} ms"]
    assert png_series(written["open-loop"]) == expected
    fig = charts.open_loop(data)
    (ax,) = fig.axes
    for target in targets:
        (p99,) = [line for line in ax.lines if line.get_label() == f"{target} p99"]
        points = sorted((p["target_rps"], p["p99_ms"]) for p in data["open_loop"] if p["target"] == target)
        assert list(p99.get_xdata()) == [x for x, _ in points] and list(p99.get_ydata()) == [y for _, y in points]
    assert data["run"]["date"] in ax.get_title()


def test_scaling_draws_each_worker_count_beside_linear(full):
    data, written = full
    assert png_series(written["scaling"]) == ["linear from 1 worker", "measured"]
    fig = charts.scaling(data)
    (ax,) = fig.axes
    measured = {r["target"]: r["rps"] for r in data["results"] if r["target"].startswith(charts.SCALING_PREFIX)}
    assert [bar.get_height() for bar in ax.containers[0]] == [measured["ours-prod-1w"], measured["ours-prod-2w"]]
    (linear,) = ax.lines
    assert list(linear.get_ydata()) == [measured["ours-prod-1w"], 2 * measured["ours-prod-1w"]]


def test_a_closed_loop_only_run_draws_only_that(tmp_path, capsys):
    result = tmp_path / "bench-20261207-194947.json"
    shutil.copy(DATA / "bench-short.json", result)
    assert charts.main([str(result)]) == 0  # in this process: the full run above went through the command already
    assert capsys.readouterr().out.split() == [str(tmp_path / "bench-20261207-194947-closed-loop.png")]
    assert [p.name for p in tmp_path.glob("*.png")] == ["bench-20261207-194947-closed-loop.png"]
    assert png_series(tmp_path / "bench-20261207-194947-closed-loop.png") == ["ours-bare"]


def test_a_file_that_is_not_a_result_is_refused_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bench-x.json"
    for text in ('{"results": [{"target": "ours-bare"}]}', "not json"):
        bad.write_text(text)
        with pytest.raises(SystemExit) as exited:
            charts.main([str(bad)])
        assert exited.value.code == 2 and "not a benchmark result" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))


def test_a_heavy_run_draws_each_models_batch_curve_and_its_predicted_cost(tmp_path):
    result = tmp_path / "heavy-20261207-2331.json"
    shutil.copy(DATA / "heavy-tiny.json", result)
    done = run_charts(result)
    assert done.returncode == 0, done.stderr
    path = tmp_path / "heavy-20261207-2331-batch-curves.png"
    assert done.stdout.split() == [str(path)]
    assert png_series(path) == ["rows/s", "measured p50", "cost model"]
    data = json.loads(result.read_text())
    curves = [(tag, curve) for tag, r in data["models"].items() for curve in r["curves"]]
    fig = charts.heavy_curves(data)
    top, bottom = fig.axes[: len(curves)], fig.axes[len(curves):]
    for col, (tag, curve) in enumerate(curves):
        points = sorted(curve["points"], key=lambda p: p["batch"])
        assert top[col].get_title() == f"{tag.split(':')[0]}\n{curve['input']}"
        (rate,) = top[col].lines
        assert list(rate.get_xdata()) == [p["batch"] for p in points]
        assert list(rate.get_ydata()) == [p["rows_per_s"] for p in points]
        measured, predicted = bottom[col].lines
        assert list(measured.get_ydata()) == [p["p50_ms"] for p in points]
        assert list(predicted.get_ydata()) == [p["predicted_ms"] for p in points]
    assert data["machine"] in fig.get_suptitle() and data["date"] in fig.get_suptitle()
