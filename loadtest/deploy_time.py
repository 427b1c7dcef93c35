"""Deploy to first answer: from the `rtserve deploy` call to a 200 from every worker, per format.

    python -m loadtest.deploy_time                 # 2 workers, every format, small models (under 1 MB)
    python -m loadtest.deploy_time --workers 1 --formats skops,onnx

Starts its own server (a fresh BentoML store, no configured model, auth on, formats that run code
allowed), makes each model with the tests' makers (tests/models/makers.py: iris, wine, breast cancer),
and for each: runs the CLI as a user would (a new process, the upload, the probe load, the load in
every worker), then sends inference requests on new connections until `--answers` in a row are 200
(the deploy answers once every worker serves the version, so the first 200 is every worker's).
Prints one row per format and round: the CLI's wall time, the server's import (probe included) and load
seconds, the time to the first 200 and to `--answers` of them, and the CPU seconds each side spent (the
CLI process; the server's workers and probe processes together), which an idle machine would need about
as wall time; the machine's load average beside them. The first deploy waits until the server is idle: the
probe's fork server has imported the frameworks in the background by then (RTSERVE_IMPORT_PROBE_WARM_FRAMEWORKS).
Round 1 is each framework's first deploy (each worker imports it then); later rounds deploy the same format
again as a new model.

    python -m loadtest.deploy_time --rounds 2 --at-ready    # the first deploy as soon as the server is ready
    python -m loadtest.deploy_time --rounds 2 --preload     # every framework imported by the workers too
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import psutil

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


def cpu_s(proc: psutil.Process) -> float:
    """CPU seconds of a process tree: each live process's own, and those of the children it waited for."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def settle(tree: psutil.Process, window_s: float = 2.0, limit_s: float = 300.0) -> None:
    """Wait until the server is idle (its preloading done): under 10 % of a core over `window_s`."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = cpu_s(tree)
        time.sleep(window_s)
        if cpu_s(tree) - before < 0.1 * window_s:
            return


def measure(server: Server, env: dict[str, str], headers: dict[str, str], name: str, source: Path, extra: list[str],
            x, answers: int) -> dict:
    assert server.proc is not None
    tree = psutil.Process(server.proc.pid)
    server_cpu, cli_cpu = cpu_s(tree), resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    r = subprocess.run([str(BIN / "rtserve"), "deploy", name, str(source), *extra], env=env, capture_output=True,
                       text=True, check=False, cwd=ROOT)
    cli_s = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        return {"format": name, "error": r.stderr.strip().splitlines()[-1]}
    audit = httpx.get(f"{server.url}/admin/audit?model={name}&limit=5", headers=headers).json()
    detail = next(e["detail"] for e in audit if e["action"] == "deploy")
    meta = httpx.get(f"{server.url}/v2/models/{name}", headers=headers).json()
    body = infer_body(meta, x)
    ok, first = 0, None
    while ok < answers:  # a new connection each: the workers take turns
        status = httpx.post(f"{server.url}/v2/models/{name}/infer", json=body, headers=headers).status_code
        ok = ok + 1 if status == 200 else 0
        first = first or (time.perf_counter() - started if status == 200 else None)
    return {"format": name, "cli_s": round(cli_s, 2), "first_answer_s": round(first or 0.0, 2),
            "first_answers_s": round(time.perf_counter() - started, 2),
            "server": detail.split(", ", 1)[1], "bytes": size_of(source),
            "cli_cpu_s": round(after.ru_utime + after.ru_stime - cli_cpu.ru_utime - cli_cpu.ru_stime, 2),
            "server_cpu_s": round(cpu_s(tree) - server_cpu, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--formats", help="comma-separated (default: all)")
    p.add_argument("--answers", type=int, default=8, help="200s in a row, each on a new connection")
    p.add_argument("--rounds", type=int, default=1, help="deploys of each format, each as a new model")
    p.add_argument("--preload", action="store_true",
                   help="every framework imported by the workers and the probe's fork server when the server starts "
                        "(RTSERVE_IMPORT_PRELOAD_FRAMEWORKS)")
    p.add_argument("--at-ready", action="store_true",
                   help="deploy as soon as the server is ready, while the probe's fork server still imports the "
                        "frameworks in the background (by default the server settles first)")
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
           "PYTHONPATH": str(ROOT), "RTSERVE_GRPC_ENABLED": "false",
           "RTSERVE_IMPORT_PRELOAD_FRAMEWORKS": json.dumps(["sklearn", "xgboost", "lightgbm", "onnx", "pytorch"]
                                                           if a.preload else [])}
    server = Server("rtserve", [str(BIN / "bentoml"), "serve", "--host", "127.0.0.1", "--port", "{port}"],
                    "/v2/health/ready", env, tmp / "serve.log")
    headers = {"Authorization": f"Bearer {mint(AuthSettings(hs256_secret_file=secret), subject='deploy-time', scopes='predict admin', tenant='t', ttl_s=3600)}"}
    server.start()
    try:
        server.wait_until(lambda r: r.status_code == 200, "/admin/models", 60, headers=headers)
        if not a.at_ready:
            settle(psutil.Process(server.proc.pid))
        cli_env = {**os.environ, **env, "RTSERVE_URL": server.url}
        for round_ in range(1, a.rounds + 1):
            folder = tmp / f"round-{round_}"
            folder.mkdir()
            for fmt, (make, extra) in formats(folder).items():
                if a.formats and fmt not in a.formats.split(","):
                    continue
                source, x = make()
                row = measure(server, cli_env, headers, f"{fmt}-{round_}", source, extra, x, a.answers)
                print(json.dumps({"round": round_, **row, "load_average": round(os.getloadavg()[0], 1)}), flush=True)
    finally:
        server.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
