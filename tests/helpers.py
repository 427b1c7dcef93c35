"""Real server processes for tests: `bentoml serve` and throwaway Redis servers, polled until ready, stopped by PID."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis as redis_lib

from gateway.auth import AuthSettings
from gateway.tokens import mint
from loadtest.servers import Server, free_port

ROOT = Path(__file__).resolve().parent.parent
BENTOML = str(Path(sys.executable).parent / "bentoml")


class ServerProcess(Server):
    """`bentoml serve` of this project on a free port, with extra environment; auth off unless the env turns it on."""

    def __init__(self, env: dict[str, str] | None = None, log_path: Path | None = None, own_store: bool = False) -> None:
        # Each server gets a home of its own around the shared model store: `bentoml serve` empties
        # $BENTOML_HOME/prometheus_multiproc_dir when it starts, which would wipe another server's metrics.
        # `own_store`: a copy of the store instead, as a replica on a machine of its own has.
        home = Path(tempfile.mkdtemp(prefix="rtserve-test-server-"))
        if own_store:
            shutil.copytree(Path(os.environ["BENTOML_HOME"]) / "models", home / "models")
        else:
            (home / "models").symlink_to(Path(os.environ["BENTOML_HOME"]) / "models")
        self.home = home
        env = {
            "BENTOML_HOME": str(home),
            "RTSERVE_ROUTING_STATE_FILE": str(home / "routes.json"),
            "RTSERVE_AUTH_ENABLED": "false",  # tests of the gateway turn it on with a key (gateway_env)
            "RTSERVE_GRPC_PORT": str(free_port()),  # a gRPC port of its own: a second service may not share one
            "RTSERVE_METRICS_CACHE_S": "0",  # a scrape right after a request sees it (the `server` fixture caches)
            # Most servers under test never deploy: no background imports in the probe's fork server (a deploy's
            # probe imports its framework then; tests/models/test_fork_server.py tests the warm-up itself).
            "RTSERVE_IMPORT_PROBE_WARM_FRAMEWORKS": "[]",
            **(env or {}),
        }
        argv = [BENTOML, "serve", "--host", "127.0.0.1", "--port", "{port}"]
        super().__init__("rtserve", argv, "/v2/health/ready", env, log_path)


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
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"], check=False, capture_output=True, text=True).stdout.strip() != "PONG":
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

    @property
    def metrics_url(self) -> str:
        return self.server.metrics_url

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
        "RTSERVE_RATELIMIT_TIERS": json.dumps({"tiny": {"rate": 0.5, "burst": 5}, "gold": {"rate": 100000, "burst": 100000}}),
        "RTSERVE_RATELIMIT_TENANTS": json.dumps({"tiny-tenant": "tiny", "gold-tenant": "gold"}),
        "RTSERVE_ACCESS_TIERS": json.dumps({"gold": {"top_priority": 1}}),
        "RTSERVE_RATELIMIT_KEY_PREFIX": f"{prefix}rl:",
        "RTSERVE_RATELIMIT_REDIS_TIMEOUT_MS": "500",
        "RTSERVE_CACHE_KEY_PREFIX": f"{prefix}cache:",
        "RTSERVE_CACHE_REDIS_MIN_COST_MS": "0",  # the demo models are cheaper than a round trip; share them anyway
        "RTSERVE_ROUTING_REDIS_PREFIX": f"{prefix}routes:",
        "RTSERVE_JOBS_REDIS_PREFIX": f"{prefix}jobs:",
    }


def new_secret(folder: Path) -> Path:
    """A fresh HS256 key in `folder`, for a server and the tokens the test mints for it."""
    path = folder / "jwt-secret"
    path.write_text(secrets.token_hex(32))
    return path


def new_prefix(label: str) -> str:
    """Redis key prefix of one server or cluster: its routes, cache and limits touch nobody else's."""
    return f"{label}:{uuid.uuid4().hex}:"


def forget_prefix(prefix: str, redis_url: str = REDIS_URL) -> None:
    client = redis_lib.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@contextlib.contextmanager
def running_gateway(tmp: Path, env: dict[str, str] | None = None, workers: int = 2,
                    label: str = "rtserve-test") -> Iterator[Gateway]:
    """A production-shaped server of the caller's own (auth, limits, cache and routes on the shared Redis
    under a fresh prefix; `env` on top), ready with its admin API answering in every worker; its Redis keys
    are removed afterwards. Logs in `tmp`/serve.log."""
    secret = new_secret(tmp)
    prefix = new_prefix(label)
    server = ServerProcess(env={**gateway_env(secret, prefix, workers=workers), **(env or {})}, log_path=tmp / "serve.log")
    try:
        gw = Gateway(server.start(), AuthSettings(hs256_secret_file=secret), prefix)
        admin = gw.headers(scopes="admin")
        # Ready means the models are warm; the admin API answers once the shared routes are reached too.
        for _ in range(3 * workers):  # each on a new connection, so every worker is asked
            server.wait_until(lambda r: r.status_code == 200, "/admin/models", 60, headers=admin)
        yield gw
    finally:
        server.stop()
        forget_prefix(prefix)


class FakeClock:
    """Seconds that pass only when a test says so: for the `clock` parameters of back-offs and leases."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
