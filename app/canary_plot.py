"""`rtserve canary status MODEL --plot FILE`: a canary's steps over time as a PNG, for a rollout review or an incident note.

Drawn from the status document alone: each step's verdict (advance, promote, rollback) keeps the numbers it
was judged on, so the history is the decisions. Three panels share the time since the canary started:
the canary's traffic share; both arms' uncached p95 (what is judged) with the limit a canary may not pass,
and the p95 over every request beside it (what clients saw, diluted by cache hits); both arms' error rate
with its bound. matplotlib is imported only here, so the CLI starts without it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

JUDGED = ("advance", "promote", "rollback")
"""Decisions that carry the numbers of a judged step (start and abort carry none)."""
ACTION_COLOURS = {"start": "tab:blue", "advance": "tab:green", "promote": "tab:green", "rollback": "tab:red", "abort": "grey"}


def weights_over_time(doc: dict[str, Any], now: float) -> tuple[list[float], list[float]]:
    """The canary's traffic share after each decision, as a step function from the start to `now` (or the end)."""
    steps = doc["steps"]
    start = doc["started_at"]
    xs, ys = [0.0], [float(steps[0])]
    for d in doc["decisions"]:
        action = d["action"]
        if action == "advance":
            weight = float(steps[min(d["step"] + 1, len(steps) - 1)])
        elif action == "promote":
            weight = 100.0
        elif action in ("rollback", "abort"):
            weight = 0.0
        else:
            continue
        xs.append(d["at"] - start)
        ys.append(weight)
    end = now if doc["status"] == "running" else (doc["decisions"][-1]["at"] if doc["decisions"] else start)
    xs.append(max(end - start, xs[-1]))
    ys.append(ys[-1])
    return xs, ys


def figure(model: str, doc: dict[str, Any], now: float | None = None):  # -> matplotlib.figure.Figure
    """The three panels for one canary status document (GET /admin/models/MODEL/canary)."""
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window
    import matplotlib.pyplot as plt

    now = time.time() if now is None else now
    start = doc["started_at"]
    t = doc.get("thresholds", {})
    judged = [d for d in doc["decisions"] if d["action"] in JUDGED and d.get("numbers")]
    at = [d["at"] - start for d in judged]

    def series(key: str, scale: float = 1.0) -> tuple[list[float], list[float]]:
        points = [(x, d["numbers"][key] * scale) for x, d in zip(at, judged, strict=True) if key in d["numbers"]]
        return [p[0] for p in points], [p[1] for p in points]

    def plot(ax, xs: list[float], ys: list[float], **style: Any) -> None:
        """A series with points only: an empty one in the legend would claim a number that was never measured."""
        if xs:
            ax.plot(xs, ys, **style)

    fig, (weight_ax, p95_ax, err_ax) = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    weight_ax.plot(*weights_over_time(doc, now), drawstyle="steps-post", color="tab:orange", label=f"{doc['version']} traffic %")
    weight_ax.set_ylabel("canary traffic (%)")
    weight_ax.set_ylim(-5, 105)

    plot(p95_ax, *series("canary_p95_ms"), marker="o", color="tab:orange", label=f"canary {doc['version']} uncached p95")
    plot(p95_ax, *series("stable_p95_ms"), marker="o", color="tab:blue", label=f"stable {doc['stable']} uncached p95")
    plot(p95_ax, *series("canary_p95_all_ms"), marker=".", linestyle=":", color="tab:orange", alpha=0.6,
                label="canary p95, every request")
    plot(p95_ax, *series("stable_p95_all_ms"), marker=".", linestyle=":", color="tab:blue", alpha=0.6,
                label="stable p95, every request")
    if "max_p95_ratio" in t and "p95_slack_ms" in t:
        xs, stable = series("stable_p95_ms")
        plot(p95_ax, xs, [s * t["max_p95_ratio"] + t["p95_slack_ms"] for s in stable], drawstyle="steps-mid", linestyle="--",
                    color="tab:red", label=f"limit {t['max_p95_ratio']:g} x stable + {t['p95_slack_ms']:g} ms")
    p95_ax.set_ylabel("p95 (ms)")

    plot(err_ax, *series("canary_error_rate", 100), marker="o", color="tab:orange", label="canary error rate")
    plot(err_ax, *series("stable_error_rate", 100), marker="o", color="tab:blue", label="stable error rate")
    if t.get("max_error_rate_increase") is not None:
        xs, stable = series("stable_error_rate", 100)
        plot(err_ax, xs, [s + 100 * t["max_error_rate_increase"] for s in stable], drawstyle="steps-mid", linestyle="--",
                    color="tab:red", label=f"limit stable + {100 * t['max_error_rate_increase']:g} %")
    err_ax.set_ylabel("server faults (%)")
    err_ax.set_xlabel("seconds since the canary started")

    for d in doc["decisions"]:
        for ax in (weight_ax, p95_ax, err_ax):
            ax.axvline(d["at"] - start, color=ACTION_COLOURS.get(d["action"], "grey"), alpha=0.3, linewidth=1)
        weight_ax.annotate(d["action"], (d["at"] - start, 102), fontsize="x-small", rotation=90, va="top", ha="right")
    for ax in (weight_ax, p95_ax, err_ax):
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="x-small", loc="best")
        else:
            ax.text(0.5, 0.5, "no step judged yet", transform=ax.transAxes, ha="center", va="center", color="grey")
    for ax in (p95_ax, err_ax):
        ax.set_ylim(bottom=0)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(start))
    note = "" if judged else " (no step judged yet)"
    fig.suptitle(f"canary {model}:{doc['version']} vs {doc['stable']}: "
                 f"{doc['status']}{note}\nstarted {started}", fontsize="medium")
    fig.tight_layout()
    return fig


def labels(fig) -> list[str]:  # fig: matplotlib.figure.Figure
    """The series a figure draws, by label, in drawing order."""
    return [line.get_label() for ax in fig.axes for line in ax.lines if not line.get_label().startswith("_")]


def write(model: str, doc: dict[str, Any], path: Path, now: float | None = None) -> list[str]:
    """The chart as a PNG at `path`; its series' labels are returned and kept in the file's Description."""
    import matplotlib.pyplot as plt

    fig = figure(model, doc, now)
    drawn = labels(fig)
    try:
        fig.savefig(path, dpi=100, metadata={"Title": f"canary {model}:{doc['version']} vs {doc['stable']}",
                                             "Description": json.dumps(drawn)})
    finally:
        plt.close(fig)
    return drawn
