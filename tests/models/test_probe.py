"""The probe load refuses a file that exhausts memory, crashes or hangs, and runs without the server's
secrets. These pickles are the operator-allowed worst case: files that run code when opened."""

from __future__ import annotations

import json
import os
import time

import psutil
import pytest

from core.errors import ModelRefused, ProbeFailed
from models.importer import ImportOptions, import_model
from models.settings import ImportSettings
from tests.models import makers

CODE = ImportOptions(allow_code=True)


def test_a_file_that_allocates_10_gb_is_refused_at_the_memory_limit(tmp_path, name):
    path = makers.pickle_bomb(tmp_path, gigabytes=10)
    start = time.monotonic()
    with pytest.raises(ProbeFailed, match="memory limit of 600 MB") as info:
        import_model(name, "v1", path, CODE, ImportSettings(allow_code_formats=True, probe_memory_mb=600))
    assert info.value.status == 422 and time.monotonic() - start < 60


def test_a_file_that_crashes_the_process_is_refused(tmp_path, name, settings):
    path = makers.pickle_calling(tmp_path, os.abort, (), "crash.joblib")
    with pytest.raises(ProbeFailed, match="crashed .killed by signal 6"):
        import_model(name, "v1", path, CODE, settings)


def test_a_file_that_hangs_is_refused_at_the_time_limit(tmp_path, name):
    path = makers.pickle_calling(tmp_path, time.sleep, (600,), "hang.joblib")
    start = time.monotonic()
    with pytest.raises(ProbeFailed, match="did not finish within 5 s"):
        import_model(name, "v1", path, CODE, ImportSettings(allow_code_formats=True, probe_timeout_s=5))
    assert time.monotonic() - start < 30


def test_a_process_the_model_moves_out_of_the_probe_group_is_killed_at_the_limit(tmp_path, name):
    """What the model's code started dies with the probe, in a session of its own too."""
    pid_file = tmp_path / "escaped.pid"
    code = ("import subprocess, time\n"
            "p = subprocess.Popen(['sleep', '600'], start_new_session=True)\n"
            f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
            "time.sleep(600)\n")
    path = makers.pickle_calling(tmp_path, exec, (code,), "escape.joblib")
    with pytest.raises(ProbeFailed, match="did not finish within 5 s"):
        import_model(name, "v1", path, CODE, ImportSettings(allow_code_formats=True, probe_timeout_s=5))
    escaped, deadline = int(pid_file.read_text()), time.monotonic() + 15
    while _runs(escaped) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _runs(escaped)


def _runs(pid: int) -> bool:
    """Whether the process runs (a zombie, killed and not yet reaped by whoever adopted it, does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_probe_sees_no_secrets(tmp_path, name, settings, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-models")
    monkeypatch.setenv("RTSERVE_AUTH_HS256_SECRET", "not-for-models")
    monkeypatch.setenv("REDIS_URL", "redis://:password@127.0.0.1:6379/0")
    seen = tmp_path / "seen.json"
    code = f"import os, json; open({str(seen)!r}, 'w').write(json.dumps(dict(os.environ)))"
    path = makers.pickle_calling(tmp_path, exec, (code,), "peek.joblib")
    with pytest.raises(ModelRefused, match="no predict method"):  # the peek loads None, which is refused
        import_model(name, "v1", path, CODE, settings)
    env = json.loads(seen.read_text())
    assert "PATH" in env
    assert not [k for k in env if k.startswith(("RTSERVE_", "AWS_", "REDIS", "BENTOML"))]
    assert "not-for-models" not in seen.read_text()
