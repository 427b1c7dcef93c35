"""Several replicas on one machine behind nginx, sharing one Redis: what `make cluster` runs, and the
nginx part the cluster tests use.

Each replica is a `bentoml serve` of this project on a port of its own, with the same JWT key and
the same Redis prefixes, so routes, the prediction cache, rate limits and the canary lease are
shared. Each has a model store of its own (a copy of the project's), as replicas on machines of their
own do, and one model repository on a local SeaweedFS: a version deployed through one replica is
pushed there and pulled by the others. nginx spreads requests over them and retries a request that a
stopping or dead replica could not answer on another one (deploy/nginx/rtserve.conf.template).

    python -m deploy.cluster --replicas 2 --workers 2 --port 8080
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Self

import httpx

from deploy.objectstore import SeaweedFS
from gateway.auth import AuthSettings
from gateway.tokens import ensure_dev_secret, mint
from loadtest.servers import BIN, Server, free_port

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = Path(__file__).resolve().parent / "nginx" / "rtserve.conf.template"


class _Conf(Template):
    delimiter = "%"  # nginx's own variables start with $


def nginx_binary() -> str:
    """nginx from PATH, else Debian's /usr/sbin/nginx (not on every user's PATH)."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        raise RuntimeError("nginx is not installed (Debian package nginx; make system-deps installs it)")
    return found


def render(prefix: Path, port: int, upstream_ports: list[int], worker_processes: int = 1) -> str:
    """The nginx configuration for replicas on 127.0.0.1 at `upstream_ports`, listening on `port`."""
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=3 fail_timeout=2s;" for p in upstream_ports)
    return _Conf(TEMPLATE.read_text()).substitute(
        user="user root;" if os.geteuid() == 0 else "",  # workers keep root's rights to the temp folders; else no switch
        worker_processes=worker_processes,
        prefix=prefix,
        port=port,
        servers=servers,
    )


@dataclass
class Nginx:
    """nginx in the foreground, with its configuration, pid, logs and temp files in `prefix`."""

    prefix: Path
    upstream_ports: list[int]
    port: int = field(default_factory=free_port)
    worker_processes: int = 1
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"

    def start(self, timeout: float = 10.0) -> Self:
        self.prefix.mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(render(self.prefix, self.port, self.upstream_ports, self.worker_processes))
        argv = [nginx_binary(), "-c", str(conf), "-p", str(self.prefix), "-e", str(self.prefix / "error.log"),
                "-g", "daemon off;"]
        check = subprocess.run([*argv, "-t"], check=False, capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx configuration rejected: {check.stderr.strip()}")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}; log: {self.prefix / 'error.log'}")
            try:
                httpx.get(self.url + "/v2/health/live", timeout=2.0)
                return self
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nginx not answering on {self.url} after {timeout} s") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Graceful (SIGQUIT: finish the requests it is proxying), then SIGKILL after 10 s."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def attempts(self) -> list[tuple[int, list[str], list[str]]]:
        """Per logged request: (status to the client, replicas tried in order, their statuses)."""
        out = []
        for line in self.access_log.read_text().splitlines():
            upstream = line.split(" upstream=", 1)[1].split(" statuses=")[0]
            statuses = line.rsplit(" statuses=", 1)[1]
            out.append((int(line.split()[1]), upstream.split(", "), statuses.split(", ")))
        return out


def replica_env(secret_file: Path, redis_url: str, workers: int, home: Path) -> dict[str, str]:
    """One replica's environment: shared key and Redis; a BentoML home, model store and gRPC port of its own."""
    shutil.copytree(Path(os.environ.get("BENTOML_HOME", ROOT / ".bentoml")).resolve() / "models", home / "models")
    return {
        "BENTOML_HOME": str(home),  # `bentoml serve` empties $BENTOML_HOME/prometheus_multiproc_dir when it starts
        "REDIS_URL": redis_url,
        "RTSERVE_WORKERS": str(workers),
        "RTSERVE_AUTH_ENABLED": "true",
        "RTSERVE_AUTH_HS256_SECRET_FILE": str(secret_file.resolve()),
        "RTSERVE_RATELIMIT_ENABLED": "true",
        "RTSERVE_GRPC_PORT": str(free_port()),
    }


def start_all(replicas: list[Server], timeout: float = 300.0) -> None:
    """Start every replica at once and wait until each is ready (loading models is most of a start)."""
    for r in replicas:
        r.start(wait_ready=False)
    for r in replicas:
        r.wait_until(lambda resp: resp.status_code == 200, r.ready_path, timeout)


def replica(index: int, args: argparse.Namespace, homes: Path, repository: dict[str, str]) -> Server:
    home = homes / str(index)
    home.mkdir()
    argv = [str(BIN / "bentoml"), "serve", "--host", "127.0.0.1", "--port", "{port}"]
    env = {**replica_env(args.secret_file, args.redis_url, args.workers, home), **repository}
    return Server(f"replica-{index}", argv, "/v2/health/ready", env, log_path=args.run_dir / f"replica-{index}.log")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="worker processes per replica")
    parser.add_argument("--port", type=int, default=8080, help="nginx listens on 127.0.0.1:PORT")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    parser.add_argument("--secret-file", type=Path, default=ROOT / ".dev" / "jwt-secret")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "build" / "cluster", help="logs and nginx files")
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops the cluster as Ctrl-C does
    ensure_dev_secret(args.secret_file)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    homes = Path(tempfile.mkdtemp(prefix="rtserve-cluster-"))
    s3 = SeaweedFS(homes / "seaweedfs").start()
    repository = s3.env("s3://models/cluster")
    replicas = [replica(i, args, homes, repository) for i in range(args.replicas)]
    nginx = Nginx(args.run_dir / "nginx", [r.port for r in replicas], port=args.port, worker_processes=2)
    try:
        print(f"starting {args.replicas} replicas of {args.workers} workers (logs in {args.run_dir}) ...", flush=True)
        start_all(replicas)
        nginx.start()
        token = mint(AuthSettings(hs256_secret_file=args.secret_file), subject="dev", scopes="predict admin",
                     tenant="dev", ttl_s=86400)
        print(f"nginx: {nginx.url}  (replicas: {', '.join(r.url for r in replicas)}; Redis: {args.redis_url}; "
              f"model repository: {repository['RTSERVE_MODEL_REPOSITORY']} on {s3.endpoint})")
        print(f"TOKEN={token}")
        print(f'  curl -H "Authorization: Bearer $TOKEN" {nginx.url}/v2/models/digits-sklearn')
        print("Ctrl-C (or SIGTERM) stops nginx and every replica.", flush=True)
        gone: set[str] = set()
        while True:
            time.sleep(1.0)
            for r in replicas:
                if r.proc.poll() is not None and r.name not in gone:
                    gone.add(r.name)
                    print(f"{r.name} exited with {r.proc.returncode}; log: {r.log_path}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        print("stopping nginx and the replicas ...", flush=True)
        nginx.stop()
        for r in replicas:
            r.stop()
        s3.stop()
        shutil.rmtree(homes, ignore_errors=True)
        print("cluster stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
