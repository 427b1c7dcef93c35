"""The probe's fork server: one per replica, frameworks imported, a throw-away child per probe. A crash or a
kill takes only the child down, a dead server is replaced, no secret reaches it or its children, and it
holds no thread when it forks."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import psutil
import pytest

from models import fork_server
from models.importer import ImportOptions, import_model
from models.probe import PRELOAD, preload_modules, probe_env, start_fork_server
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


def test_an_unknown_framework_to_preload_is_named():
    with pytest.raises(ValueError, match=r"unknown frameworks \['torch'\]; known: .*'pytorch'"):
        ImportSettings(preload_frameworks=["torch"])


def test_a_probe_whose_worker_goes_away_is_killed(tmp_path):
    """No probe runs unwatched: when the worker's connection closes (it died), the supervisor kills the child."""
    hang = makers.pickle_calling(tmp_path, time.sleep, (600,), "hang.joblib")
    request = {"format": "pickle", "file": str(hang), "metadata": {}, "declared": {}, "sample": None,
               "trust": {"allow_code": True, "trusted_types": []}}
    (tmp_path / "request.json").write_text(json.dumps(request))
    conn = fork_server.connect(probe_env())
    conn.sendall((json.dumps({"request": str(tmp_path / "request.json"), "result": str(tmp_path / "result.json"),
                              "log": str(tmp_path / "log"), "cwd": str(tmp_path),
                              "modules": list(preload_modules("sklearn"))}) + "\n").encode())
    pid = int(fork_server.readline(conn, 120).split()[0])
    child = psutil.Process(pid)
    assert child.is_running()
    conn.close()
    gone, _ = psutil.wait_procs([child], timeout=15)
    assert gone and not (tmp_path / "result.json").exists()
