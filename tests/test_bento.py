"""`bentoml build` makes a Bento with the code, the config and every demo model."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.helpers import BENTOML, ROOT


def test_bento_build_includes_code_and_models(model_store):
    out = subprocess.run([BENTOML, "build", "--output", "tag"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    tag = out.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    info = json.loads(subprocess.run([BENTOML, "get", tag, "-o", "json"], capture_output=True, text=True, check=True).stdout)
    expected = yaml.safe_load((ROOT / "bentofile.yaml").read_text())["models"]
    assert sorted(m["tag"] for m in info["models"]) == sorted(expected)
    path = Path(subprocess.run([BENTOML, "get", tag, "-o", "path"], capture_output=True, text=True, check=True).stdout.strip())
    for name in ("src/service.py", "src/serving.yaml", "src/runners/batcher.py", "src/gateway/http.py", "env/docker/Dockerfile"):
        assert (path / name).is_file(), name
    assert not (path / "src/tests").exists()
    dockerfile = (path / "env/docker/Dockerfile").read_text()
    assert "python3.11" in dockerfile or "3.11" in dockerfile
