"""The gRPC port guard with real processes and sockets: who may share a port, who is refused, and that a
lock dies with its holder."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from frontends.grpc import port_guard
from frontends.grpc.port_guard import PortTaken, check_shared, reserve
from loadtest.servers import free_port

HOLD = "import sys; from pathlib import Path; from frontends.grpc.port_guard import reserve; " \
       "reserve('127.0.0.1', {port}, Path({dir!r})); print('held', flush=True); sys.stdin.read()"  # fmt: skip
CHECK = "from pathlib import Path; from frontends.grpc.port_guard import check_shared; check_shared({port}, Path({dir!r}))"


@pytest.fixture(autouse=True)
def fresh_holdings(monkeypatch):
    """Each test holds its own locks, released when it ends."""
    held: dict = {}
    monkeypatch.setattr(port_guard, "_held", held)
    yield
    for fd in held.values():
        port_guard.os.close(fd)


def test_a_port_reserved_by_another_service_is_refused_until_that_service_is_gone(tmp_path):
    port = free_port()
    holder = subprocess.Popen([sys.executable, "-c", HOLD.format(port=port, dir=str(tmp_path))], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(PortTaken, match=f"taken by another rtserve service \\(bentoml serve pid {holder.pid}"):
            reserve("127.0.0.1", port, tmp_path)
    finally:
        holder.kill()
        holder.wait()
    reserve("127.0.0.1", port, tmp_path)  # the lock went with the process that held it


def test_only_children_of_the_reserving_process_may_bind(tmp_path):
    port = free_port()
    reserve("127.0.0.1", port, tmp_path)
    child = subprocess.run([sys.executable, "-c", CHECK.format(port=port, dir=str(tmp_path))], check=False, capture_output=True,
                           text=True)  # fmt: skip
    assert child.returncode == 0, child.stderr  # a worker of this "bentoml serve"
    with pytest.raises(PortTaken, match="not reserved by this worker's service"):
        check_shared(port, tmp_path)  # this process's parent reserved nothing


def test_a_port_anything_listens_on_is_refused(tmp_path):
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as gRPC binds, which would share silently
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(PortTaken, match=f"gRPC port {port} on 127.0.0.1 cannot be bound"):
            reserve("127.0.0.1", port, tmp_path)
