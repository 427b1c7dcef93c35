"""Against a real `bentoml serve`: a job submitted, watched and fetched with `rtserve job`, and a stream through curl."""

from __future__ import annotations

import itertools
import json
import os
import pty
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from gateway.auth import AuthSettings
from gateway.tokens import mint
from tests.helpers import ServerProcess

pytestmark = pytest.mark.cache_independent
"""A server process, which RTSERVE_TEST_CACHE does not reach."""

RTSERVE = str(Path(sys.executable).parent / "rtserve")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(jobs_server) -> tuple[ServerProcess, dict[str, str]]:
    """The CLI's environment: the server's key, its URL, a tenant."""
    secret = str(jobs_server.auth.hs256_secret_file)
    auth = {"RTSERVE_AUTH_ENABLED": "true", "RTSERVE_AUTH_HS256_SECRET_FILE": secret}
    # PYTHONPATH: the CLI of this tree, whichever checkout the environment's editable install points at
    return jobs_server.server, {**os.environ, **auth, "RTSERVE_URL": jobs_server.url, "RTSERVE_TENANT": "cli-test",
                                "PYTHONPATH": str(ROOT)}


def rtserve(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([RTSERVE, *args], check=False, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_job_through_the_cli(served, digits, tmp_path):
    _, env = served
    rows = np.tile(digits, (4, 1))  # 7,188 rows
    np.save(tmp_path / "rows.npy", rows)
    out = rtserve(env, "job", "submit", "digits-sklearn", str(tmp_path / "rows.npy"), "--version", "v1", "--wait")
    job_id = out.split()[1].rstrip(":")
    assert f"job {job_id}: succeeded, {len(rows)}/{len(rows)} rows, 0 failed" in out and "rows/s" in out
    assert "succeeded" in rtserve(env, "job", "status", job_id)
    rtserve(env, "job", "get", job_id, "-o", str(tmp_path / "out.ndjson"))
    got = [json.loads(line) for line in (tmp_path / "out.ndjson").read_text().splitlines()]
    assert [g["row"] for g in got] == list(range(len(rows)))
    assert [g["outputs"]["label"] for g in got[:1797]] == [g["outputs"]["label"] for g in got[1797:3594]]
    cancel = subprocess.run([RTSERVE, "job", "cancel", job_id], check=False, env=env, capture_output=True, text=True, timeout=60)
    assert cancel.returncode == 2 and "409" in cancel.stderr
    other = subprocess.run([RTSERVE, "job", "status", job_id], check=False, env={**env, "RTSERVE_TENANT": "someone-else"},
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 2 and "404" in other.stderr


def test_stream_through_curl(served, digits, tmp_path):
    server, env = served
    items = [json.dumps({"id": f"r{i}", "inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32",
                                                    "data": row}]}) for i, row in enumerate(digits[:30].tolist())]
    items[4] = '{"id": "bad", "inputs": []}'
    (tmp_path / "items.ndjson").write_text("\n".join(items) + "\n")
    token = mint(AuthSettings(hs256_secret_file=Path(env["RTSERVE_AUTH_HS256_SECRET_FILE"])), subject="curl", scopes="predict",
                 tenant="acme", ttl_s=600)
    done = subprocess.run(["curl", "-sS", "-N", "--fail-with-body", "-H", f"Authorization: Bearer {token}", "--data-binary",
                           f"@{tmp_path / 'items.ndjson'}", f"{server.url}/v2/models/digits-sklearn/infer/stream"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    got = {doc["id"]: doc for doc in map(json.loads, done.stdout.splitlines())}
    assert set(got) == {f"r{i}" for i in range(30) if i != 4} | {"bad"}
    assert got["bad"]["code"] == "bad_request"
    assert all(got[f"r{i}"]["model_version"] in ("v1", "v2") for i in range(30) if i != 4)


JOB_LINE = re.compile(r"^job (\S+): (\w+), (\d+)/(\d+) rows, (\d+) failed")


def test_a_job_wait_off_a_terminal_prints_one_line_per_change(served, digits, tmp_path):
    _, env = served
    rows = np.tile(digits, (8, 1))  # 14,376 rows: several polls while it runs
    np.save(tmp_path / "rows.npy", rows)
    out = rtserve(env, "job", "submit", "digits-sklearn", str(tmp_path / "rows.npy"), "--version", "v1", "--wait")
    states = [m.groups()[1:] for line in out.splitlines() if (m := JOB_LINE.match(line))]  # state, done, total, failed
    assert states[-1] == ("succeeded", str(len(rows)), str(len(rows)), "0"), out
    assert all(a != b for a, b in itertools.pairwise(states)), f"a line repeated without a change:\n{out}"
    done = [int(d) for _, d, _, _ in states]
    assert done == sorted(done), out
    assert "\r" not in out and "[" not in out  # no bar in a log


def test_a_job_wait_on_a_terminal_draws_a_bar_of_rows_done(served, digits, tmp_path):
    _, env = served
    rows = np.tile(digits, (8, 1))
    np.save(tmp_path / "rows.npy", rows)
    leader, follower = pty.openpty()
    proc = subprocess.Popen([RTSERVE, "job", "submit", "digits-sklearn", str(tmp_path / "rows.npy"), "--version", "v1", "--wait"],
                            env=env, stdout=follower, stderr=subprocess.PIPE)
    os.close(follower)
    chunks: list[bytes] = []

    def read() -> None:  # a terminal's buffer is small: read while the command writes
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the command closed the terminal
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()
    finally:
        reader.join(10)
        os.close(leader)
        proc.stderr.close()
    out = b"".join(chunks).decode()
    redraws = [part for part in out.replace("\r\n", "\n").split("\r") if "#" in part or "[ " in part]
    assert redraws, out
    assert re.search(rf"\[#{{30}}\] 100% {len(rows):,}/{len(rows):,} rows, 0 failed.*succeeded", out), out
    assert f"succeeded, {len(rows)}/{len(rows)} rows, 0 failed" in out  # the summary on a line of its own
