"""The routing walkthrough of docs/routing.md, run as written, command after command, against the production-shaped
server (two workers, Redis, auth): only the server's address and key come from the environment, as a reader's
shell would have them, and the first command that fails stops it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

from tests.docs.blocks import DOCS, blocks

TITLE = "run by tests/docs/test_routing_walkthrough.py"
BIN = Path(sys.executable).parent
MODEL = "digits-sklearn"


def walkthrough() -> str:
    (block,) = [b for b in blocks() if b.page == "routing.md" and b.title == TITLE]
    return block.text


def reset(gateway) -> None:
    """Back to serving.yaml, whatever step the walkthrough stopped at, and v1 serving again in every worker."""
    admin = gateway.headers(scopes="admin")
    httpx.post(f"{gateway.url}/admin/models/{MODEL}/reset", headers=admin, timeout=60).raise_for_status()
    deadline = time.monotonic() + 60
    while httpx.get(f"{gateway.url}/v2/models/{MODEL}/versions/v1/ready", headers=gateway.headers(), timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "v1 not ready again after the reset"
        time.sleep(0.2)


def test_the_routing_walkthrough_runs_as_written(gateway, tmp_path):
    script = walkthrough()
    commands = [line for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert all(line.startswith("rtserve ") for line in commands), "the walkthrough is rtserve commands"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(DOCS.parent),
           "RTSERVE_URL": gateway.url, "RTSERVE_AUTH_HS256_SECRET_FILE": str(gateway.auth.hs256_secret_file)}
    env.pop("RTSERVE_TOKEN", None)  # a token from the key, as the docs say when none is set
    try:
        done = subprocess.run(["bash", "-euo", "pipefail", "-x", "-c", script], check=False, cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        ran = [line.removeprefix("+ ") for line in done.stderr.splitlines() if line.startswith("+ rtserve ")]
        assert done.returncode == 0, f"stopped at: {ran[-1] if ran else '?'}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    finally:
        reset(gateway)
    assert len(ran) == len(commands)  # every command ran, none skipped
    out = done.stdout
    for expected in (
        rf"{MODEL}  from configuration  weights \{{'v1': 100.0\}}",
        rf"unload: {MODEL}:v2; loaded \['v1'\]",
        rf"load: {MODEL}:v2 ready in every worker; loaded \['v1', 'v2'\]",
        rf"{MODEL}: weights \{{'v1': 90.0, 'v2': 10.0\}}",
        rf"experiment \S+ on {MODEL}: \{{'v1': 50.0, 'v2': 50.0\}}",
        rf"experiment on {MODEL} stopped",
        rf"canary {MODEL}:v2 started against v1; weights \{{'v1': 95.0, 'v2': 5.0\}}",
        r"chart written to canary.png: v2 traffic %",
        r"canary aborted; weights \{'v1': 100.0\}",
        rf"{MODEL}: shadow \{{'version': 'v2', 'fraction': 0.1\}}",
        rf"{MODEL}: shadow None",
        rf"unload: {MODEL}:v1; loaded \['v2'\], weights \{{'v2': 100.0\}}",
        rf"unload  {MODEL}  loaded \[\"v1\", \"v2\"\] -> \[\"v2\"\]",
        r"backup: \d+ models, \d+ stored versions",
        r"restore: routes of \d+ models",
        rf"{MODEL}: back to serving.yaml; loaded \['v1', 'v2'\], weights \{{'v1': 100.0\}}\s*$",
    ):
        assert re.search(expected, out, re.MULTILINE), f"{expected!r} not in:\n{out}"
    with Image.open(tmp_path / "canary.png") as chart:
        assert chart.format == "PNG"
    assert (tmp_path / "rtserve.backup.json").stat().st_size > 0
