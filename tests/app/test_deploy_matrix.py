"""The format x entry-path matrix: every model of the own-model path deployed through every entry path that can
carry it, into one real server (two workers, auth on, Redis, formats that run code allowed by the operator), and
each deployment answering every way a client asks exactly what its framework answers.

Entry paths: `rtserve deploy` (a real subprocess), tritonclient HTTP and gRPC `load_model(config=, files=)`, a
model saved by BentoML's own saver deployed as `bentoml:TAG`, and `app.client.deploy_model`. Ways of asking:
REST JSON, REST binary (tritonclient http), gRPC (tritonclient grpc), `/predict`, a batch job (JSON rows, and an
`.npy`/`.npz` upload for numeric models) and an NDJSON stream. A format that runs code when loaded is also
refused (403) on the same path when the deploy does not ask for it.

Tolerances, per output kind (tests/models/test_formats.py `assert_same`): labels exactly; probabilities, scores
and tensors within 1e-5 absolute (served as FP32); regression predictions within 1e-5 relative (FP32).

Each deploy costs a probe load (a Python process that opens the file), so every deployment is made once, all of
them in parallel at the start, and each cell infers its own deployment every way. Each test records its cell
in build/deploy-matrix.json; `python -m tests.app.deploy_matrix_table` prints the table from it.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from gateway.auth import AuthSettings
from gateway.tokens import mint
from tests.app.deploy_matrix_table import PATHS, RESULTS
from tests.helpers import ROOT, ServerProcess, forget_prefix, gateway_env, new_prefix, new_secret
from tests.models import makers
from tests.models.test_formats import assert_same

pytestmark = pytest.mark.timeout(1800)  # the first cell waits for every deploy: minutes on a loaded machine

RTSERVE = str(Path(sys.executable).parent / "rtserve")
IRIS = "setosa,versicolor,virginica"
LABELS_EXACT = "labels exact"
PROBS = f"probabilities atol 1e-5, {LABELS_EXACT}"
TENSORS = "tensors atol 1e-5"
REGRESSION = "predictions rtol 1e-5"


@dataclass
class Case:
    """One format (a row of the table): how it is made, and what each entry path sends for it."""

    title: str
    make: Callable[[Path], makers.Made] | dict[str, Callable[[Path], makers.Made]]
    """The model, or one per entry path (several data sets of one format share a row)."""
    tolerance: str
    code: bool = False
    """Runs code when loaded: every path needs the deploy's consent (--allow-code, allow_code)."""
    deploy_args: Callable[[makers.Made], list[str]] = lambda made: [str(made.path)]
    """What `rtserve deploy NAME ...` gets after the name (the Python client gets the same)."""
    triton: dict[str, Any] | None = None
    """The load's config, sent with the model's file as file:1/<triton_file>; None: the refusal in `triton_refused`."""
    triton_file: str = ""
    triton_refused: tuple[str, str, str] | None = None
    """(HTTP status, gRPC status, words of the message) when Triton's load cannot carry this format."""
    bento: Callable[[makers.Made, str, Path], tuple[str, list[str], dict[str, np.ndarray] | None]] | None = None
    """Saves the model with BentoML's own saver: (tag, extra deploy args, expected outputs when not the file's)."""
    bento_code: bool = False
    """BentoML's save of it is a pickle: consent needed even when the file's format needs none."""


def _triton_config(parameters: dict[str, str] | None = None, batch: int = 16, inputs: list | None = None, **config: Any) -> dict:
    """A Triton model config: platform or backend in `config`, string parameters, the inputs when declared."""
    out: dict[str, Any] = {"max_batch_size": batch, **config}
    if inputs:
        out["input"] = inputs
    if parameters:
        out["parameters"] = {k: {"string_value": v} for k, v in parameters.items()}
    return out


def _sklearn_saver(made: makers.Made, name: str, tmp: Path):
    import bentoml

    return str(bentoml.sklearn.save_model(name, made.model).tag), ["--allow-code"], None


def _xgboost_saver(made: makers.Made, name: str, tmp: Path):
    import bentoml
    import xgboost as xgb

    from models.formats.boosters import alias_xgboost_cpu

    alias_xgboost_cpu()  # BentoML's saver asks for the `xgboost` distribution by name
    return str(bentoml.xgboost.save_model(name, xgb.Booster(model_file=str(made.path))).tag), [], None


def _lightgbm_saver(made: makers.Made, name: str, tmp: Path):
    import bentoml
    import lightgbm as lgb

    return str(bentoml.lightgbm.save_model(name, lgb.Booster(model_file=str(made.path))).tag), [], None


def _onnx_saver(made: makers.Made, name: str, tmp: Path):
    import bentoml
    import onnx

    return str(bentoml.onnx.save_model(name, onnx.load(str(made.path))).tag), [], None


def _torchscript_saver(with_sample: bool):
    def save(made: makers.Made, name: str, tmp: Path):
        import bentoml
        import torch

        tag = str(bentoml.torchscript.save_model(name, torch.jit.load(str(made.path))).tag)
        extra = ["--sample", str(made.path.parent / "sample.npy")] if with_sample else ["--config", str(made.path.parent / "model.yaml")]
        return tag, ["--allow-code", *extra], None

    return save


def _pytorch_saver(made: makers.Made, name: str, tmp: Path):
    """The .pt2's network itself through bentoml.pytorch (a pickle), its output named as the program's."""
    import bentoml

    config = tmp / f"{name}.yaml"
    config.write_text("inputs:\n  - {name: input, datatype: FP32, shape: [-1, 13]}\n"
                      "outputs:\n  - {name: output, datatype: FP32, shape: [-1, 3]}\n")
    return str(bentoml.pytorch.save_model(name, made.model).tag), ["--allow-code", "--config", str(config)], None


def _torchscript_folder(folder: Path) -> makers.Made:
    """An MLP in TorchScript with its model.yaml beside it, in a folder of its own."""
    (folder / "iris_mlp").mkdir()
    return makers.iris_torchscript(folder / "iris_mlp")


def _torchscript_sample(folder: Path) -> makers.Made:
    """The same MLP with no model.yaml: a sample input says its input; the raw logits are served."""
    import torch

    (folder / "iris_ts").mkdir()
    made = makers.iris_torchscript(folder / "iris_ts")
    (folder / "iris_ts" / "model.yaml").unlink()
    np.save(folder / "iris_ts" / "sample.npy", made.x[:3])
    net = torch.jit.load(str(made.path))
    with torch.inference_mode():
        logits = net(torch.from_numpy(made.x)).numpy()
    return makers.Made(made.path, made.x, {"output_0": logits})


TS_CONFIG = _triton_config({"allow_code": "true", "task": "classification", "softmax": "true", "class_names": IRIS},
                        platform="pytorch_libtorch", inputs=[{"name": "measurements", "data_type": "TYPE_FP32", "dims": [4]}])
CASES: dict[str, Case] = {
    "text": Case("text classifier, TF-IDF + logistic regression (skops, BYTES input)", makers.text_classifier, PROBS,
                 triton=_triton_config(backend="sklearn"), triton_file="model.skops", bento=_sklearn_saver, bento_code=True),
    "xgboost": Case("XGBoost, breast cancer (.json)", makers.cancer_xgboost, PROBS,
                    triton=_triton_config({"model_type": "xgboost_json"}, backend="fil"), triton_file="xgboost.json",
                    bento=_xgboost_saver),
    "lightgbm": Case("LightGBM, wine (text)", makers.wine_lightgbm, PROBS,
                     triton=_triton_config({"model_type": "lightgbm"}, backend="fil"), triton_file="model.txt",
                     bento=_lightgbm_saver),
    "torchscript": Case("TorchScript MLP, iris, with model.yaml", _torchscript_folder, PROBS, code=True,
                        deploy_args=lambda made: [str(made.path.parent), "--allow-code"],
                        triton=TS_CONFIG, triton_file="model.pt", bento=_torchscript_saver(False)),
    "torchscript-sample": Case("TorchScript MLP, iris, with --sample", _torchscript_sample, TENSORS, code=True,
                               deploy_args=lambda made: [str(made.path), "--allow-code", "--sample",
                                                         str(made.path.parent / "sample.npy")],
                               triton_refused=("422", "StatusCode.INVALID_ARGUMENT", "declare"),
                               triton=_triton_config({"allow_code": "true"}, platform="pytorch_libtorch"),
                               triton_file="model.pt", bento=_torchscript_saver(True)),
    "pt2": Case("torch.export MLP, wine (.pt2)", makers.wine_pt2, TENSORS, code=True,
                deploy_args=lambda made: [str(made.path), "--allow-code"],
                triton=_triton_config({"allow_code": "true", "model_type": "torch_export"}, platform="pytorch"),
                triton_file="model.pt2",
                bento=_pytorch_saver),
    "onnx": Case("ONNX, two inputs and two outputs", makers.iris_onnx_two_by_two, TENSORS,
                 triton=_triton_config(platform="onnxruntime_onnx"), triton_file="model.onnx", bento=_onnx_saver),
    # Each classifier's file goes through some of the paths (a probe load apiece): every path serves the format.
    "skops": Case("scikit-learn classifiers (skops): iris (CLI, Python), wine random forest (HTTP, BentoML), "
                  "breast cancer (gRPC)",
                  {"cli": makers.iris_skops, "python": makers.iris_skops, "http": makers.wine_forest_skops,
                   "bentoml": makers.wine_forest_skops, "grpc": makers.cancer_skops}, PROBS,
                  triton=_triton_config(backend="sklearn"), triton_file="model.skops", bento=_sklearn_saver, bento_code=True),
    "skops-ridge": Case("scikit-learn regression (skops), diabetes, Ridge", makers.diabetes_ridge, REGRESSION,
                        triton=_triton_config(backend="sklearn"), triton_file="model.skops", bento=_sklearn_saver,
                        bento_code=True),
}
CELLS = [(row, path) for row in CASES for path in PATHS]


@dataclass
class Outcome:
    """What one cell's deploy came to: the version served, or the refusal, and what the cell compares with."""

    version: str | None = None
    expected: dict[str, np.ndarray] | None = None
    refused: tuple[str, str] | None = None
    """(status, message) of a refusal."""
    without_consent: tuple[str, str] | None = None
    """(status, message) of the same deploy without consent, for formats that run code."""
    deploy_s: float = 0.0
    error: str | None = None
    """Anything else that went wrong while deploying: the cell fails with it."""
    notes: list[str] = field(default_factory=list)


class Matrix:
    """The server, its clients, and every cell's deploy outcome."""

    def __init__(self, server: ServerProcess, secret_file: Path, tmp: Path) -> None:
        self.server = server
        self.secret_file = secret_file
        self.tmp = tmp
        auth = AuthSettings(hs256_secret_file=secret_file)
        token = mint(auth, subject="matrix", scopes="predict admin batch", tenant="acme", ttl_s=3600)
        self.headers = {"Authorization": f"Bearer {token}"}
        self.http = self._http_client()
        self.grpc = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.env['RTSERVE_GRPC_PORT']}")
        self.rest = httpx.Client(base_url=server.url, headers=self.headers, timeout=120.0)
        self.made: dict[tuple[str, str], makers.Made] = {}
        self.outcomes: dict[tuple[str, str], Outcome] = {}
        self.deploy_wall_s = 0.0
        """Seconds from the first deploy sent to the last answered (all of them in parallel)."""
        self.env = {**os.environ, "RTSERVE_URL": server.url, "RTSERVE_AUTH_HS256_SECRET_FILE": str(secret_file),
                    "PYTHONPATH": str(ROOT)}

    def close(self) -> None:
        self.http.close()
        self.grpc.close()
        self.rest.close()

    # -- entry paths ---------------------------------------------------------------------------------------------

    def cli(self, name: str, args: list[str]) -> tuple[str, str]:
        """`rtserve deploy NAME ARGS` as a user runs it: ('201', out), or (the status it printed, its message)."""
        r = subprocess.run([RTSERVE, "deploy", name, *args], env=self.env, capture_output=True, text=True, timeout=600,
                           check=False)
        if r.returncode == 0:
            return "201", r.stdout
        status = r.stderr.split("rtserve: ", 1)[-1].split(" ", 1)[0]
        return status, r.stderr

    def python(self, name: str, args: list[str]) -> tuple[str, str]:
        """`app.client.deploy_model` with the same source and options as the CLI's arguments."""
        from app.cli_client import CommandError
        from app.client import deploy_model

        options: dict[str, Any] = {"allow_code": "--allow-code" in args}
        for flag, key in (("--sample", "sample"), ("--config", "config")):
            if flag in args:
                options[key] = args[args.index(flag) + 1]
        try:
            doc = deploy_model(name, args[0], **options)
        except CommandError as exc:
            return str(exc).split(" ", 1)[0], str(exc)
        return "201", json.dumps(doc["metadata"])

    def triton(self, protocol: str, name: str, case: Case, made: makers.Made, consent: bool = True) -> tuple[str, str]:
        config = json.loads(json.dumps(case.triton))
        if not consent:
            config.get("parameters", {}).pop("allow_code", None)
        # tritonclient.http runs on gevent, whose client may not be shared between threads: one per load.
        client = self._http_client() if protocol == "http" else self.grpc
        try:
            client.load_model(name, headers=self.auth(protocol), config=json.dumps(config),
                              files={f"file:1/{case.triton_file}": made.path.read_bytes()})
        except InferenceServerException as exc:
            return str(exc.status()), str(exc.message())
        finally:
            if client is not self.grpc:
                client.close()
        return "200", ""

    def _http_client(self) -> triton_http.InferenceServerClient:
        return triton_http.InferenceServerClient(self.server.url.removeprefix("http://"), network_timeout=600.0,
                                                 connection_timeout=600.0)

    def auth(self, protocol: str) -> dict[str, str]:
        return {"authorization": self.headers["Authorization"]} if protocol == "grpc" else dict(self.headers)

    # -- deploying every cell ------------------------------------------------------------------------------------

    def deploy(self, row: str, path: str) -> Outcome:
        case, made = CASES[row], self.made[(row, path)]
        name = f"mx-{row}-{path}"
        out = Outcome(expected=made.expected)
        started = time.perf_counter()
        try:
            if path in ("cli", "python"):
                go = self.cli if path == "cli" else self.python
                args = case.deploy_args(made)
                if case.code:
                    out.without_consent = go(name, [a for a in args if a != "--allow-code"])
                status, message = go(name, args)
                out.version = "v1"
            elif path in ("http", "grpc"):
                if case.code:
                    out.without_consent = self.triton(path, name, case, made, consent=False)
                status, message = self.triton(path, name, case, made)
                out.version = "1"
            else:
                assert case.bento is not None
                tag, extra, expected = case.bento(made, f"{name}-saved", self.tmp)
                if expected is not None:
                    out.expected = expected
                if case.code or case.bento_code:
                    out.without_consent = self.cli(name, [f"bentoml:{tag}", *(a for a in extra if a != "--allow-code")])
                status, message = self.cli(name, [f"bentoml:{tag}", *extra])
                out.version = "v1"
                import bentoml

                out.notes.append(bentoml.models.get(tag).info.module)  # the saver: bentoml.sklearn, ...
        except Exception as exc:  # noqa: BLE001 - the cell reports it
            out.error = f"{type(exc).__name__}: {exc}"
            return out
        out.deploy_s = time.perf_counter() - started
        if status not in ("200", "201"):
            out.refused, out.version = (status, message), None
        return out


@pytest.fixture(scope="module")
def matrix(model_store, tmp_path_factory) -> Iterator[Matrix]:
    tmp = tmp_path_factory.mktemp("deploy-matrix")
    secret = new_secret(tmp)
    prefix = new_prefix("rtserve-test")
    config = tmp / "serving.yaml"  # one demo model: a fast start
    config.write_text("defaults:\n  max_latency_ms: 5000\nmodels:\n  digits-sklearn:\n    versions: [v1]\n    weights: {v1: 100}\n")
    env = {**gateway_env(secret, prefix), "RTSERVE_CONFIG": str(config), "RTSERVE_IMPORT_ALLOW_CODE_FORMATS": "true",
           # A load's probe starts a Python process with the framework: seconds on a busy machine, more in parallel.
           "RTSERVE_LIMIT_REQUEST_TIMEOUT_S": "300", "RTSERVE_TRAFFIC_TIMEOUT_S": "300",
           "RTSERVE_REPOSITORY_WAIT_TIMEOUT_S": "280"}  # the prediction cache on, as in production (strings in its keys)
    env["PYTHONPATH"] = str(ROOT)  # the probe runs this tree's code, as the server does
    server = ServerProcess(env=env, log_path=tmp / "serve.log")
    m = None
    patch = pytest.MonkeyPatch()
    try:
        server.start()
        # The Python client finds the server and its key as a user's script does: in the environment.
        patch.setenv("RTSERVE_URL", server.url)
        patch.setenv("RTSERVE_AUTH_HS256_SECRET_FILE", str(secret))
        m = Matrix(server, secret, tmp)
        for _ in range(4):  # each on a new connection, so both workers have reached the routing state
            server.wait_until(lambda r: r.status_code == 200, "/admin/models", 60, headers=m.headers)
        made: dict[Callable, makers.Made] = {}
        for row, path in CELLS:
            maker = CASES[row].make if callable(CASES[row].make) else CASES[row].make[path]
            if maker not in made:
                folder = tmp / f"{row}-{len(made)}"
                folder.mkdir()
                made[maker] = maker(folder)
            m.made[(row, path)] = made[maker]
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = {cell: pool.submit(m.deploy, *cell) for cell in CELLS}
            m.outcomes = {cell: f.result() for cell, f in futures.items()}
        m.deploy_wall_s = time.perf_counter() - started
        yield m
    finally:
        patch.undo()
        if m is not None:
            m.close()
        server.stop()
        forget_prefix(prefix)


@pytest.fixture(scope="module")
def record(matrix: Matrix) -> Iterator[dict[str, dict[str, str]]]:
    """Each cell's verdict, written where the table script reads it once the module is done."""
    cells: dict[str, dict[str, str]] = {}
    yield cells
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    rows = {row: case.title for row, case in CASES.items()}
    RESULTS.write_text(json.dumps({"rows": rows, "paths": list(PATHS), "cells": cells,
                                   "deploys": sum(o.version is not None for o in matrix.outcomes.values()),
                                   "deploy_wall_s": round(matrix.deploy_wall_s, 1)}, indent=1))


# -- asking every way -----------------------------------------------------------------------------------------------


def _inputs(x: Any, meta: dict) -> dict[str, np.ndarray]:
    return x if isinstance(x, dict) else {meta["inputs"][0]["name"]: x}


def _plain(outputs: dict[str, Any]) -> dict[str, np.ndarray]:
    """Outputs as arrays, strings as str (tritonclient hands BYTES back as bytes)."""
    out = {}
    for k, v in outputs.items():
        arr = np.asarray(v)
        if arr.dtype == object or arr.dtype.kind == "S":
            arr = np.array([s.decode() if isinstance(s, bytes) else s for s in arr.ravel().tolist()], dtype=object).reshape(arr.shape)
        out[k] = arr
    return out


def _json_tensor(name: str, arr: np.ndarray, datatype: str) -> dict:
    return {"name": name, "datatype": datatype, "shape": list(arr.shape), "data": arr.ravel().tolist()}


def ask_rest_json(m: Matrix, name: str, version: str, inputs: dict[str, np.ndarray], types: dict[str, str]) -> dict:
    body = {"inputs": [_json_tensor(n, a, types[n]) for n, a in inputs.items()]}
    r = m.rest.post(f"/v2/models/{name}/versions/{version}/infer", json=body)
    assert r.status_code == 200, r.text
    return {o["name"]: np.asarray(o["data"], dtype=object if o["datatype"] == "BYTES" else None).reshape(o["shape"])
            for o in r.json()["outputs"]}


def ask_triton(m: Matrix, protocol: str, name: str, version: str, inputs: dict[str, np.ndarray],
               types: dict[str, str]) -> dict:
    module, client = (triton_http, m.http) if protocol == "http" else (triton_grpc, m.grpc)
    tensors = []
    for n, a in inputs.items():
        t = module.InferInput(n, list(a.shape), types[n])
        t.set_data_from_numpy(a if types[n] == "BYTES" else np.ascontiguousarray(a))  # binary over HTTP, the default
        tensors.append(t)
    result = client.infer(name, tensors, model_version=version, headers=m.auth(protocol))
    response = result.get_response() if protocol == "http" else result.get_response(as_json=True)
    return {o["name"]: result.as_numpy(o["name"]) for o in response["outputs"]}


def _rows(inputs: dict[str, np.ndarray]) -> list[Any]:
    """`/predict` and job rows: a list of values, a string, or an object keyed by input name for several inputs."""
    n = len(next(iter(inputs.values())))
    if len(inputs) > 1:
        return [{k: v[i].tolist() for k, v in inputs.items()} for i in range(n)]
    (arr,) = inputs.values()
    return arr.tolist()


def ask_predict(m: Matrix, name: str, version: str, inputs: dict[str, np.ndarray], types: dict[str, str]) -> dict:
    r = m.rest.post("/predict", json={"model": name, "version": version, "inputs": _rows(inputs)})
    assert r.status_code == 200, r.text
    assert (r.json()["model"], r.json()["version"]) == (name, version)
    return {k: np.asarray(v, dtype=object if isinstance(v[0], str) else None) for k, v in r.json()["outputs"].items()}


def _job(m: Matrix, **request: Any) -> dict:
    r = m.rest.post("/v2/jobs", **request)
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    deadline = time.monotonic() + 120
    while (state := m.rest.get(f"/v2/jobs/{job}").json()["state"]) in ("queued", "running"):
        assert time.monotonic() < deadline, f"job {job} still {state}"
        time.sleep(0.02)
    assert state == "succeeded", m.rest.get(f"/v2/jobs/{job}").json()
    lines = [orjson.loads(line) for line in m.rest.get(f"/v2/jobs/{job}/results").text.splitlines()]
    assert [line["row"] for line in lines] == list(range(len(lines)))
    names = list(lines[0]["outputs"])
    return {k: np.asarray([line["outputs"][k] for line in lines],
                          dtype=object if isinstance(lines[0]["outputs"][k], str) else None) for k in names}


def ask_job_json(m: Matrix, name: str, version: str, inputs: dict[str, np.ndarray], types: dict[str, str]) -> dict:
    return _job(m, json={"model": name, "version": version, "inputs": _rows(inputs)})


def ask_job_upload(m: Matrix, name: str, version: str, inputs: dict[str, np.ndarray], types: dict[str, str]) -> dict:
    """An .npy of the one input, or an .npz holding each input under its name."""
    buf = io.BytesIO()
    if len(inputs) == 1:
        np.save(buf, next(iter(inputs.values())))
    else:
        np.savez(buf, **inputs)
    return _job(m, content=buf.getvalue(), params={"model": name, "version": version})


def ask_stream(m: Matrix, name: str, version: str, inputs: dict[str, np.ndarray], types: dict[str, str]) -> dict:
    """One item per row; the answers come as each completes, put back in row order by their ids."""
    n = len(next(iter(inputs.values())))
    items = [orjson.dumps({"id": str(i), "inputs": [_json_tensor(k, v[i:i + 1], types[k]) for k, v in inputs.items()]})
             for i in range(n)]
    r = m.rest.post(f"/v2/models/{name}/versions/{version}/infer/stream", content=b"\n".join(items) + b"\n")
    assert r.status_code == 200, r.text
    answers = {}
    for line in r.text.splitlines():
        doc = orjson.loads(line)
        assert "error" not in doc, doc
        answers[int(doc["id"])] = {o["name"]: np.asarray(o["data"], dtype=object if o["datatype"] == "BYTES" else None)
                                   .reshape(o["shape"])[0] for o in doc["outputs"]}
    assert sorted(answers) == list(range(n))
    return {k: np.stack([np.asarray(answers[i][k], dtype=object) if isinstance(answers[i][k], str) else answers[i][k]
                         for i in range(n)]) for k in answers[0]}


WAYS: dict[str, Callable[..., dict]] = {
    "REST JSON": ask_rest_json,
    "REST binary": lambda m, *a: ask_triton(m, "http", *a),
    "gRPC": lambda m, *a: ask_triton(m, "grpc", *a),
    "/predict": ask_predict,
    "job (JSON rows)": ask_job_json,
    "job (.npy/.npz)": ask_job_upload,
    "stream": ask_stream,
}


def _numeric(types: dict[str, str]) -> bool:
    return "BYTES" not in types.values()


@pytest.mark.parametrize(("row", "path"), CELLS, ids=[f"{row}-{path}" for row, path in CELLS])
def test_cell(matrix: Matrix, record, row: str, path: str) -> None:
    case, outcome = CASES[row], matrix.outcomes[(row, path)]
    key = f"{row}|{path}"
    record[key] = {"verdict": "failed"}
    assert outcome.error is None, outcome.error
    consent = ""
    if outcome.without_consent is not None:  # a format that runs code: refused on this path without consent
        status, message = outcome.without_consent
        assert status in ("403", "StatusCode.PERMISSION_DENIED"), (status, message)
        assert "can run code" in message, message
        consent = f"; without consent refused ({status}, code_format_not_allowed)"
    if case.triton_refused is not None and path in ("http", "grpc"):
        http_status, grpc_status, words = case.triton_refused
        assert outcome.refused is not None, "expected a refusal"
        status, message = outcome.refused
        assert status == (http_status if path == "http" else grpc_status), outcome.refused
        assert words in message, message
        assert_not_served(matrix, f"mx-{row}-{path}")
        reason = message if len(message) <= 100 else message[:100].rsplit(" ", 1)[0] + " ..."
        record[key] = {"verdict": "refused", "text": f"refused ({status}: {reason})"}
        return
    assert outcome.refused is None, outcome.refused
    name, version = f"mx-{row}-{path}", outcome.version
    meta = matrix.rest.get(f"/v2/models/{name}/versions/{version}").json()
    types = {t["name"]: t["datatype"] for t in meta["inputs"]}
    inputs = _inputs(matrix.made[(row, path)].x, meta)
    asked = []
    for way, ask in WAYS.items():
        if way == "job (.npy/.npz)" and not _numeric(types):
            continue  # .npy holds numbers only: strings go as JSON rows
        for _ in range(2 if way == "REST JSON" else 1):  # new connections: both workers answer
            got = _plain(ask(matrix, name, version, inputs, types))
            try:
                assert_same(got, outcome.expected)
            except AssertionError as exc:
                raise AssertionError(f"{way}: {exc}") from None
        asked.append(way)
    saver = f" via {outcome.notes[0]}" if outcome.notes else ""
    record[key] = {"verdict": "served", "text": f"served{saver} ({case.tolerance}){consent}",
                   "ways": asked, "deploy_s": round(outcome.deploy_s, 2)}


def assert_not_served(m: Matrix, name: str) -> None:
    index = m.http.get_model_repository_index(headers=m.auth("http"))
    assert name not in {e["name"] for e in index}
    assert m.rest.get(f"/v2/models/{name}").status_code == 404


def test_each_deploy_is_one_audit_line(matrix: Matrix) -> None:
    """Every deploy that served a model wrote one `deploy` line, and no separate `load` line."""
    for (row, path), outcome in matrix.outcomes.items():
        if outcome.version is None:
            continue
        name = f"mx-{row}-{path}"
        audit = matrix.rest.get("/admin/audit", params={"model": name}).json()
        assert [e["action"] for e in audit] == ["deploy"], (name, audit)
        assert audit[0]["who"] == "matrix" or audit[0]["who"] == "rtserve-cli", audit[0]
        assert audit[0]["changes"]["loaded"]["to"] == [outcome.version], audit[0]
