"""The Bento's image, built and run with podman on this machine (no Docker engine, no registry).

`make container-test` runs this module on the CPU Bento (bentofile.yaml);
`make container-test BENTOFILE=deploy/container/bentofile.gpu.yaml` on the GPU Bento, which serves on
the CPU here (no GPU), so everything but CUDA itself is exercised and its size and times measured. The base image (python:3.11-slim, made from Debian packages
by deploy/container/make-python-base.sh) stays in the private store between runs; the Bento's image
and its containers are removed afterwards. Timings are printed as one line for the README.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from gateway.auth import AuthSettings
from gateway.tokens import mint
from loadtest.servers import free_port
from tests.deploy.bentos import (
    BENTOML,
    CONTAINER_DIR,
    ROOT,
    Bento,
    assert_every_model_answers,
    build,
    fetch_torch_wheel,
    serving_models,
    wait_ready,
)

pytestmark = pytest.mark.timeout(1800)  # A cold run builds the base image and the Bento's image (minutes).

PODMAN_ENV = {
    **os.environ,
    "CONTAINERS_CONF": str(CONTAINER_DIR / "containers.conf"),
    "CONTAINERS_STORAGE_CONF": str(CONTAINER_DIR / "storage.conf"),
    # One layer for the whole build: no intermediate images to commit or to clean up.
    "BUILDAH_LAYERS": "false",
    "BENTOML_DO_NOT_TRACK": "true",
}
SECRET_DIR = "/run/secrets/rtserve"
GRACE_S = 30
"""podman stop's grace period before SIGKILL, as Kubernetes' default terminationGracePeriodSeconds."""
HEALTH_CMD = (
    'python -c "import os,urllib.request as u; '
    'u.urlopen(\\"http://127.0.0.1:%s/v2/health/ready\\" % os.environ.get(\\"PORT\\", \\"3000\\"), timeout=2)"'
)
"""The health check bentofile.yaml documents, run by podman inside the container."""
BENTOFILE = ROOT / os.environ.get("RTSERVE_CONTAINER_BENTOFILE", "bentofile.yaml")
"""Which Bento's image: the CPU build unless `make container-test BENTOFILE=...` names another."""


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["podman", *args], env=PODMAN_ENV, capture_output=True, text=True, timeout=timeout, check=False)
    if check:
        assert out.returncode == 0, f"podman {' '.join(args)}: {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return out


@dataclass
class Image:
    name: str
    bento: Bento
    user_uid: int
    timings: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="module")
def image(model_store) -> Iterator[Image]:
    """The Bento's image; removed afterwards with its containers."""
    assert shutil.which("podman") and shutil.which("debootstrap"), "podman and debootstrap: run `make system-deps`"
    assert os.geteuid() == 0, "the container test runs podman as root"
    timings: dict[str, float] = {}
    started = time.monotonic()
    subprocess.run([str(CONTAINER_DIR / "make-python-base.sh")], env=PODMAN_ENV, check=True, timeout=1800)
    timings["base image (s)"] = time.monotonic() - started
    fetch_torch_wheel(BENTOFILE)
    bento = build(ROOT, Path(os.environ["BENTOML_HOME"]), BENTOFILE)
    timings["Bento build (s)"] = bento.seconds
    name = f"localhost/rtserve-test:{bento.tag.split(':')[1]}"
    started = time.monotonic()
    try:
        out = subprocess.run(
            [BENTOML, "containerize", bento.tag, "--backend", "podman", "-t", name, "--opt", "network=host", "--opt", "pull-never"],
            check=False, env={**PODMAN_ENV, "BENTOML_HOME": os.environ["BENTOML_HOME"]}, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        timings["image build (s)"] = time.monotonic() - started
        assert out.returncode == 0, f"containerize failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
        uid = int(podman("run", "--rm", "--network", "none", "--entrypoint", "id", name, "-u").stdout)
        timings["image size (MB)"] = int(podman("image", "inspect", "--format", "{{.Size}}", name).stdout) / 1e6
        yield Image(name, bento, uid, timings)
    finally:
        for container in podman("ps", "-a", "--filter", f"ancestor={name}", "--format", "{{.ID}}", check=False).stdout.split():
            podman("rm", "-f", container, check=False)
        podman("rmi", "-f", name, check=False)
        podman("image", "prune", "-f", check=False)


@dataclass
class Container:
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def state(self, fmt: str) -> str:
        return podman("inspect", "--format", fmt, self.name).stdout.strip()

    def running(self) -> bool:
        return self.state("{{.State.Running}}") == "true"

    def logs(self) -> str:
        out = podman("logs", self.name, check=False)
        return out.stdout + out.stderr


def run(image: Image, *args: str) -> Container:
    """`podman run -d` on the host network, on free ports for HTTP (the image's entrypoint maps PORT), gRPC and metrics."""
    container = Container(f"rtserve-test-{uuid.uuid4().hex[:8]}", free_port())
    ports = ("-e", f"PORT={container.port}", "-e", f"RTSERVE_GRPC_PORT={free_port()}", "-e", f"RTSERVE_METRICS_PORT={free_port()}")
    podman("run", "-d", "--name", container.name, "--network", "host", *ports, *args, image.name)
    return container


@pytest.fixture
def secret_dir(image: Image, tmp_path: Path) -> Path:
    """A key readable by the image's non-root user only, to mount read-only."""
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "jwt-secret").write_text(secrets.token_hex(32))
    for path, mode in ((folder, 0o500), (folder / "jwt-secret", 0o400)):
        os.chown(path, image.user_uid, image.user_uid)
        os.chmod(path, mode)
    return folder


def test_dockerfiles_pass_hadolint(image: Image) -> None:
    config = CONTAINER_DIR / "hadolint.yaml"
    for dockerfile in (image.bento.dockerfile, CONTAINER_DIR / "python-base.Containerfile"):
        out = subprocess.run(
            [str(Path(sys.executable).parent / "hadolint"), "--config", str(config), str(dockerfile)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, f"{dockerfile}:\n{out.stdout}{out.stderr}"


def test_container_serves_with_a_token_refuses_without_and_stops_on_sigterm(image: Image, secret_dir: Path, capsys) -> None:
    started = time.monotonic()
    container = run(
        image,
        "-v", f"{secret_dir}:{SECRET_DIR}:ro",
        "-e", f"RTSERVE_AUTH_HS256_SECRET_FILE={SECRET_DIR}/jwt-secret",
        "--health-cmd", HEALTH_CMD,
    )  # fmt: skip
    wait_ready(f"{container.url}/v2/health/ready", container.running, container.logs, timeout=240)
    image.timings["start to ready (s)"] = time.monotonic() - started
    assert podman("healthcheck", "run", container.name, check=False).returncode == 0, container.logs()

    token = mint(
        AuthSettings(hs256_secret_file=secret_dir / "jwt-secret"), subject="ops", scopes="predict", tenant="acme", ttl_s=600
    )
    assert_every_model_answers(container.url, token, serving_models(ROOT))
    refused = httpx.get(f"{container.url}/v2/models/digits-sklearn", timeout=10)
    assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"

    started = time.monotonic()
    podman("stop", "-t", str(GRACE_S), container.name, timeout=GRACE_S + 30)
    image.timings["SIGTERM to exit (s)"] = time.monotonic() - started
    assert container.state("{{.State.ExitCode}}") == "0", container.logs()
    assert image.timings["SIGTERM to exit (s)"] < GRACE_S, "stopped by SIGKILL, not by SIGTERM"
    with capsys.disabled():
        timings = ", ".join(f"{k} {v:.1f}" for k, v in image.timings.items())
        print(f"\ncontainer ({BENTOFILE.relative_to(ROOT)}): {timings}")


def test_container_without_a_key_exits_at_once_with_one_clear_line(image: Image) -> None:
    container = run(image)  # auth is on by default, and no key is given
    deadline = time.monotonic() + 60
    while container.running():
        assert time.monotonic() < deadline, f"still running without a key:\n{container.logs()}"
        time.sleep(0.2)
    logs = container.logs()
    assert container.state("{{.State.ExitCode}}") != "0", logs
    assert "Traceback" not in logs, logs
    assert [line for line in logs.splitlines() if "RTSERVE_AUTH_HS256_SECRET_FILE" in line], logs


def test_the_kubernetes_base_deployment_plays_with_this_image(image: Image) -> None:
    """The base Deployment's pod spec (command, environment, ports, mounts, read-only root) under
    `podman kube play` with this image: tests/deploy/test_k8s_manifests.py holds the check, which skips
    while no image exists, so it runs here while this module's image does."""
    command = [sys.executable, "-m", "pytest", "tests/deploy/test_k8s_manifests.py", "-k", "podman_kube_play", "-q",
               "-p", "no:cacheprovider"]
    env = {**os.environ, "RTSERVE_K8S_IMAGE": image.name}
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0 and "1 passed" in out.stdout, out.stdout[-4000:] + out.stderr[-2000:]
