"""The probe's fork server: one process per replica with the frameworks imported, forking a child per probe.

A probe in a fresh interpreter spends seconds of CPU starting Python and importing its framework before it
opens the file (scikit-learn with skops: about 1 s of CPU; torch with torch.export's loader 1.6 s). The fork
server pays that once:
it is started with the probe's clean environment (`probe_env`: no secrets), imports the frameworks a probe
asks for, and forks a throw-away child per probe, which inherits the imported modules and nothing else.

Fork safety: a thread alive at fork time leaves its locks held in the child. The server only imports, never
runs a model, and starts with OMP_NUM_THREADS / OPENBLAS_NUM_THREADS at 1, so numpy, scikit-learn, skops,
XGBoost, LightGBM, onnx and torch start no thread at import (checked by the tests); onnxruntime starts one at
import, so it is left to the child (it imports in a few tens of milliseconds). Thread pools start in the child.

One probe, over the server's Unix socket (a 0700 folder of this user's, named for the replica and the
environment, so every worker of a replica shares one server and a changed environment gets a new one):

    worker -> server      one JSON line: the probe's request and result files, its log, the modules to import
                          (and, at the service's start, modules to import later, while no probe waits)
    server                imports the modules (kept for later probes), forks a supervisor
    supervisor            forks the child and waits for it
    child -> worker       "PID BASELINE_KB": its pid and resident memory right after the fork (the pages it
                          shares with the server count in its RSS from the start; growth over this
                          baseline is what the probe's memory limit watches), then runs the probe
    supervisor -> worker  "EXIT CODE" (negative: the signal that ended the child)

The worker watches the child and kills it at the time or memory limit (models/probe.py). A child that
crashes takes only itself down; a server that dies (killed, out of memory) is started again by the next
probe. The server ends when the process that started it does (its stdin closes).

    python -m models.fork_server SOCKET      (started by `connect`, never by hand)
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""Set before the server imports anything: BLAS and OpenMP would otherwise start their pools at import."""
START_TIMEOUT_S = 60.0
"""Longest the server may take to start listening (an interpreter, no framework yet)."""
_started: list[subprocess.Popen] = []
"""The servers this process started: their stdin pipes stay open as long as this process lives."""


def connect(env: Mapping[str, str]) -> socket.socket:
    """A connection to this replica's fork server for `env`; the server is started first if none answers."""
    place = folder(env)
    path = str(place / "server.sock")
    with (place / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the replica's workers start one server between them
        try:
            return _dial(path)
        except OSError:
            pass
        Path(path).unlink(missing_ok=True)
        _start(path, place, env)
        return _dial(path)


def _dial(path: str) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        raise
    return conn


def folder(env: Mapping[str, str]) -> Path:
    """This user's folder for the replica's server: the workers' common parent and the environment name it."""
    key = hashlib.sha256(json.dumps([os.getppid(), sys.executable, sorted(env.items())]).encode()).hexdigest()[:16]
    place = Path(tempfile.gettempdir()) / f"rtserve-probe-{os.getuid()}-{key}"
    place.mkdir(mode=0o700, exist_ok=True)
    info = place.lstat()
    if info.st_uid != os.getuid() or not place.is_dir() or place.is_symlink() or info.st_mode & 0o077:
        raise PermissionError(f"{place} is not a private folder of this user; the probe will not use it")
    return place


def _start(path: str, folder: Path, env: Mapping[str, str]) -> None:
    with (folder / "server.log").open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "models.fork_server", path], env={**env, **THREAD_ENV},
                                cwd=folder, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT_S)
    if not ready or proc.stdout.readline() != b"ready\n":
        proc.kill()
        proc.wait()
        tail = (folder / "server.log").read_text(errors="replace")[-500:].strip()
        raise OSError(f"the probe's fork server did not start: {tail or 'no output'}")
    _started.append(proc)


def end_hung_server(conn: socket.socket) -> None:
    """Kill the server behind `conn`, which took a probe and never forked it (an import that never returns):
    the next probe then starts a fresh server instead of waiting on this one too. The server is the socket's
    peer (SO_PEERCRED), killed only if it is this user's fork server."""
    pid, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    if pid <= 0 or uid != os.getuid():
        return
    try:
        if "models.fork_server" not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            return
        os.kill(pid, signal.SIGKILL)
    except (FileNotFoundError, ProcessLookupError):
        pass  # ended meanwhile


def readline(conn: socket.socket, timeout_s: float | None) -> str:
    """One line from `conn` ('' when it closed first); TimeoutError past `timeout_s`."""
    conn.settimeout(timeout_s)
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            return ""
        data += chunk
    return data.decode()


# The server's side.


def serve(path: str) -> None:
    """Accept probes until the starting process ends. Each one is served by a forked supervisor."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    later: list[str] = []  # modules to import while no probe waits, one between two looks at the socket
    while True:
        readable, _, _ = select.select([listener, sys.stdin], [], [], 0 if later else 1.0)
        _reap()
        if sys.stdin in readable and not os.read(sys.stdin.fileno(), 1):
            return
        if not readable and later:
            preload([later.pop(0)])
        if listener in readable:
            conn, _ = listener.accept()
            try:
                request = json.loads(readline(conn, 10.0))
                preload(request["modules"])
                later += [m for m in request.get("later", ()) if m not in later]
                if request.get("warm_only"):
                    conn.sendall(b"WARM\n")
                elif os.fork() == 0:
                    listener.close()
                    _supervise(conn, request)
            except (OSError, ValueError, KeyError) as exc:
                print(f"a request failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            conn.close()


def _reap() -> None:
    """Collect ended supervisors (waited for, their CPU time and their children's counts in this process's)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def preload(modules: Sequence[str]) -> None:
    """Import what the probe will need, in the server, once. A module that fails to import is left for the
    child, which reports the failure as the probe's error."""
    for name in modules:
        if name not in sys.modules:
            try:
                importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001 - e.g. a framework that is not installed
                print(f"preload {name}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


def threads() -> int:
    """Threads of this process (the OS's count: native pools included, which `threading` does not see)."""
    return len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1


def _supervise(conn: socket.socket, request: dict[str, Any]) -> None:
    """In the supervisor: fork the child, report how it ended. If the worker goes away first (its connection
    closes: it died, or gave up at a limit), the child is killed: no probe runs unwatched. Never returns."""
    code = 1
    try:
        pid = os.fork()
        if pid == 0:
            _child(conn, request)
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                conn.sendall(f"EXIT {os.waitstatus_to_exitcode(status)}\n".encode())
                code = 0
                return
            if select.select([conn], [], [], 0.05)[0]:  # the worker sends nothing more: this is its end
                kill_group(pid)
    finally:
        os._exit(code)


def kill_group(pid: int) -> None:
    """A probe's child and what it started: its process group (once it has made one) and its descendants, which
    a model's code may have moved to a session of their own; gone already is fine."""
    try:
        family = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for process in family:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def _child(conn: socket.socket, request: dict[str, Any]) -> None:
    """In the child: output to the probe's log, its pid and baseline to the worker, then the probe. Never returns."""
    code = 1
    try:
        os.setpgid(0, 0)  # its own process group, so a kill reaches what the model's code may start
        for source, targets in ((os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), (1, 2)),
                                (os.open(os.devnull, os.O_RDONLY), (0,))):
            for target in targets:
                os.dup2(source, target)
            os.close(source)  # only 0, 1 and 2 stay: the model's code finds no other descriptor of ours
        os.chdir(request["cwd"])
        from models.probe_child import main, rss_kb

        conn.sendall(f"{os.getpid()} {rss_kb()}\n".encode())
        conn.close()
        code = main([request["request"], request["result"]])
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    serve(sys.argv[1])
