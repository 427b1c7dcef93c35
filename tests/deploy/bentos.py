"""Bentos for the deploy tests: build one, read what it holds, and check a served one answers.

What a Bento's `src/` must hold is derived from pyproject.toml (the packages and modules that
ship) and the bentofile (the wheel it carries), so it stays true as packages come and go.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import tritonclient.http as triton
import yaml

ROOT = Path(__file__).resolve().parents[2]
BENTOML = str(Path(sys.executable).parent / "bentoml")
CONTAINER_DIR = ROOT / "deploy" / "container"
GPU_BENTOFILE = CONTAINER_DIR / "bentofile.gpu.yaml"


@dataclass(frozen=True)
class Bento:
    tag: str
    path: Path
    seconds: float

    @property
    def lock(self) -> Path:
        return self.path / "env" / "python" / "requirements.txt"

    @property
    def dockerfile(self) -> Path:
        return self.path / "env" / "docker" / "Dockerfile"

    def src_files(self) -> set[str]:
        src = self.path / "src"
        return {p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()}

    def model_tags(self) -> list[str]:
        info = yaml.safe_load((self.path / "bento.yaml").read_text())
        return sorted(m["tag"] for m in info["models"])


def torch_pin(bentofile: Path) -> str:
    """The version after `torch==` in the bentofile's packages."""
    packages = yaml.safe_load(bentofile.read_text())["python"]["packages"]
    return next(p.removeprefix("torch==") for p in packages if p.startswith("torch=="))


def fetch_torch_wheel(bentofile: Path) -> None:
    """What `make bento` does first: put the torch wheel the bentofile carries into ./wheels."""
    subprocess.run([str(CONTAINER_DIR / "fetch-torch-wheel.sh"), str(bentofile)], check=True, timeout=900)


def build(ctx: Path, home: Path, bentofile: Path | None = None) -> Bento:
    """`bentoml build` in `ctx` into the store at `home`, as `make bento` runs it."""
    # No serving settings: the build imports service.py, which validates the configuration only when it serves.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTSERVE_")}
    env |= {"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    cmd = [BENTOML, "build", "--output", "tag", *(["-f", str(bentofile)] if bentofile else []), "."]
    started = time.monotonic()
    out = subprocess.run(cmd, check=False, cwd=ctx, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - started
    assert out.returncode == 0, f"bentoml build failed:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"
    tag = out.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    return Bento(tag, home / "bentos" / name / version, seconds)


@dataclass(frozen=True)
class Shipped:
    """What pyproject.toml ships: top-level packages, single modules, package-data patterns."""

    packages: list[str]
    modules: list[str]
    data: list[str]

    def files(self, root: Path) -> set[str]:
        files = {f"{m}.py" for m in self.modules}
        for package in self.packages:
            files |= {p.relative_to(root).as_posix() for p in (root / package).rglob("*.py") if "__pycache__" not in p.parts}
        for pattern in self.data:
            files |= {p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file()}
        return files


def shipped_code(root: Path) -> Shipped:
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = setuptools["packages"]["find"]["include"]
    packages = sorted(
        d.name for d in root.iterdir() if (d / "__init__.py").is_file() and any(fnmatch.fnmatch(d.name, p) for p in patterns)
    )
    data = sorted(f"{package}/{pattern}" for package, globs in setuptools.get("package-data", {}).items() for pattern in globs)
    return Shipped(packages, sorted(setuptools.get("py-modules", [])), data)


def expected_src(root: Path, bentofile: Path) -> set[str]:
    """Exactly what the Bento built from `root` must hold in src/: the shipped code and package data,
    the serving config, the bentofile BentoML writes there, and the torch wheel the bentofile carries."""
    files = shipped_code(root).files(root) | {"serving.yaml", "bentofile.yaml"}
    pin = torch_pin(bentofile)
    if "+" in pin:
        wheels = sorted((root / "wheels").glob(f"torch-{pin}-*.whl"))
        assert len(wheels) == 1, f"one torch {pin} wheel expected in wheels/, found {wheels}"
        files.add(f"wheels/{wheels[0].name}")
    return files


def wait_ready(url: str, alive: Callable[[], bool], describe: Callable[[], str], timeout: float) -> float:
    """Poll `url` until it answers 200; the seconds it took. Fails at once when the server died."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not alive():
            raise AssertionError(f"server exited before it was ready:\n{describe()}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready after {timeout} s:\n{describe()}")


def assert_every_model_answers(base_url: str, token: str, model_versions: dict[str, list[str]]) -> None:
    """Every configured version answers an OIP infer through tritonclient, with accurate labels:
    the models are the real ones, not merely loaded."""
    from demo.data import digits, sequences

    client = triton.InferenceServerClient(base_url.removeprefix("http://"))
    headers = {"Authorization": f"Bearer {token}"}
    split = digits()
    tokens, token_labels = sequences(64, seed=11)
    for name, versions in model_versions.items():
        for version in versions:
            spec = client.get_model_metadata(name, version, headers=headers)["inputs"][0]
            if spec["datatype"] == "INT64":
                x, y = tokens, token_labels
            else:
                x, y = split.x_test[:64].reshape([-1, *spec["shape"][1:]]).astype(np.float32), split.y_test[:64]
            inp = triton.InferInput(spec["name"], list(x.shape), spec["datatype"])
            inp.set_data_from_numpy(x)
            result = client.infer(name, [inp], model_version=version, headers=headers)
            accuracy = float(np.mean(result.as_numpy("label") == y))
            assert accuracy >= 0.9, f"{name}:{version} accuracy {accuracy}"
            assert result.get_response()["model_version"] == version


def serving_models(root: Path) -> dict[str, list[str]]:
    """Model name -> versions, as serving.yaml configures them."""
    return {name: spec["versions"] for name, spec in yaml.safe_load((root / "serving.yaml").read_text())["models"].items()}
