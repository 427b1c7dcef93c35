"""One log line once the server is ready, with its addresses: where to point a client, a browser, a gRPC
client and Prometheus.

It comes from `bentoml serve`'s own process, which knows every port (a worker knows only its socket), and
from a thread that waits for two things: `/v2/health/ready` answering 200 as a load balancer would ask it,
and every worker saying it is ready. The HTTP port alone is not enough with several workers: whichever
worker accepts the probe answers it, so the first ready worker would announce a server whose other workers
still load. Each worker, once it is ready (every configured model loaded and warm, strict readiness), leaves
a file named for its process in a directory the two share (`mark_when_ready`); the line waits until there
is one for each worker, from a live process."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.processes import pid_alive

log = logging.getLogger(__name__)

ANY_ADDRESS = ("", "0.0.0.0", "::")
MARK_PREFIX = "rtserve-worker-ready-"
"""A ready worker's file in the shared directory: this prefix and its process id."""


@dataclass(frozen=True)
class Addresses:
    http: str
    """The API's base URL, e.g. http://0.0.0.0:3000."""
    grpc: str | None
    metrics: str | None

    def line(self) -> str:
        parts = [f"HTTP {self.http} (API page {self.http}/docs)"]
        if self.grpc:
            parts.append(f"gRPC {self.grpc}")
        if self.metrics:
            parts.append(f"metrics {self.metrics}")
        return "ready: every configured model is loaded; " + ", ".join(parts)


def http_bind(argv: list[str], default_port: int) -> tuple[str, int]:
    """`bentoml serve`'s `--host` and `--port` (or `-p`, or BENTOML_HOST/BENTOML_PORT), as its CLI reads them."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("-p", "--port", type=int, default=int(os.environ.get("BENTOML_PORT") or default_port))
    parser.add_argument("--host", default=os.environ.get("BENTOML_HOST") or "0.0.0.0")
    known, _ = parser.parse_known_args(argv)
    return known.host, known.port


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def addresses(argv: list[str], default_port: int, tls: bool, grpc: tuple[str, int] | None,
              metrics: tuple[str, int] | None) -> Addresses:
    host, port = http_bind(argv, default_port)
    scheme = "https" if tls else "http"
    return Addresses(
        http=f"{scheme}://{_url_host(host)}:{port}",
        grpc=f"{_url_host(grpc[0])}:{grpc[1]}" if grpc else None,
        metrics=f"http://{_url_host(metrics[0])}:{metrics[1]}/metrics" if metrics else None,
    )


def _ready(url: str, context: ssl.SSLContext | None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as answer:
            return answer.status == 200
    except (OSError, urllib.error.URLError):
        return False


async def mark_when_ready(ready: Callable[[], bool], directory: str, interval_s: float = 0.2) -> Path:
    """In a worker: once `ready()` holds, leave this process's file in `directory` for `bentoml serve` to count."""
    while not ready():
        await asyncio.sleep(interval_s)
    mark = Path(directory) / f"{MARK_PREFIX}{os.getpid()}"
    mark.write_text(f"{time.time():.3f}\n")
    return mark


def ready_workers(directory: str) -> int:
    """Workers that said they are ready and still run: a worker BentoML replaced left its file behind."""
    count = 0
    for mark in Path(directory).glob(f"{MARK_PREFIX}*"):
        pid = mark.name.removeprefix(MARK_PREFIX)
        if pid.isdigit() and pid_alive(int(pid)):
            count += 1
    return count


def announce_when_ready(shown: Addresses, workers: int, directory: str, interval_s: float = 0.5) -> threading.Thread:
    """Poll this server's readiness on the loopback and count its ready workers (a daemon thread, gone with the
    process); log the line once, when the server answers ready and each of its `workers` said it is ready."""
    probe = shown.http
    for any_address in ANY_ADDRESS:
        probe = probe.replace(f"//{_url_host(any_address)}:", "//127.0.0.1:")
    context = None
    if probe.startswith("https:"):  # its own certificate need not name the loopback address
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

    def wait() -> None:
        while not (_ready(f"{probe}/v2/health/ready", context) and ready_workers(directory) >= workers):
            time.sleep(interval_s)
        log.info("%s", shown.line())

    thread = threading.Thread(target=wait, name="rtserve-ready-line", daemon=True)
    thread.start()
    return thread
