"""The probe's fork server: one per replica, frameworks imported, a throw-away child per probe. A crash or a
kill takes only the child down, a dead server is replaced, no secret reaches it or its children, and it
holds no thread when it forks."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psutil
import pytest

from core.errors import ProbeFailed
from models import fork_server, formats
from models.importer import ImportOptions, import_model
from models.probe import PRELOAD, preload_modules, probe_env, run_probe, start_fork_server
from models.settings import ImportSettings
from pipeline.deploy import Deployer
from tests.models import makers

CODE = ImportOptions(allow_code=True)


def servers() -> list[psutil.Process]:
    """The fork servers this process started for the probe's present environment (this process is the
    replica's worker here; other tests may have started servers for other environments)."""
    folder = str(fork_server.folder(probe_env()))
    return [p for p in psutil.Process().children() if "models.fork_server" in p.cmdline() and p.cwd() == folder]


@pytest.fixture
def fresh_server():
    """No fork server for this environment when the test starts: the next probe starts one."""
    for p in servers():
        p.kill()
        p.wait(10)


def test_a_crashing_probe_leaves_the_server_serving_the_next(tmp_path, name, settings):
    crash = makers.pickle_calling(tmp_path, os.abort, (), "crash.joblib")
    with pytest.raises(Exception, match="crashed .killed by signal 6"):
        import_model(name, "v1", crash, CODE, settings)
    (server,) = servers()
    made = makers.iris_skops(tmp_path)
    model = import_model(name, "v1", made.path, ImportOptions(), settings)
    assert servers() == [server]
    # The memory measured is the model's growth over the forked child's start, not the shared frameworks'.
    assert 0 < model.info.metadata["memory_mb"] < 100


def test_a_killed_server_is_replaced_by_the_next_probe(tmp_path, name, settings):
    made = makers.iris_skops(tmp_path)
    start_fork_server(("sklearn",))
    (first,) = servers()
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    model = import_model(name, "v1", made.path, ImportOptions(), settings)
    (second,) = servers()
    assert second.pid != first.pid and model.info.metadata["task"] == "classification"


def test_no_secret_reaches_the_server_or_its_children(tmp_path, name, settings, monkeypatch, fresh_server):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-models")
    monkeypatch.setenv("RTSERVE_AUTH_HS256_SECRET", "not-for-models")
    seen = tmp_path / "seen.json"
    code = f"import os, json; open({str(seen)!r}, 'w').write(json.dumps(dict(os.environ)))"
    path = makers.pickle_calling(tmp_path, exec, (code,), "peek.joblib")
    with pytest.raises(Exception, match="no predict method"):
        import_model(name, "v1", path, CODE, settings)
    (server,) = servers()  # started after the secrets were set, from this process's environment
    assert "not-for-models" not in json.dumps(server.environ())
    assert "not-for-models" not in seen.read_text() and "AWS_SECRET_ACCESS_KEY" not in json.loads(seen.read_text())


def test_the_server_holds_no_thread_when_it_forks():
    """A thread alive at fork time would leave its locks held in the child. Every framework imported."""
    start_fork_server(tuple(PRELOAD))
    (server,) = servers()
    assert server.num_threads() == 1 and server.environ()["OMP_NUM_THREADS"] == "1"


def test_a_server_folder_others_can_write_is_not_used():
    """The socket's folder is this user's alone: in one others can write, a socket could be anyone's."""
    folder = fork_server.folder(probe_env())
    os.chmod(folder, 0o777)
    try:
        with pytest.raises(PermissionError, match="not a private folder"):
            fork_server.connect(probe_env())
    finally:
        os.chmod(folder, 0o700)


async def test_preloaded_frameworks_are_imported_by_the_worker_and_the_server():
    """RTSERVE_IMPORT_PRELOAD_FRAMEWORKS: no deploy of these frameworks waits for an import, in either process."""
    deployer = Deployer(None, ImportSettings(preload_frameworks=["xgboost"]))  # type: ignore[arg-type]
    await deployer.preload()
    (server,) = servers()
    assert "xgboost" in sys.modules
    assert any("xgboost" in m.path for m in server.memory_maps())  # its native library is loaded there


def test_the_server_imports_the_warm_frameworks_in_the_background_and_still_serves_probes(tmp_path, name, settings,
                                                                                          fresh_server):
    """RTSERVE_IMPORT_PROBE_WARM_FRAMEWORKS: imported after the start, a module at a time between probes."""
    start_fork_server((), later=["lightgbm", "xgboost"])
    (server,) = servers()
    import_model(name, "v1", makers.iris_onnx(tmp_path).path, ImportOptions(), settings)  # a probe meanwhile
    deadline = time.monotonic() + 60
    while not all(any(lib in m.path for m in server.memory_maps()) for lib in ("lightgbm", "xgboost")):
        assert time.monotonic() < deadline, "the warm frameworks were not imported"
        time.sleep(0.1)


def test_an_unknown_framework_to_preload_is_named():
    with pytest.raises(ValueError, match=r"unknown frameworks \['torch'\]; known: .*'pytorch'"):
        ImportSettings(preload_frameworks=["torch"])


def hanging_request(tmp_path) -> dict:
    """A probe request for a file whose load sleeps ten minutes."""
    hang = makers.pickle_calling(tmp_path, time.sleep, (600,), "hang.joblib")
    return {"format": "pickle", "file": str(hang), "metadata": {}, "declared": {}, "sample": None,
            "trust": {"allow_code": True, "trusted_types": []}}


def test_a_probe_whose_worker_goes_away_is_killed(tmp_path):
    """No probe runs unwatched: when the worker's connection closes (it died), the supervisor kills the child."""
    request = hanging_request(tmp_path)
    (tmp_path / "request.json").write_text(json.dumps(request))
    conn = fork_server.connect(probe_env())
    conn.sendall((json.dumps({"request": str(tmp_path / "request.json"), "result": str(tmp_path / "result.json"),
                              "log": str(tmp_path / "log"), "cwd": str(tmp_path),
                              "modules": list(preload_modules(formats.get("skops")))}) + "\n").encode())
    pid = int(fork_server.readline(conn, 120).split()[0])
    child = psutil.Process(pid)
    assert child.is_running()
    conn.close()
    gone, _ = psutil.wait_procs([child], timeout=15)
    assert gone and not (tmp_path / "result.json").exists()


def test_a_probe_child_holds_no_socket_or_file_of_the_worker(tmp_path, name, settings, fresh_server):
    """The worker's descriptors (its Redis connection, its listening socket, files it has open) reach neither the
    server nor the probe's child, which holds no socket at all once it has reported its pid."""
    listening = socket.create_server(("127.0.0.1", 0))
    redis_conn = socket.create_connection(("127.0.0.1", 6379))
    secret = (tmp_path / "secret").open("w")
    seen = tmp_path / "fds.json"
    code = ("import os, json\nfds = {}\nfor fd in os.listdir('/proc/self/fd'):\n    try:\n"
            "        fds[fd] = os.readlink('/proc/self/fd/' + fd)\n    except OSError:\n        pass\n"
            f"open({str(seen)!r}, 'w').write(json.dumps(fds))\n")
    path = makers.pickle_calling(tmp_path, exec, (code,), "fds.joblib")
    try:
        with pytest.raises(Exception, match="no predict method"):
            import_model(name, "v1", path, CODE, settings)
        (server,) = servers()
        child_fds = json.loads(seen.read_text())
    finally:
        listening.close()
        redis_conn.close()
        secret.close()
    assert child_fds and not [t for t in child_fds.values() if t.startswith("socket:")], child_fds
    assert str(tmp_path / "secret") not in child_fds.values()
    stdio = [child_fds.pop(fd) for fd in ("0", "1", "2")]
    assert stdio[0] == os.devnull and stdio[1] == stdio[2] and stdio[1].endswith("stderr.log")
    assert os.devnull not in child_fds.values() and stdio[1] not in child_fds.values(), child_fds  # none left over
    assert server.net_connections(kind="inet") == []  # its only socket is its own Unix listener
    assert str(tmp_path / "secret") not in [f.path for f in server.open_files()]


def test_a_probe_whose_supervisor_dies_is_killed_by_the_worker(tmp_path):
    """No probe runs unwatched the other way round either: the supervisor gone, the worker kills the child."""
    request = hanging_request(tmp_path)
    pool = ThreadPoolExecutor(1)
    probe = pool.submit(run_probe, request, 300, 1500)
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while not children:  # the child is the server's descendant that has the model's file open
            assert time.monotonic() < deadline and not probe.done(), "the probe's child never started"
            time.sleep(0.05)
            children = [p for srv in servers() for p in srv.children(recursive=True)
                        if any(f.path == request["file"] for f in p.open_files())]
        (child,) = children
        child.parent().kill()
        with pytest.raises(ProbeFailed, match="ended without an answer"):
            probe.result(30)
        gone, _ = psutil.wait_procs([child], timeout=15)
        assert gone
    finally:
        for p in children:
            if p.is_running():
                p.kill()
        pool.shutdown(wait=False)


@contextmanager
def hung_server(monkeypatch) -> Iterator[psutil.Process]:
    """A fork server with scikit-learn imported, then stopped (SIGSTOP), with a 1 s start bound: what the block
    does must end it (checked); killed after in any case."""
    start_fork_server(("sklearn",))
    (hung,) = servers()
    hung.suspend()
    monkeypatch.setattr(fork_server, "START_TIMEOUT_S", 1.0)
    try:
        yield hung
        hung.wait(10)
    finally:
        if hung.is_running():
            hung.kill()


def test_a_hung_server_is_killed_and_the_next_probe_starts_another(tmp_path, name, settings, monkeypatch):
    """A server that takes probes and never forks them (stopped here) fails one probe, not every deploy after."""
    with hung_server(monkeypatch) as hung, pytest.raises(ProbeFailed, match="did not finish within 1 s"):
        run_probe(hanging_request(tmp_path), 1, 1500)
    monkeypatch.undo()
    model = import_model(name, "v1", makers.iris_skops(tmp_path).path, ImportOptions(), settings)
    (second,) = servers()
    assert second.pid != hung.pid and model.info.metadata["task"] == "classification"


def test_a_server_hung_at_preload_is_killed_not_waited_on(monkeypatch):
    """The worker's preload at start (RTSERVE_IMPORT_PRELOAD_FRAMEWORKS) waits a bounded time, then stops it."""
    with hung_server(monkeypatch), pytest.raises(TimeoutError, match="did not import the frameworks in time"):
        start_fork_server(("sklearn",))
