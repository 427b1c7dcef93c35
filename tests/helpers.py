"""Real server processes for tests: `bentoml serve` and throwaway Redis servers, polled until ready, stopped by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from gateway.auth import AuthSettings
from loadtest.servers import free_port
from gateway.tokens import mint

ROOT = Path(__file__).resolve().parent.parent
BENTOML = str(Path(sys.executable).parent / "bentoml")


class ServerProcess:
    """`bentoml serve` of this project on a free port, with extra environment."""

    def __init__(self, env: dict[str, str] | None = None, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Each server gets a home of its own around the shared model store: `bentoml serve` empties
        # $BENTOML_HOME/prometheus_multiproc_dir when it starts, which would wipe another server's metrics.
        home = Path(tempfile.mkdtemp(prefix="rtserve-test-server-"))
        (home / "models").symlink_to(Path(os.environ["BENTOML_HOME"]) / "models")
        self.env = {
            **os.environ,
            "BENTOML_HOME": str(home),
            "RTSERVE_ROUTING_STATE_FILE": str(home / "routes.json"),
            "RTSERVE_AUTH_ENABLED": "false",  # tests of the gateway turn it on with a key (gateway_env)
            "RTSERVE_GRPC_PORT": str(free_port()),  # a gRPC port of its own: a second service may not share one
            **(env or {}),
        }
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0, wait_ready: bool = True) -> ServerProcess:
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [BENTOML, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait_ready:
            self.wait_until(lambda r: r.status_code == 200, "/v2/health/ready", timeout)
        return self

    def wait_until(self, check, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; log: {self.log_path}")
            try:
                if check(httpx.get(self.url + path, timeout=2.0)):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.url}{path} not as expected after {timeout} s; log: {self.log_path}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # the session we started: server and its workers
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class OwnRedis:
    """A throwaway redis-server on a free port that a test may stop, pause and restart (same port)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> OwnRedis:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True).stdout.strip() != "PONG":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a paused server cannot handle SIGTERM
            self.proc.terminate()
            self.proc.wait(10)

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)


REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass
class Gateway:
    server: ServerProcess
    auth: AuthSettings
    prefix: str

    @property
    def url(self) -> str:
        return self.server.url

    def token(self, scopes: str = "predict", tenant: str = "acme", sub: str = "alice", ttl: int = 600) -> str:
        return mint(self.auth, subject=sub, scopes=scopes, tenant=tenant, ttl_s=ttl)

    def headers(self, **kwargs) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(**kwargs)}"}


def gateway_env(secret_file, prefix: str, redis_url: str = REDIS_URL, workers: int = 2) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "RTSERVE_WORKERS": str(workers),
        "RTSERVE_AUTH_ENABLED": "true",
        "RTSERVE_AUTH_HS256_SECRET_FILE": str(secret_file),
        "RTSERVE_RATELIMIT_ENABLED": "true",
        "RTSERVE_RATELIMIT_RATE": "100000",
        "RTSERVE_RATELIMIT_BURST": "100000",
        "RTSERVE_RATELIMIT_TIERS": json.dumps({"tiny": {"rate": 0.5, "burst": 5}}),
        "RTSERVE_RATELIMIT_TENANTS": json.dumps({"tiny-tenant": "tiny"}),
        "RTSERVE_RATELIMIT_KEY_PREFIX": f"{prefix}rl:",
        "RTSERVE_RATELIMIT_REDIS_TIMEOUT_MS": "500",
        "RTSERVE_CACHE_KEY_PREFIX": f"{prefix}cache:",
        "RTSERVE_CACHE_REDIS_MIN_COST_MS": "0",  # the demo models are cheaper than a round trip; share them anyway
        "RTSERVE_ROUTING_REDIS_PREFIX": f"{prefix}routes:",
    }


class FakeClock:
    """Seconds that pass only when a test says so: for the `clock` parameters of back-offs and leases."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
