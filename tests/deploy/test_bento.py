"""`bentoml build` is repeatable and the Bento holds exactly the code, config and models that ship.

The store (`.bentoml/`, the project's BENTOML_HOME) lies inside the build context, where BentoML
also keeps the temporary folder of the build in progress; builds here run in a copy of the project
with its store inside it, a stale folder left by an interrupted build, and generated files planted
where a loose pattern would pick them up.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import yaml

from tests.deploy.bentos import GPU_BENTOFILE, ROOT, build, expected_src, fetch_torch_wheel, shipped_code

BENTOFILE = ROOT / "bentofile.yaml"
CUDA_STACK = re.compile(r"^(nvidia-(?!ml-py)|cuda-|triton==)", re.MULTILINE)
"""The CUDA stack PyPI's torch pulls in; nvidia-ml-py (NVML bindings, from bentoml) is not part of it."""


def test_bentofile_ships_what_pyproject_ships() -> None:
    shipped = shipped_code(ROOT)
    for bentofile in (BENTOFILE, GPU_BENTOFILE):
        includes = yaml.safe_load(bentofile.read_text())["include"]
        assert all(i.startswith("/") for i in includes), "every include is anchored to the build context"
        code = sorted(i for i in includes if i != "/serving.yaml" and not i.startswith("/wheels/"))
        assert code == sorted(
            [f"/{p}/**/*.py" for p in shipped.packages] + [f"/{m}.py" for m in shipped.modules] + [f"/{d}" for d in shipped.data]
        ), bentofile


def test_gpu_bentofile_differs_from_the_cpu_one_only_in_torch() -> None:
    cpu = yaml.safe_load(BENTOFILE.read_text())
    gpu = yaml.safe_load(GPU_BENTOFILE.read_text())
    assert gpu["name"] == "rtserve-gpu" and gpu["labels"]["device"] == "gpu"
    assert "torch==2.13.0" in gpu["python"]["packages"] and "find_links" not in gpu["python"]
    # The GPU file turned back into the CPU one: what is left must be identical.
    gpu["name"], gpu["labels"]["device"] = cpu["name"], "cpu"
    gpu["include"].append(next(i for i in cpu["include"] if i.startswith("/wheels/")))
    gpu["python"] = {"find_links": cpu["python"]["find_links"], **gpu["python"]}
    gpu["python"]["packages"] = [p.replace("torch==2.13.0", "torch==2.13.0+cpu") for p in gpu["python"]["packages"]]
    gpu["envs"] = [e for e in gpu["envs"] if not e["name"].startswith("NVIDIA_")]
    assert gpu == cpu


def _project_copy(dest: Path) -> Path:
    """The working tree as a user has it, without version control and virtual environments."""
    shutil.copytree(ROOT, dest, symlinks=True, ignore=shutil.ignore_patterns(".git", ".venv*", ".bentoml", "wheels"))
    (dest / "wheels").mkdir()
    for wheel in (ROOT / "wheels").glob("*.whl"):
        os.link(wheel, dest / "wheels" / wheel.name)
    return dest


def _plant(ctx: Path, relpath: str, text: str = "x = 1\n") -> None:
    path = ctx / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_builds_in_a_row_hold_exactly_what_ships(model_store, tmp_path) -> None:
    fetch_torch_wheel(BENTOFILE)
    ctx = _project_copy(tmp_path / "project")
    home = ctx / ".bentoml"
    home.mkdir()
    (home / "models").symlink_to(Path(os.environ["BENTOML_HOME"]) / "models")
    # What an interrupted build leaves in the store, and what development leaves around the code.
    stale = home / "tmp" / "bentoml_bento_rtserve_interrupted"
    shutil.copytree(ctx / "gateway", stale / "src" / "gateway")
    for relpath in ("service.py", "serving.yaml", "bentofile.yaml"):
        shutil.copy(ctx / relpath, stale / "src" / relpath)
    _plant(ctx, ".dev/jwt-secret", "not for the Bento\n")
    _plant(ctx, ".rtserve/routes.json", "{}\n")
    _plant(ctx, "loadtest/results/bench.json", "{}\n")
    _plant(ctx, ".venv-extra/lib/gateway/http.py")
    _plant(ctx, "build/lib/gateway/http.py")
    _plant(ctx, "gateway/__pycache__/http.cpython-311.py")
    _plant(ctx, ".pytest_cache/v/cache/service.py")

    first = build(ctx, home)
    second = build(ctx, home)

    expected = expected_src(ctx, ctx / "bentofile.yaml")
    models = sorted(yaml.safe_load(BENTOFILE.read_text())["models"])
    for bento in (first, second):
        assert bento.src_files() == expected
        assert bento.model_tags() == models
    assert first.tag != second.tag
    lock = second.lock.read_text()
    assert re.search(r"^torch==2\.13\.0\+cpu$", lock, re.MULTILINE), "the lock names the carried CPU wheel"
    assert not CUDA_STACK.findall(lock), "the CPU Bento's lock holds no CUDA stack"
    dockerfile = second.dockerfile.read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "COPY --chown=bentoml:bentoml ./src/wheels ./src/wheels" in dockerfile, "the wheel is there before the install"
