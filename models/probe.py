"""The probe load: a new model file is first opened in a throw-away process, never in a serving worker.

The process (models/probe_child.py, forked by the replica's fork server, models/fork_server.py) runs the
format's checks, loads the file, reads its signature, runs it once on a sample input and checks the outputs
against that signature; it reports the version's metadata and the memory the model took. It runs with a
clean environment (no `RTSERVE_*`, `AWS_*`, `REDIS_URL` or other secrets: only the variables in
`KEPT_ENV`), a time limit, and a memory limit enforced by watching its resident memory (psutil), since an
address-space limit (RLIMIT_AS) breaks torch and onnxruntime, which reserve far more address space than they
use. A file that crashes the process, hangs or goes over the limit is refused with a `ProbeFailed` error.

This is resource isolation, not a sandbox: the probe runs as the server's user and can read
what the server can read. That is why formats that can run code stay opt-in.
"""

from __future__ import annotations

import json
import os
import select
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import psutil

from core.errors import ModelRefused, ProbeFailed, ServingError, _subclasses
from models import fork_server, formats
from models.probe_child import FRAMEWORK_MODULES

KEPT_ENV = ("PATH", "PYTHONPATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "VIRTUAL_ENV",
            "OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""The only variables the probe inherits; everything else (credentials, tokens, URLs) stays behind."""
TORCH_EXPORT_MODULES = ("torch.export", "torch._export.serde.serialize", "torch._dynamo",
                        "torch._functorch.aot_autograd", "torch.fx.experimental.symbolic_shapes")
"""torch.export's loader imports about 1,300 modules on first use (dynamo, sympy, networkx): 1.7 s of CPU that
only a `.pt2` file needs, so a TorchScript probe does not wait for them."""
PRELOAD = {"onnx": ("onnx",), "xgboost": ("xgboost",), "lightgbm": ("lightgbm",),
           "sklearn": ("sklearn", "models.formats.skops_io", "joblib"),
           "pytorch": ("torch", *TORCH_EXPORT_MODULES)}
"""What the fork server imports for each framework and keeps for the next probe (all of it when the operator
preloads the framework), so no probe child pays the import. onnxruntime is left to the child: it starts a
thread at import, which must not exist at fork time, and imports in a few tens of milliseconds."""
COMMON_MODULES = ("numpy", "models.probe_child", "models.formats", "models.spec", "models.declared", "models.outputs")
ROOT = Path(__file__).resolve().parents[1]
POLL_S = 0.02


def probe_env() -> dict[str, str]:
    """The probe's environment: KEPT_ENV only, this server's code first on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k in KEPT_ENV}
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def preload_modules(fmt: formats.ModelFormat) -> tuple[str, ...]:
    """What a probe of this format needs imported: its framework's modules (torch.export's for `.pt2` only)."""
    modules = PRELOAD.get(fmt.framework, ())
    if fmt.name != "torch_export":
        modules = tuple(m for m in modules if m not in TORCH_EXPORT_MODULES)
    return COMMON_MODULES + modules


def start_fork_server(frameworks: Sequence[str] = tuple(PRELOAD), later: Sequence[str] = ()) -> None:
    """Start this replica's fork server now, with `frameworks` imported, so the first deploy does not wait for it;
    the `later` frameworks it imports afterwards, in the background, while no probe waits."""
    conn = fork_server.connect(probe_env())
    with conn:
        modules = [*COMMON_MODULES, *(m for f in frameworks for m in PRELOAD[f])]
        background = [m for f in later for m in PRELOAD[f] if m not in modules]
        conn.sendall((json.dumps({"modules": modules, "later": background, "warm_only": True}) + "\n").encode())
        try:  # each framework's import bounded as the server's start is; past that the server is hung
            fork_server.readline(conn, fork_server.START_TIMEOUT_S * (1 + len(frameworks)))
        except TimeoutError:
            fork_server.end_hung_server(conn)
            raise TimeoutError("the probe's fork server did not import the frameworks in time; it was stopped, "
                               "the next deploy starts another") from None


def import_frameworks(frameworks: Sequence[str]) -> None:
    """Import in this process what loading a model of each framework needs (a worker, ahead of its first load)."""
    fork_server.preload([m for f in frameworks for m in (*PRELOAD[f], FRAMEWORK_MODULES[f])])


def run_probe(request: dict[str, Any], timeout_s: float, memory_mb: int) -> dict[str, Any]:
    """The version's metadata from the probe, with `memory_mb`; ModelRefused or a subclass when it is refused."""
    fmt = formats.get(request["format"])
    with tempfile.TemporaryDirectory(prefix="rtserve-probe-") as tmp:
        req, result, log = Path(tmp) / "request.json", Path(tmp) / "result.json", Path(tmp) / "stderr.log"
        req.write_text(json.dumps(request))
        try:
            conn = fork_server.connect(probe_env())
        except OSError as exc:
            raise ProbeFailed(f"the probe load could not start ({exc}); the file is not loaded") from None
        with conn:
            conn.sendall((json.dumps({"request": str(req), "result": str(result), "log": str(log), "cwd": tmp,
                                      "modules": preload_modules(fmt)}) + "\n").encode())
            peak, code = _watch(conn, timeout_s, memory_mb)
        if result.exists():
            answer = json.loads(result.read_text())
            if "error" in answer:
                raise refusal(answer["error"])
            return {**answer["metadata"], **answer["checked"], "memory_mb": answer["memory_mb"],
                    "probe_peak_mb": round(peak, 1)}
        tail = log.read_text(errors="replace")[-800:].strip() if log.exists() else ""
        how = "ended without an answer" if code is None else \
            f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        raise ProbeFailed(f"the probe load crashed ({how}); the file is refused" + (f": {tail}" if tail else ""))


def _watch(conn: socket.socket, timeout_s: float, memory_mb: int) -> tuple[float, int | None]:
    """Wait for the probe's child; kill it at the time or memory limit. Its peak growth in MB over its baseline
    (its resident memory right after the fork), and its exit code (None if its supervisor died too).
    The time limit counts from the fork: the server's first import of a framework is not the model's time."""
    try:
        first = fork_server.readline(conn, fork_server.START_TIMEOUT_S + timeout_s)
    except TimeoutError:
        fork_server.end_hung_server(conn)
        _too_slow(None, timeout_s)
    if not first:
        return 0.0, None
    pid, baseline_kb = map(int, first.split())
    peak, started = 0.0, time.monotonic()
    while True:
        if select.select([conn], [], [], POLL_S)[0]:
            line = fork_server.readline(conn, 1.0)
            if line.startswith("EXIT "):
                return peak, int(line.split()[1])
            fork_server.kill_group(pid)  # its supervisor died: the child must not run on unwatched
            return peak, None
        rss_kb = family_rss_kb(pid)
        if rss_kb is None:  # ended: its supervisor's EXIT line follows
            continue
        grown = (rss_kb - baseline_kb) / 1024
        peak = max(peak, grown)
        if grown > memory_mb:
            fork_server.kill_group(pid)
            raise ProbeFailed(f"the probe load went over its memory limit of {memory_mb} MB (at {grown:.0f} MB); "
                              "the file is refused (RTSERVE_IMPORT_PROBE_MEMORY_MB sets the limit)")
        if time.monotonic() - started > timeout_s:
            _too_slow(pid, timeout_s)


def family_rss_kb(pid: int) -> float | None:
    """Resident memory of the child and what it started, in KB; None once it has ended (a fast probe can end
    before the worker first looks)."""
    try:
        child = psutil.Process(pid)
        return sum(p.memory_info().rss for p in (child, *child.children(recursive=True))) / 1024
    except psutil.NoSuchProcess:
        return None


def _too_slow(pid: int | None, timeout_s: float) -> NoReturn:
    if pid is not None:
        fork_server.kill_group(pid)
    raise ProbeFailed(f"the probe load did not finish within {timeout_s:g} s; the file is refused "
                      "(RTSERVE_IMPORT_PROBE_TIMEOUT_S sets the limit)")


def refusal(data: dict[str, str]) -> ServingError:
    """The refusal a child process answered with (`{"code", "message"}`), as its own ModelRefused subclass."""
    classes = {cls.code: cls for cls in _subclasses(ModelRefused)}
    return classes.get(data["code"], ModelRefused)(data["message"])
