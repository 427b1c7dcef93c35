"""One gRPC port, one service: the workers of a `bentoml serve` share it, a second service is refused it.

gRPC binds with SO_REUSEPORT (its default, and what lets the workers of one service share the
port), so a second service started by the same user on the same port would bind too and take
a share of the connections without a word. To prevent that, `bentoml serve`'s own process (an
`on_deployment` hook, before any worker starts) takes an exclusive `flock` on a file named for
the port and holds it as long as it lives, with its pid inside; it also probe-binds the port
without SO_REUSEPORT, which fails if anything at all listens there. A worker binds only if the
file names its own parent. The lock goes when the process does, however it ends, so a crashed
service never leaves the port blocked.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

_held: dict[Path, int] = {}  # lock file -> descriptor, open for the life of the serving process


class PortTaken(Exception):
    """The port cannot be claimed (another service or process has it, or its lock cannot be taken);
    the message is the one line to show."""


def lock_file(lock_dir: Path, port: int) -> Path:
    return lock_dir / f"rtserve-grpc-{port}.lock"


def reserve(host: str, port: int, lock_dir: Path) -> None:
    """Claim the port for this process's workers; raises PortTaken when another service has it."""
    path = lock_file(lock_dir, port)
    if path in _held:
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise PortTaken(
            f"gRPC port {port}: cannot open its lock file {path} ({exc.strerror}); set RTSERVE_GRPC_LOCK_DIR"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _owner(path)
        os.close(fd)
        raise PortTaken(
            f"gRPC port {port} is taken by another rtserve service (bentoml serve pid {owner}, lock {path}); "
            "set RTSERVE_GRPC_PORT to a free port, or RTSERVE_GRPC_ENABLED=false"
        ) from None
    try:
        _probe(host, port)
    except PortTaken:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[path] = fd


def check_shared(port: int, lock_dir: Path) -> None:
    """In a worker, before binding: the port must be reserved by this worker's own `bentoml serve`."""
    path = lock_file(lock_dir, port)
    owner = _owner(path)
    if owner != os.getppid():
        raise PortTaken(
            f"gRPC port {port} is not reserved by this worker's service (lock {path} names pid {owner}, "
            f"the service is pid {os.getppid()})"
        )


def _owner(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _probe(host: str, port: int) -> None:
    """Bind without SO_REUSEPORT and let go: fails if any socket listens on the port, ours or not."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
            probe.bind((host, port))
    except OSError as exc:
        raise PortTaken(f"gRPC port {port} on {host} cannot be bound: {exc.strerror or exc}") from None
