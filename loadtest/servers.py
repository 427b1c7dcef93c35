"""Start and stop the benchmark's servers, each with one worker on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A port nothing listens on now; shared by the benchmark and the tests."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A server under test: how to start it and which path says it is ready."""

    name: str
    argv: list[str]
    ready_path: str
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log_dir: Path, timeout: float = 180.0) -> None:
        self.port = free_port()
        argv = [a.replace("{port}", str(self.port)) for a in self.argv]
        log = open(log_dir / f"{self.name}.log", "wb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {log_dir / (self.name + '.log')}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.name} not ready after {timeout} s")

    def rss_bytes(self) -> int:
        """Resident memory of the whole process tree (server, its workers)."""
        root = psutil.Process(self.proc.pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])

    def worker_rss_bytes(self) -> int:
        """Resident memory of the largest process in the tree: the worker that holds the models."""
        root = psutil.Process(self.proc.pid)
        return max(p.memory_info().rss for p in [root, *root.children(recursive=True)])

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
