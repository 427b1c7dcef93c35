"""The Bento is complete: exported, imported into an empty store and served by a virtual environment
holding only the Bento's own locked requirements, from a folder outside the source tree.

The environment is installed with `pip install --no-deps` from the lock (and `pip check` must pass,
so the lock is the whole closure). It is kept between runs under ~/.cache/rtserve/, keyed by the
lock's hash: a changed lock makes a new one and the old one is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

from gateway.auth import AuthSettings
from gateway.tokens import mint
from loadtest.servers import free_port
from tests.deploy.bentos import ROOT, Bento, assert_every_model_answers, build, fetch_torch_wheel, serving_models, wait_ready

pytestmark = pytest.mark.timeout(1800)  # A first run installs the environment (minutes); later runs reuse it.

BENTOFILE = ROOT / "bentofile.yaml"
VENV_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rtserve" / "bento-venv"


class Served(NamedTuple):
    url: str
    auth: AuthSettings
    folder: Path
    env: dict[str, str]


def bento_venv(bento: Bento) -> Path:
    """A virtual environment with exactly the Bento's locked requirements, cached by the lock's hash."""
    lock = bento.lock.read_bytes()
    key = hashlib.sha256(lock + sys.version.encode()).hexdigest()[:16]
    venv = VENV_CACHE / key
    if (venv / ".complete").is_file():
        return venv
    VENV_CACHE.mkdir(parents=True, exist_ok=True)
    for old in VENV_CACHE.iterdir():
        shutil.rmtree(old)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    # From the lock's folder: its find-links line (the carried torch wheel) is relative to it.
    subprocess.run([*pip, "install", "--no-deps", "-r", bento.lock.name], cwd=bento.lock.parent, check=True, timeout=1200)
    check = subprocess.run([*pip, "check"], check=False, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, f"the lock is not a complete closure:\n{check.stdout}"
    (venv / ".complete").touch()
    return venv


@pytest.fixture(scope="module")
def served(model_store, tmp_path_factory) -> Iterator[Served]:
    """The Bento built from the source tree, served from an empty store in its own environment."""
    fetch_torch_wheel(BENTOFILE)
    bento = build(ROOT, Path(os.environ["BENTOML_HOME"]), BENTOFILE)
    outside = tmp_path_factory.mktemp("bento-serve")
    exported = outside / "rtserve.tar"  # a Bento archive, uncompressed: gzip of the carried wheel costs a minute
    subprocess.run([str(Path(sys.executable).parent / "bentoml"), "export", bento.tag, str(exported)], check=True, timeout=300)
    venv = bento_venv(bento)
    secret = outside / "jwt-secret"
    secret.write_text(secrets.token_hex(32))
    env = {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(outside),
        "BENTOML_HOME": str(outside / "store"),
        "BENTOML_DO_NOT_TRACK": "true",
        "RTSERVE_AUTH_ENABLED": "true",
        "RTSERVE_AUTH_HS256_SECRET_FILE": str(secret),
        "RTSERVE_GRPC_PORT": str(free_port()),  # not the default 3001, which another server may hold
        "RTSERVE_METRICS_PORT": str(free_port()),  # nor the default 3002
    }
    bentoml = str(venv / "bin" / "bentoml")
    subprocess.run([bentoml, "import", str(exported)], cwd=outside, env=env, check=True, capture_output=True, timeout=300)
    port = free_port()
    log = outside / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [bentoml, "serve", bento.tag, "--host", "127.0.0.1", "--port", str(port)],
            cwd=outside, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        seconds = wait_ready(f"{url}/v2/health/ready", lambda: proc.poll() is None, log.read_text, timeout=240)
        print(f"\nBento {bento.tag}: built in {bento.seconds:.1f} s, served from its own environment, ready in {seconds:.1f} s")
        yield Served(url, AuthSettings(hs256_secret_file=secret), outside, env)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_the_store_holds_only_the_bentos_own_models(served: Served) -> None:
    listed = subprocess.run(
        ["bentoml", "models", "list", "-o", "json"],
        check=False,
        env=served.env,
        cwd=served.folder,
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr
    assert sorted(m["tag"] for m in json.loads(listed.stdout)) == sorted(yaml.safe_load(BENTOFILE.read_text())["models"])


def test_the_environment_cannot_import_the_source_tree(served: Served) -> None:
    probe = subprocess.run(
        ["python", "-c", "import gateway"], check=False, env=served.env, cwd=served.folder, capture_output=True, text=True
    )
    assert probe.returncode != 0 and "No module named 'gateway'" in probe.stderr


def test_every_model_answers_oip_infer_through_tritonclient(served: Served) -> None:
    token = mint(served.auth, subject="release-check", scopes="predict", tenant="acme", ttl_s=600)
    assert_every_model_answers(served.url, token, serving_models(ROOT))
