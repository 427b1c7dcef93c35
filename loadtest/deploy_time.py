"""Deploy to first answer: from the `rtserve deploy` call to a 200 from every worker, per format.

    python -m loadtest.deploy_time                 # 2 workers, every format, small models (under 1 MB)
    python -m loadtest.deploy_time --workers 1 --formats skops,onnx

Starts its own server (a fresh BentoML store, no configured model, auth on, formats that run code
allowed), makes each model with the tests' makers (tests/models/makers.py: iris, wine, breast cancer),
and for each: runs the CLI as a user would (a new process, the upload, the probe load, the load in
every worker), then sends inference requests on new connections until `--answers` in a row are 200
(the deploy answers once every worker serves the version, so the first 200 is every worker's).
Prints one row per format: the CLI's wall time, the server's import (probe included) and load
seconds, and the time to the first 200s; the machine's load average beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from gateway.auth import AuthSettings
from gateway.tokens import mint
from loadtest.servers import BIN, ROOT, Server


def formats(folder: Path) -> dict[str, tuple[Callable[[], tuple[Path, np.ndarray]], list[str]]]:
    """format -> (make the model: the path to deploy and rows to send, the deploy's extra arguments)."""
    from tests.models import makers

    def made(maker: Callable[[Path], makers.Made], deploy_folder: bool = False) -> Callable[[], tuple[Path, np.ndarray]]:
        def make() -> tuple[Path, np.ndarray]:
            sub = folder / maker.__name__
            sub.mkdir()
            m = maker(sub)
            return (sub if deploy_folder else m.path), m.x
        return make

    def bentoml_sklearn() -> tuple[Path, np.ndarray]:
        import bentoml
        from sklearn.datasets import load_wine
        from sklearn.linear_model import LogisticRegression

        x_tr, x_te, y_tr, _ = makers.split(load_wine)
        saved = bentoml.sklearn.save_model("deploy-time-wine", LogisticRegression(max_iter=2000).fit(x_tr, y_tr))
        return Path(f"bentoml:{saved.tag}"), x_te[:4]

    return {
        "skops": (made(makers.iris_skops), []),
        "xgboost": (made(makers.cancer_xgboost), []),
        "lightgbm": (made(makers.wine_lightgbm), []),
        "onnx": (made(makers.iris_onnx), []),
        "torchscript": (made(makers.iris_torchscript, deploy_folder=True), ["--allow-code"]),
        "pt2": (made(makers.wine_pt2), ["--allow-code"]),
        "bentoml-sklearn": (bentoml_sklearn, ["--allow-code"]),
    }


def size_of(path: Path) -> int:
    if str(path).startswith("bentoml:"):
        import bentoml

        path = Path(bentoml.models.get(str(path)[len("bentoml:"):]).path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def infer_body(meta: dict, x) -> dict:
    arrays = x if isinstance(x, dict) else {meta["inputs"][0]["name"]: x}
    return {"inputs": [{"name": n, "datatype": "FP32", "shape": list(a.shape), "data": np.asarray(a).ravel().tolist()}
                       for n, a in arrays.items()]}


def measure(server: Server, env: dict[str, str], headers: dict[str, str], name: str, source: Path, extra: list[str],
            x, answers: int) -> dict:
    started = time.perf_counter()
    r = subprocess.run([str(BIN / "rtserve"), "deploy", name, str(source), *extra], env=env, capture_output=True,
                       text=True, check=False, cwd=ROOT)
    cli_s = time.perf_counter() - started
    if r.returncode != 0:
        return {"format": name, "error": r.stderr.strip().splitlines()[-1]}
    audit = httpx.get(f"{server.url}/admin/audit?model={name}&limit=5", headers=headers).json()
    detail = next(e["detail"] for e in audit if e["action"] == "deploy")
    meta = httpx.get(f"{server.url}/v2/models/{name}", headers=headers).json()
    body = infer_body(meta, x)
    ok = 0
    while ok < answers:  # a new connection each: the workers take turns
        status = httpx.post(f"{server.url}/v2/models/{name}/infer", json=body, headers=headers).status_code
        ok = ok + 1 if status == 200 else 0
    return {"format": name, "cli_s": round(cli_s, 2), "first_answers_s": round(time.perf_counter() - started, 2),
            "server": detail.split(", ", 1)[1], "bytes": size_of(source)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--formats", help="comma-separated (default: all)")
    p.add_argument("--answers", type=int, default=8, help="200s in a row, each on a new connection")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rtserve-deploy-time-"))
    os.environ["BENTOML_HOME"] = str(tmp / "bentoml")
    (tmp / "bentoml").mkdir()
    secret = tmp / "jwt-secret"
    secret.write_text(secrets.token_hex(32))
    config = tmp / "serving.yaml"
    config.write_text("defaults:\n  max_latency_ms: 5000\nmodels: {}\n")
    env = {"BENTOML_HOME": str(tmp / "bentoml"), "REDIS_URL": "", "RTSERVE_WORKERS": str(a.workers),
           "RTSERVE_CONFIG": str(config), "RTSERVE_AUTH_ENABLED": "true", "RTSERVE_AUTH_HS256_SECRET_FILE": str(secret),
           "RTSERVE_IMPORT_ALLOW_CODE_FORMATS": "true", "RTSERVE_ROUTING_STATE_FILE": str(tmp / "routes.json"),
           "PYTHONPATH": str(ROOT)}
    server = Server("rtserve", [str(BIN / "bentoml"), "serve", "--host", "127.0.0.1", "--port", "{port}"],
                    "/v2/health/ready", env, tmp / "serve.log")
    headers = {"Authorization": f"Bearer {mint(AuthSettings(hs256_secret_file=secret), subject='deploy-time', scopes='predict admin', tenant='t', ttl_s=3600)}"}
    server.start()
    try:
        server.wait_until(lambda r: r.status_code == 200, "/admin/models", 60, headers=headers)
        cli_env = {**os.environ, **env, "RTSERVE_URL": server.url}
        chosen = formats(tmp)
        for fmt, (make, extra) in chosen.items():
            if a.formats and fmt not in a.formats.split(","):
                continue
            source, x = make()
            row = measure(server, cli_env, headers, fmt, source, extra, x, a.answers)
            print(json.dumps({**row, "load_average": round(os.getloadavg()[0], 1)}), flush=True)
    finally:
        server.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
