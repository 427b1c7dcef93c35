"""A long job of the model layer in a throw-away subprocess: a clean environment, a time limit, a memory limit.

    answer, peak_mb = run_isolated("models.optimize.job", request, Limits(900, 4096, ...))

The probe load's isolation (models/probe.py: only `KEPT_ENV` inherited, this server's code first on PYTHONPATH,
resident memory watched with psutil since an address-space limit breaks torch and onnxruntime), for jobs that
run for minutes and import what they need themselves, so a fork server's preloaded frameworks do not pay.
The child is `python -m MODULE REQUEST.json RESULT.json`, its `main` built on `child_main`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from core.errors import ModelRefused, ServingError
from models.fork_server import kill_group
from models.probe import family_rss_kb, probe_env, refusal

POLL_S = 0.05


@dataclass(frozen=True)
class Limits:
    """How long and how much memory the child may take, and how its refusal is worded."""

    timeout_s: float
    memory_mb: int
    what: str
    """What the child does, as its errors name it ("the optimization")."""
    outcome: str
    """What its failure means ("nothing was stored")."""
    timeout_setting: str
    memory_setting: str
    error: type[ModelRefused]
    """Raised for a crash, a timeout or too much memory."""


def run_isolated(module: str, request: dict[str, Any], limits: Limits) -> tuple[dict[str, Any], float]:
    """The child's answer and its peak resident memory in MB. Its own refusal (an `error` in the answer) is raised
    as the ModelRefused subclass its code names; a crash, a timeout or too much memory is `limits.error`."""
    with tempfile.TemporaryDirectory(prefix="rtserve-job-") as tmp:
        req, result, log = Path(tmp) / "request.json", Path(tmp) / "result.json", Path(tmp) / "stderr.log"
        req.write_text(json.dumps(request))
        with log.open("wb") as err:
            proc = psutil.Popen([sys.executable, "-m", module, str(req), str(result)], env=probe_env(), cwd=tmp,
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True)
            peak = _watch(proc, limits)
        if result.exists():
            answer = json.loads(result.read_text())
            if "error" in answer:
                raise refusal(answer["error"])
            return answer, peak
        tail = log.read_text(errors="replace")[-800:].strip()
        how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        raise limits.error(f"{limits.what} crashed ({how}); {limits.outcome}" + (f": {tail}" if tail else ""))


def _watch(proc: psutil.Popen, limits: Limits) -> float:
    """Wait for the child; kill it and what it started at the time or memory limit. Its peak resident MB."""
    start, peak = time.monotonic(), 0.0
    while proc.poll() is None:
        rss_kb = family_rss_kb(proc.pid)
        if rss_kb is None:
            continue
        rss = rss_kb / 1024
        peak = max(peak, rss)
        if rss > limits.memory_mb:
            _kill(proc)
            raise limits.error(f"{limits.what} went over its memory limit of {limits.memory_mb} MB (at {rss:.0f} MB); "
                               f"{limits.outcome} ({limits.memory_setting} sets the limit)")
        if time.monotonic() - start > limits.timeout_s:
            _kill(proc)
            raise limits.error(f"{limits.what} did not finish within {limits.timeout_s:g} s; {limits.outcome} "
                               f"({limits.timeout_setting} sets the limit)")
        time.sleep(POLL_S)
    return peak


def _kill(proc: psutil.Popen) -> None:
    """The child's whole session and its descendants (a compiler it started too), then its exit reaped."""
    kill_group(proc.pid)
    proc.wait()


def child_main(argv: list[str], work: Callable[[dict[str, Any]], dict[str, Any]], failure: type[ModelRefused],
               failed: str) -> int:
    """The child's side: REQUEST.json in, `work`'s answer (or the refusal) to RESULT.json. Any error is a refusal
    of class `failure`, said in words after `failed` ("the optimization failed")."""
    request_path, result_path = map(Path, argv)
    try:
        answer = work(json.loads(request_path.read_text()))
    except ServingError as exc:
        answer = {"error": {"code": exc.code, "message": exc.message}}
    except Exception as exc:  # noqa: BLE001 - any failure of a conversion is a refusal, said in words
        answer = {"error": {"code": failure.code, "message": f"{failed}: {type(exc).__name__}: {str(exc)[:500]}"}}
    result_path.write_text(json.dumps(answer, default=str))
    return 0
