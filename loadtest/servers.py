"""Start and stop the benchmark's servers, each with one worker on a free port."""

from __future__ import annotations

import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def use_project_store() -> None:
    """The model store `make setup` builds (the Makefile's BENTOML_HOME), unless one is set already."""
    os.environ.setdefault("BENTOML_HOME", str(ROOT / ".bentoml"))


def _ephemeral_low() -> int:
    """The first port the kernel hands to outgoing connections (Linux's default range starts at 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_given: set[int] = set()
"""Ports this process has handed out: servers started side by side each get their own."""


def free_port() -> int:
    """A port nothing listens on now; shared by the benchmark and the tests.

    Chosen below the kernel's ephemeral range: a port from that range can be taken by any client
    connection (Redis, httpx) between this check and the server's bind, which made starts fail with
    "Address already in use" under load. Never the same port twice in one process."""
    low = _ephemeral_low()
    for _ in range(1000):
        port = random.randrange(10_000, low)
        if port in _given:  # handed out already: its server may not have bound it yet
            continue
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
            _given.add(port)
            return port
    raise RuntimeError(f"no free port between 10000 and {low}")


@dataclass
class Server:
    """A server process under test on a free port: how to start it and which path says it is ready.

    Shared by the tests and the benchmark: started in a session of its own (so `stop` ends its
    workers too), polled until ready, stopped by its process group."""

    name: str
    argv: list[str]
    """The command; `{port}` is replaced by the server's port."""
    ready_path: str
    env: dict[str, str] = field(default_factory=dict)
    """Added to this process's environment."""
    log_path: Path | None = None
    port: int = field(default_factory=lambda: free_port())
    proc: subprocess.Popen | None = None
    scheme: str = "http"
    verify: ssl.SSLContext | bool = True
    """How the readiness poll checks the certificate of an https server."""

    def __post_init__(self) -> None:
        # rtserve's metrics and gRPC ports (default 3002 and 3001) on free ports too, so servers never take each
        # other's, nor those of a `make serve` on the same machine (a gRPC port held by another service stops the start).
        self.env = {"RTSERVE_METRICS_PORT": str(free_port()), "RTSERVE_GRPC_PORT": str(free_port()), **self.env}

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        """rtserve's Prometheus metrics, on the metrics port."""
        return f"http://127.0.0.1:{self.env['RTSERVE_METRICS_PORT']}/metrics"

    def start(self, timeout: float = 180.0, wait_ready: bool = True) -> Self:
        argv = [a.replace("{port}", str(self.port)) for a in self.argv]
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if wait_ready:
            try:
                self.wait_until(lambda r: r.status_code == 200, self.ready_path, timeout)
            except BaseException:
                self.stop()  # a server that never got ready is not left running
                raise
        return self

    def wait_until(
        self, check: Callable[[httpx.Response], bool], path: str, timeout: float, headers: dict[str, str] | None = None
    ) -> None:
        """Poll `path` until `check` holds; fails at once if the server exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log: {self.log_path}")
            try:
                if check(httpx.get(self.url + path, timeout=2.0, headers=headers, verify=self.verify)):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.url}{path} not as expected after {timeout} s; log: {self.log_path}")

    def rss_bytes(self) -> int:
        """Resident memory of the whole process tree (server, its workers)."""
        root = psutil.Process(self.proc.pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])

    def worker(self) -> psutil.Process:
        """The process that serves: the largest in the tree by resident memory (it holds the models)."""
        root = psutil.Process(self.proc.pid)
        return max([root, *root.children(recursive=True)], key=lambda p: p.memory_info().rss)

    def worker_rss_bytes(self) -> int:
        return self.worker().memory_info().rss

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def bentoml_server(name: str, service: str, env: dict[str, str] | None = None, ready: str = "/readyz") -> Server:
    argv = [str(BIN / "bentoml"), "serve", service, "--host", "127.0.0.1", "--port", "{port}"]
    return Server(name, argv, ready, env or {})


def uvicorn_server(name: str, app: str) -> Server:
    argv = [str(BIN / "uvicorn"), app, "--host", "127.0.0.1", "--port", "{port}", "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", "--log-level", "warning", "--workers", "1"]
    return Server(name, argv, "/")
