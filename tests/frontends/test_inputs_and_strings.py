"""Models of several inputs, string (BYTES) inputs and rows by feature name, served end to end in this process.

Three real models imported through the one import path (probe included): an ONNX network of two inputs and two
outputs on iris, a TF-IDF + logistic-regression text classifier (skops), and an XGBoost booster on breast cancer
fitted with feature names. Each is asked over REST JSON, Triton's binary extension (tritonclient's own request and
response codec), gRPC (tritonclient's asyncio client), the NDJSON stream, /predict and a batch job, and must answer
what its framework answers: floats to 1e-5 absolute (FP32), labels exactly.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import orjson
import pytest
import pytest_asyncio
import tritonclient.grpc.aio as grpcclient
import tritonclient.http as httpclient
from sklearn.datasets import load_breast_cancer
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from frontends.grpc.server import GrpcFrontend
from frontends.grpc.settings import GrpcSettings
from loadtest.servers import free_port
from models.importer import ImportOptions, import_model
from models.settings import ImportSettings
from tests.inprocess import InProcess, serve_in_process
from tests.jobs.support import lines, wait_finished
from tests.models import makers

pytestmark = pytest.mark.asyncio(loop_scope="module")

ATOL = 1e-5
SUFFIX = uuid.uuid4().hex[:8]
TWO, TEXT, NAMED = f"two-{SUFFIX}", f"topics-{SUFFIX}", f"cancer-named-{SUFFIX}"


@dataclass
class Served:
    app: InProcess
    grpc: grpcclient.InferenceServerClient
    stub: pb_grpc.GRPCInferenceServiceStub
    made: dict[str, makers.Made]
    features: list[str]

    def headers(self, **extra: str) -> dict[str, str]:
        return {**self.app.headers(), **extra}

    def metadata(self) -> dict[str, str]:
        """gRPC metadata: lowercase keys."""
        return {k.lower(): v for k, v in self.app.headers().items()}

    async def infer(self, model: str, doc: dict, **headers: str):
        return await self.app.client.post(f"/v2/models/{model}/infer", content=orjson.dumps(doc), headers=self.headers(**headers))

    async def predict(self, model: str, rows: list):
        return await self.app.client.post("/predict", json={"model": model, "inputs": rows}, headers=self.headers())


def cancer_xgboost_named(folder: Path) -> tuple[makers.Made, list[str]]:
    """A booster fitted with the data set's own feature names (as a DataFrame would give it)."""
    import xgboost as xgb

    names = [n.replace(" ", "_") for n in load_breast_cancer().feature_names]
    x_tr, x_te, y_tr, _ = makers.split(load_breast_cancer)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
                        xgb.DMatrix(x_tr, label=y_tr, feature_names=names), num_boost_round=10)
    path = folder / "cancer_named.json"
    booster.save_model(str(path))
    p = booster.predict(xgb.DMatrix(x_te[:6], feature_names=names))
    expected = {"probabilities": np.stack([1 - p, p], axis=1), "label": (p > 0.5).astype(np.int64)}
    return makers.Made(path, x_te[:6], expected), names


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(tmp_path_factory) -> AsyncIterator[Served]:
    folder = tmp_path_factory.mktemp("own")
    settings = ImportSettings(probe_timeout_s=120, probe_memory_mb=1500)
    made = {TWO: makers.iris_onnx_two_by_two(folder), TEXT: makers.text_classifier(folder)}
    made[NAMED], features = cancer_xgboost_named(folder)
    for name, m in made.items():
        await asyncio.to_thread(import_model, name, "v1", m.path, ImportOptions(), settings)
    models = {name: {"versions": ["v1"]} for name in made}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RTSERVE_JOBS_STATE_DIR", str(tmp_path_factory.mktemp("jobs")))
        async with serve_in_process(tmp_path_factory.mktemp("served"), models) as app:
            frontend = GrpcFrontend(app.runtime.parts, GrpcSettings(host="127.0.0.1", port=free_port()))
            port = await frontend.start(shared=False)
            client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            try:
                yield Served(app, client, pb_grpc.GRPCInferenceServiceStub(channel), made, features)
            finally:
                await channel.close()
                await client.close()
                await frontend.stop()


def tensor(name: str, arr: np.ndarray, datatype: str = "FP32") -> dict:
    data = arr.ravel().tolist()
    return {"name": name, "shape": list(arr.shape), "datatype": datatype, "data": data}


def outputs_of(body: dict) -> dict[str, np.ndarray]:
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in body["outputs"]}


def assert_same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(got) == set(expected)
    for name, want in expected.items():
        if name == "label":
            assert np.asarray(got[name]).tolist() == np.asarray(want).tolist()
        else:
            np.testing.assert_allclose(np.asarray(got[name], dtype=np.float64), want, atol=ATOL, rtol=0, err_msg=name)


# --- several inputs ---------------------------------------------------------------------------------------------


async def test_two_inputs_over_json_in_any_order(served):
    x = served.made[TWO].x
    answer = await served.infer(TWO, {"inputs": [tensor("scale", x["scale"]), tensor("measurements", x["measurements"])]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [(o["name"], o["datatype"], o["shape"]) for o in body["outputs"]] == [
        ("scores", "FP32", [5, 3]), ("embedding", "FP32", [5, 6])]
    assert_same(outputs_of(body), served.made[TWO].expected)


async def test_two_inputs_over_the_binary_extension(served):
    x = served.made[TWO].x
    inputs = []
    for name, arr in x.items():
        item = httpclient.InferInput(name, list(arr.shape), "FP32")
        item.set_data_from_numpy(arr, binary_data=True)
        inputs.append(item)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in ("embedding", "scores")]
    body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs, outputs)
    answer = await served.app.client.post(f"/v2/models/{TWO}/infer", content=body, headers=served.headers(
        **{"Inference-Header-Content-Length": str(json_size), "Content-Type": "application/octet-stream"}))
    assert answer.status_code == 200, answer.text
    result = httpclient.InferenceServerClient.parse_response_body(
        answer.content, header_length=int(answer.headers["inference-header-content-length"]))
    assert [o["name"] for o in result.get_response()["outputs"]] == ["embedding", "scores"]
    assert_same({n: result.as_numpy(n) for n in ("scores", "embedding")}, served.made[TWO].expected)


async def test_two_inputs_over_grpc(served):
    x = served.made[TWO].x
    inputs = []
    for name, arr in x.items():
        item = grpcclient.InferInput(name, list(arr.shape), "FP32")
        item.set_data_from_numpy(arr)
        inputs.append(item)
    result = await served.grpc.infer(TWO, inputs, headers=served.metadata())
    assert_same({n: result.as_numpy(n) for n in ("scores", "embedding")}, served.made[TWO].expected)


async def test_two_inputs_as_rows_on_predict_and_over_a_stream(served):
    made = served.made[TWO]
    rows = [{"measurements": m.tolist(), "scale": s.tolist()} for m, s in zip(made.x["measurements"], made.x["scale"])]
    answer = await served.predict(TWO, rows)
    assert answer.status_code == 200, answer.text
    assert_same({k: np.array(v) for k, v in answer.json()["outputs"].items()}, made.expected)

    items = b"\n".join(orjson.dumps({"id": str(i), "inputs": [tensor("measurements", made.x["measurements"][i : i + 1]),
                                                               tensor("scale", made.x["scale"][i : i + 1])]})
                       for i in range(5))
    answer = await served.app.client.post(f"/v2/models/{TWO}/infer/stream", content=items, headers=served.metadata())
    assert answer.status_code == 200, answer.text
    lines = sorted((orjson.loads(line) for line in answer.content.splitlines()), key=lambda d: int(d["id"]))
    got = {name: np.concatenate([outputs_of(d)[name] for d in lines]) for name in ("scores", "embedding")}
    assert_same(got, made.expected)


async def test_two_input_requests_share_a_batch_and_the_cache(served):
    x = served.made[TWO].x
    entry = served.app.runtime.registry.get(TWO, "v1")
    docs = [{"inputs": [tensor("measurements", x["measurements"][i : i + 1]), tensor("scale", x["scale"][i : i + 1])]}
            for i in range(5)]
    answers = await asyncio.gather(*(served.infer(TWO, d, **{"Cache-Control": "no-cache"}) for d in docs))
    got = {n: np.concatenate([outputs_of(a.json())[n] for a in answers]) for n in ("scores", "embedding")}
    assert_same(got, served.made[TWO].expected)
    assert entry.batcher.stats.rows >= 5
    if served.app.runtime.parts.pipeline.cache is not None:
        first = await served.infer(TWO, docs[0])
        again = await served.infer(TWO, docs[0])
        assert again.headers["x-cache"] == "hit" and again.json()["outputs"] == first.json()["outputs"]
        other_scale = {"inputs": [docs[0]["inputs"][0], tensor("scale", np.full((1, 1), 2.0, np.float32))]}
        changed = await served.infer(TWO, other_scale)
        assert changed.headers["x-cache"] == "miss" and changed.json()["outputs"] != first.json()["outputs"]


@pytest.mark.parametrize(("inputs", "problem"), [
    (["measurements"], "missing input(s) ['scale']"),
    (["measurements", "scale", "extra"], "unknown input(s)"),
    (["measurements", "short_scale"], "same number of rows"),
])
async def test_bad_several_inputs_are_refused_clearly(served, inputs, problem):
    x = served.made[TWO].x
    given = {"measurements": tensor("measurements", x["measurements"]), "scale": tensor("scale", x["scale"]),
             "extra": tensor("extra", x["scale"]), "short_scale": tensor("scale", x["scale"][:2])}
    answer = await served.infer(TWO, {"inputs": [given[n] for n in inputs]})
    assert answer.status_code == 422 and problem in answer.json()["error"], answer.text
    rows = [{"measurements": [1.0, 2.0, 3.0, 4.0]}]
    answer = await served.predict(TWO, rows)
    assert answer.status_code == 422 and "missing input(s) ['scale']" in answer.json()["error"]


async def test_an_output_off_its_signature_while_serving_is_a_model_error_naming_it(served):
    """The one injected fault: the model drops an output it declared; the data plane's answer says which."""
    runner = served.app.runtime.registry.get(TWO, "v1").runner
    x = served.made[TWO].x

    def predict(inputs, _predict=runner.predict):
        return {k: v for k, v in _predict(inputs).items() if k != "embedding"}

    runner.predict = predict
    try:
        doc = {"inputs": [tensor("measurements", x["measurements"]), tensor("scale", x["scale"])]}
        answer = await served.infer(TWO, doc, **{"Cache-Control": "no-cache"})
    finally:
        del runner.predict
    assert answer.status_code == 500 and answer.json()["code"] == "model_error", answer.text
    assert "output 'embedding' is missing" in answer.json()["error"]


# --- strings (BYTES) ----------------------------------------------------------------------------------------------


def texts(arr: np.ndarray) -> dict:
    return {"name": "text", "shape": [len(arr)], "datatype": "BYTES", "data": arr.tolist()}


async def test_text_classifier_over_json_and_predict(served):
    made = served.made[TEXT]
    answer = await served.infer(TEXT, {"inputs": [texts(made.x)]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [(o["name"], o["datatype"]) for o in body["outputs"]] == [("probabilities", "FP32"), ("label", "BYTES")]
    assert_same(outputs_of(body), made.expected)
    assert outputs_of(body)["label"].tolist() == ["sport", "finance", "tech"]
    answer = await served.predict(TEXT, made.x.tolist())
    assert answer.status_code == 200, answer.text
    assert_same({k: np.array(v) for k, v in answer.json()["outputs"].items()}, made.expected)


async def test_text_over_the_binary_extension(served):
    made = served.made[TEXT]
    item = httpclient.InferInput("text", [len(made.x)], "BYTES")
    item.set_data_from_numpy(made.x, binary_data=True)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in ("probabilities", "label")]
    body, json_size = httpclient.InferenceServerClient.generate_request_body([item], outputs)
    answer = await served.app.client.post(f"/v2/models/{TEXT}/infer", content=body, headers=served.headers(
        **{"Inference-Header-Content-Length": str(json_size)}))
    assert answer.status_code == 200, answer.text
    result = httpclient.InferenceServerClient.parse_response_body(
        answer.content, header_length=int(answer.headers["inference-header-content-length"]))
    labels = [b.decode() for b in result.as_numpy("label")]
    assert_same({"probabilities": result.as_numpy("probabilities"), "label": labels}, made.expected)


async def test_text_over_grpc_raw_and_typed(served):
    made = served.made[TEXT]
    item = grpcclient.InferInput("text", [len(made.x)], "BYTES")
    item.set_data_from_numpy(made.x)
    result = await served.grpc.infer(TEXT, [item], headers=served.metadata())
    labels = [b.decode() for b in result.as_numpy("label")]
    assert_same({"probabilities": result.as_numpy("probabilities"), "label": labels}, made.expected)

    typed = pb.ModelInferRequest(model_name=TEXT, inputs=[pb.ModelInferRequest.InferInputTensor(
        name="text", datatype="BYTES", shape=[len(made.x)],
        contents=pb.InferTensorContents(bytes_contents=[t.encode() for t in made.x]))])
    answer = await served.stub.ModelInfer(typed, metadata=tuple(served.metadata().items()))
    label = next(o for o in answer.outputs if o.name == "label")
    assert label.datatype == "BYTES" and [b.decode() for b in label.contents.bytes_contents] == made.expected["label"].tolist()


async def test_strings_share_a_batch_unpadded_and_are_cached(served):
    made = served.made[TEXT]
    parts = [made.x[:1], made.x[1:]]  # one string and two: concatenated as they are
    answers = await asyncio.gather(*(served.infer(TEXT, {"inputs": [texts(p)]}, **{"Cache-Control": "no-cache"})
                                     for p in parts))
    got = [outputs_of(a.json()) for a in answers]
    assert_same({k: np.concatenate([g[k] for g in got]) for k in ("probabilities", "label")}, made.expected)
    if served.app.runtime.parts.pipeline.cache is not None:
        await served.infer(TEXT, {"inputs": [texts(made.x[:1])]})
        again = await served.infer(TEXT, {"inputs": [texts(made.x[:1])]})
        assert again.headers["x-cache"] == "hit" and outputs_of(again.json())["label"].tolist() == ["sport"]
        other = await served.infer(TEXT, {"inputs": [texts(np.array(["the goal in the match!"], dtype=object))]})
        assert other.headers["x-cache"] == "miss"


async def test_string_limits_and_bad_strings(served):
    limits = served.app.runtime.parts.limits
    long = "a" * (limits.max_string_bytes + 1)
    cases = [
        ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [long]}]}, "over the limit"),
        ({"inputs": [{"name": "text", "shape": [1, limits.max_strings + 1], "datatype": "BYTES", "data": ["a"]}]},
         "strings is over the limit"),
        ({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", 3]}]}, "must be strings"),
        ({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a"]}]}, "do not fill shape"),
        ({"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}, "the model takes BYTES"),
    ]
    for doc, problem in cases:
        answer = await served.infer(TEXT, doc)
        assert answer.status_code in (400, 422) and problem in answer.json()["error"], (problem, answer.text)
    for blob, problem in [(b"\x02\x00\x00\x00\xff\xfe", "UTF-8"), (b"\x09\x00\x00\x00abc", "runs past"), (b"\x01\x00", "4-byte length")]:
        header = orjson.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                           "parameters": {"binary_data_size": len(blob)}}]})
        answer = await served.app.client.post(f"/v2/models/{TEXT}/infer", content=header + blob, headers=served.headers(
            **{"Inference-Header-Content-Length": str(len(header))}))
        assert answer.status_code in (400, 422) and problem in answer.json()["error"], (problem, answer.text)
    answer = await served.predict(TEXT, [["two", "strings"]])
    assert answer.status_code == 422 and "each row must hold 1 string" in answer.json()["error"]


# --- rows by feature name -----------------------------------------------------------------------------------------


async def test_predict_rows_by_feature_name(served):
    made, names = served.made[NAMED], served.features
    assert served.app.runtime.registry.get(NAMED, "v1").runner.feature_names == names
    by_name = [dict(zip(reversed(names), reversed(row.tolist()))) for row in made.x]  # any key order
    answer = await served.predict(NAMED, by_name)
    assert answer.status_code == 200, answer.text
    assert_same({k: np.array(v) for k, v in answer.json()["outputs"].items()}, made.expected)
    as_lists = await served.predict(NAMED, made.x.tolist())
    assert as_lists.json()["outputs"] == answer.json()["outputs"]

    missing = dict(by_name[0])
    del missing[names[3]]
    answer = await served.predict(NAMED, [missing])
    assert answer.status_code == 422 and f"missing feature(s) ['{names[3]}']" in answer.json()["error"]
    answer = await served.predict(NAMED, [{**by_name[0], "colour": 1.0}])
    assert answer.status_code == 422 and "unknown feature(s) ['colour']" in answer.json()["error"]
    answer = await served.predict(NAMED, [by_name[0], made.x[1].tolist()])
    assert answer.status_code == 422 and "keyed by feature name" in answer.json()["error"]


# --- batch jobs ---------------------------------------------------------------------------------------------------


async def test_jobs_of_several_inputs_strings_and_named_features(served):
    two, text, named = served.made[TWO], served.made[TEXT], served.made[NAMED]
    jobs = {
        TWO: ([{"measurements": m.tolist(), "scale": s.tolist()} for m, s in zip(two.x["measurements"], two.x["scale"])],
              two.expected),
        TEXT: (text.x.tolist(), text.expected),
        NAMED: ([dict(zip(served.features, row.tolist())) for row in named.x], named.expected),
    }
    batch = served.app.headers("batch")
    for model, (rows, expected) in jobs.items():
        bad = len(rows) // 2
        rows = [*rows[:bad], {"nope": 1} if model != TEXT else 7, *rows[bad:]]  # one bad row fails alone
        r = await served.app.client.post("/v2/jobs", headers=batch, json={"model": model, "inputs": rows})
        assert r.status_code == 202, r.text
        job = await wait_finished(served.app.client, r.json()["id"], batch)
        assert (job["state"], job["rows_done"], job["rows_failed"]) == ("succeeded", len(rows), 1), job
        got = lines((await served.app.client.get(f"/v2/jobs/{job['id']}/results", headers=batch)).content)
        assert got[bad]["code"] == "invalid_input"
        good = [g["outputs"] for i, g in enumerate(got) if i != bad]
        assert_same({k: np.array([g[k] for g in good]) for k in expected}, expected)
