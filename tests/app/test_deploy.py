"""`rtserve deploy` against a real two-worker server: each format uploaded through the CLI (the README's
commands, as written), served by every worker without a restart, answering over REST what its framework
answers; the Python client; refusals leave nothing loaded and other models answering.

Tolerances: probabilities, scores and tensors within 1e-5 absolute, regression predictions within 1e-5
relative, labels equal (tests/models/test_formats.py `assert_same`). One server (tests/app/conftest.py `deploys`, shared
with `rtserve optimize`'s tests), serving one demo model, with formats that run code allowed (each deploy still asks with --allow-code), a 4 MiB upload limit.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import numpy as np

from app import client
from tests.app.conftest import UPLOAD_LIMIT
from tests.helpers import ROOT
from tests.models import makers
from tests.models.test_formats import assert_same

README = ROOT / "README.md"


def test_python_client_a_second_version_on_a_canary(deploys, cli, tmp_path):
    """deploy_model and deploy_canary (the server and key from the environment `cli` sets)."""
    made = makers.iris_skops(tmp_path)
    doc = client.deploy_model("dp-py", made.path)
    assert doc["version"] == "v1" and doc["routes"]["weights"] == {"v1": 100.0}
    assert doc["metadata"]["format"] == "skops" and doc["import_seconds"] > 0 and doc["load_seconds"] > 0
    doc = client.deploy_canary("dp-py", made.path, "v2", 10, steps=[10, 100])
    assert doc["routes"]["canary"]["steps"] == [10.0, 100.0] and doc["routes"]["weights"] == {"v1": 90.0, "v2": 10.0}
    assert_same(deploys.infer("dp-py", made.x), made.expected)


def test_a_model_from_the_local_bentoml_store_and_a_second_version_by_weight(deploys, cli, tmp_path):
    import bentoml
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    x_tr, x_te, y_tr, _ = makers.split(load_breast_cancer)
    model = LogisticRegression(max_iter=5000).fit(x_tr, y_tr)
    saved = bentoml.sklearn.save_model("dp-cancer-local", model)
    status, out, err = cli("deploy", "dp-bento", f"bentoml:{saved.tag}", "--allow-code")
    assert status == 0, err
    assert_same(deploys.infer("dp-bento", x_te[:10]),
                {"probabilities": model.predict_proba(x_te[:10]), "label": model.predict(x_te[:10])})
    status, out, err = cli("deploy", "dp-bento", f"bentoml:{saved.tag}", "--allow-code", "--weight", "20")
    assert status == 0, err
    assert "dp-bento:v2 served" in out and "{'v1': 80.0, 'v2': 20.0}" in out
    audit = httpx.get(f"{deploys.server.url}/admin/audit?model=dp-bento", headers=deploys.headers).json()
    deployed = [e for e in audit if e["action"] == "deploy"]
    assert audit[0]["action"] == "weights" and len(deployed) == 2
    assert [e["action"] for e in audit] == ["weights", "deploy", "deploy"]  # a deploy is one line, its load no other
    assert deployed[0]["who"] == "rtserve-cli" and "v2 from dp-cancer-local (pickle)" in deployed[0]["detail"]


def tar_with(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_refusals_are_4xx_and_leave_nothing_loaded(deploys, cli, tmp_path):
    iris = makers.iris_skops(tmp_path)
    cases = []
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07not an onnx graph" * 10)
    cases.append(("dp-bad-onnx", corrupt, [], "422"))
    pickled = makers.diabetes_ridge(tmp_path, "joblib").path
    cases.append(("dp-bad-pickle", pickled, [], "403"))
    big = tmp_path / "big.onnx"
    big.write_bytes(b"\0" * (UPLOAD_LIMIT + 1))
    cases.append(("dp-bad-big", big, [], "413"))
    escape = tmp_path / "escape.tar"
    escape.write_bytes(tar_with({"../iris.skops": iris.path.read_bytes()}))
    cases.append(("dp-bad-tar", escape, [], "422"))
    for name, source, extra, status in cases:
        code, _, err = cli("deploy", name, source, "--version", "v1", *extra)
        assert code == 2 and f"rtserve: {status} " in err, (name, err)
        assert deploys.served_versions(name) == []
    code, _, err = cli("deploy", "../etc", iris.path, "--version", "v1")  # refused by the client
    assert code == 2 and "model name '../etc' is not allowed" in err
    with iris.path.open("rb") as f:  # and by the server
        r = httpx.put(f"{deploys.server.url}/admin/models/dp%5Cetc/versions/v1", files={"model": ("iris.skops", f)},
                      headers=deploys.headers)
    assert r.status_code == 422 and "not allowed" in r.json()["error"]
    r = httpx.put(f"{deploys.server.url}/admin/models/dp-x/versions/v1", content=b"x", headers=deploys.headers)
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]
    assert deploys.infer("digits-sklearn", np.zeros((1, 64), np.float32))["label"].shape == (1,)  # others still answer


def test_a_models_own_batching_a_budget_one_call_cannot_meet_and_a_bad_value(deploys, cli, tmp_path):
    """The model.yaml's batching settings are in the answer; a budget under one call's cost loads with a warning
    that the answer, `rtserve models` and the CLI show; a bad value is a 422 naming the field, and loads nothing."""
    made = makers.iris_skops(tmp_path)
    config = tmp_path / "model.yaml"
    config.write_text("batching: {max_latency_ms: 0.001, max_batch_size: 8}\n")
    doc = client.deploy_model("dp-budget", made.path, config=config)
    assert doc["metadata"]["batch_settings"] == {"max_latency_ms": 0.001, "max_batch_size": 8}
    assert "over its max_latency_ms of 0.001 ms" in doc["warning"] and "refused (503)" in doc["warning"]
    versions = httpx.get(f"{deploys.server.url}/admin/models", headers=deploys.headers).json()["dp-budget"]["versions"]
    assert versions["v1"]["warning"] == doc["warning"]
    assert f"warning: {doc['warning']}" in cli("models")[1]
    code, out, err = cli("deploy", "dp-budget", made.path, "--config", config)
    assert code == 0 and "warning: one call of its smallest warm-up batch took" in out, err
    config.write_text("batching: {max_latency_ms: -5}\n")
    code, _, err = cli("deploy", "dp-budget-bad", made.path, "--config", config)
    assert code == 2 and "rtserve: 422 " in err and "batching.settings.max_latency_ms" in err, err
    assert deploys.served_versions("dp-budget-bad") == []


def readme_commands() -> list[str]:
    """The commands of the README's "Serve your own model" section, as written."""
    section = README.read_text().split("## Serve your own model", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.startswith("rtserve deploy ")]


def test_the_readme_commands_run_as_written(deploys, cli, tmp_path):
    """Every format: the files the README's commands name, made here from iris, wine and breast cancer; each
    command run by a shell as written; then each model's REST answers, from both workers, equal its framework's."""
    import bentoml
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    (tmp_path / "iris_mlp").mkdir()
    x, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=500).fit(x, y)
    bentoml.sklearn.save_model("iris-clf", clf)
    x_clf = x[:10].astype(np.float32)
    made = {
        "iris": makers.iris_skops(tmp_path),
        "cancer": makers.cancer_xgboost(tmp_path),
        "wine": makers.wine_lightgbm(tmp_path),
        "two": makers.iris_onnx_two_by_two(tmp_path),
        "iris-mlp": makers.iris_torchscript(tmp_path / "iris_mlp"),
        "wine-net": makers.wine_pt2(tmp_path),
        "iris-clf": makers.Made(Path(), x_clf, {"probabilities": clf.predict_proba(x_clf), "label": clf.predict(x_clf)}),
    }
    commands = readme_commands()
    assert [shlex.split(line)[2] for line in commands] == list(made)
    env = {**os.environ, **deploys.env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    for line in commands:
        r = subprocess.run(["bash", "-c", line], check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{line}\n{r.stderr}"
    for name, m in made.items():
        assert_same(deploys.infer(name, m.x), m.expected)
    out = cli("models")[1]
    assert re.search(r"\niris  from runtime .*\n  v1 .*source deploy iris.skops", out), out
