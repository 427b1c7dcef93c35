"""`rtserve optimize` against the real two-worker server of `rtserve deploy`'s tests (tests/app/conftest.py):
users' models deployed, optimized on the server, served by every worker with no traffic, answering what their
source answers; refusals are 4xx with the numbers and leave nothing in the store.

Tolerances: an ONNX conversion answers as its source within 1e-5 (tests/models/test_formats.py `assert_same`);
an int8 version within the report's own numbers. The compiled target is tested in test_optimize_compiled.py
(`make test-compiled`): an AOTInductor compile takes minutes on two loaded cores.
"""

from __future__ import annotations

import zipfile

import bentoml
import httpx
import numpy as np
import pytest

from app import client
from core.errors import ModelRefused
from models import store
from models.importer import ImportOptions, import_model
from models.settings import ImportSettings
from tests.models import makers
from tests.models.test_formats import assert_same


def routes(deploys, name: str) -> dict:
    return httpx.get(f"{deploys.server.url}/admin/models", headers=deploys.headers).json()[name]


def test_onnx_from_a_torchscript_mlp_served_with_no_traffic(deploys, cli, tmp_path):
    made = makers.iris_torchscript(tmp_path)
    client.deploy_model("opt-ts", tmp_path, allow_code=True)
    status, out, err = cli("optimize", "opt-ts:v1", "--to", "onnx")
    assert status == 0, err
    assert "opt-ts:v1-onnx from v1 (torch.onnx.export" in out and "agreement 100.00% (top-1 label" in out
    assert "batch 32" in out and "rtserve canary start opt-ts v1-onnx" in out
    model = routes(deploys, "opt-ts")
    assert model["versions"]["v1-onnx"]["state"] == "ready" and model["weights"].get("v1-onnx", 0) == 0
    assert_same(deploys.infer("opt-ts", made.x, "v1-onnx"), made.expected)
    meta = bentoml.models.get("opt-ts:v1-onnx").info.metadata
    assert meta["format"] == "onnx" and meta["optimized_from"] == "v1" and meta["source"]["origin"] == "optimize"
    report = meta["optimization"]
    assert report["source"] == "opt-ts:v1" and report["rows"] == 64 and report["max_abs_diff"]["probabilities"] < 1e-5
    assert set(report["latency_ms"]) == {"batch_1", "batch_32"}
    assert all(t["source_ms"] > 0 and t["optimized_ms"] > 0 for t in report["latency_ms"].values())
    assert 0 < report["size"]["optimized_bytes"] and 0 < report["size"]["source_bytes"]


def test_onnx_from_sklearn_and_a_booster_on_the_users_sample(deploys, cli, tmp_path):
    config = tmp_path / "model.yaml"
    config.write_text("batching: {max_batch_size: 16}\n")  # kept by the optimized version
    for name, made in (("opt-skl", makers.iris_skops(tmp_path)), ("opt-xgb", makers.cancer_xgboost(tmp_path))):
        client.deploy_model(name, made.path, config=config)
        sample = tmp_path / f"{name}.npy"
        np.save(sample, made.x)
        doc = client.optimize_model(name, "v1", "onnx", new_version="v2", sample=sample)
        report = doc["report"]
        assert doc["version"] == "v2" and report["sample"] == {"rows": len(made.x), "from": "the request's sample"}
        assert report["agreement"] == 1.0 and report["format"] == "onnx", report
        assert_same(deploys.infer(name, made.x, "v2"), made.expected)
        assert bentoml.models.get(f"{name}:v2").info.metadata["batch_settings"] == {"max_batch_size": 16}
        weights = routes(deploys, name)["weights"]
        assert weights["v1"] == 100.0 and weights.get("v2", 0.0) == 0.0


def test_int8_of_an_onnx_mlp_then_a_canary(deploys, cli, tmp_path):
    made = makers.iris_onnx(tmp_path)
    client.deploy_model("opt-int8", made.path)
    status, out, err = cli("optimize", "opt-int8:v1", "--to", "int8", "--tolerance", "0.1")
    assert status == 0, err
    assert "note: int8 nodes:" in out and "MatMulInteger" in out
    report = bentoml.models.get("opt-int8:v1-int8").info.metadata["optimization"]
    got = deploys.infer("opt-int8", made.x, "v1-int8")["logits"]
    assert np.abs(got - made.expected["logits"]).max() <= 0.1 * (1 + np.abs(made.expected["logits"])).max()
    assert 0 < report["max_abs_diff"]["logits"] and report["counted_as"] == "rows within tolerance 0.1"
    status, out, err = cli("canary", "start", "opt-int8", "v1-int8", "--steps", "10,100", "--min-requests", "1000")
    assert status == 0, err
    assert routes(deploys, "opt-int8")["weights"] == {"v1": 90.0, "v1-int8": 10.0}
    cli("canary", "abort", "opt-int8")


def test_refusals_are_4xx_with_the_numbers_and_store_nothing(deploys, cli, tmp_path):
    made = makers.iris_onnx(tmp_path)
    client.deploy_model("opt-no", made.path)
    # Exact agreement of int8 with float: not to be had, and said with the numbers.
    status, _, err = cli("optimize", "opt-no:v1", "--to", "int8", "--min-agreement", "1", "--tolerance", "0")
    assert status == 2 and "422" in err and "agrees with it on" in err and "largest differences logits" in err, err
    assert not store.exists("opt-no:v1-int8") and "v1-int8" not in deploys.served_versions("opt-no")
    r = httpx.post(f"{deploys.server.url}/admin/models/opt-no/versions/v1/optimize", headers=deploys.headers,
                   json={"to": "int8", "min_agreement": 1.0, "tolerance": 0.0}, timeout=600)
    assert r.status_code == 422 and r.json()["code"] == "agreement_too_low"
    assert r.json()["report"]["agreement"] < 1.0 and r.json()["report"]["max_abs_diff"]["logits"] > 0
    # Refused before any work: what no converter makes, what is not there, what is not asked right.
    for args, status_text in ((("opt-no:v1", "--to", "onnx"), "422 the version is ONNX already"),
                              (("opt-no:v1", "--to", "compiled"), "422 --to compiled is not made from onnx"),
                              (("opt-no:v9", "--to", "onnx"), "404 opt-no:v9 is not in the model store"),
                              (("opt-no:v1", "--to", "int8", "--version", "v1"), "409 opt-no:v1 already exists")):
        status, _, err = cli("optimize", *args)
        assert status == 2 and status_text in err, err
    for body, code in (({"to": "fp8"}, 422), ({"to": "int8", "min_agreement": 2}, 422), (b"{", 400)):
        kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
        r = httpx.post(f"{deploys.server.url}/admin/models/opt-no/versions/v1/optimize", headers={
            **deploys.headers, "content-type": "application/json"}, **kwargs)
        assert r.status_code == code, r.text
    # A linear model converted to ONNX-ML operators has nothing int8 could speed up.
    skl = makers.iris_skops(tmp_path)
    client.deploy_model("opt-lin", skl.path)
    status, _, err = cli("optimize", "opt-lin:v1", "--to", "int8")
    assert status == 2 and "422 nothing to quantize" in err and not store.exists("opt-lin:v1-int8")
    assert [v for v in deploys.served_versions("opt-no") + deploys.served_versions("opt-lin")] == ["v1", "v1"]


def test_a_deploy_never_brings_an_aotinductor_package(tmp_path):
    """Only the optimizer may store the torch_aoti format: declared by a deploy's model.yaml, it is refused
    before the file is opened, whatever the operator allows."""
    folder = tmp_path / "pkg"
    folder.mkdir()
    with zipfile.ZipFile(folder / "model.pt2", "w") as archive:
        archive.writestr("model/data/aotinductor/model/abc.wrapper.so", b"\x7fELF")
    (folder / "model.yaml").write_text("format: torch_aoti\ninputs:\n  - {name: x, datatype: FP32, shape: [-1, 4]}\n")
    with pytest.raises(ModelRefused, match="only made by this server"):
        import_model("opt-aoti", "v1", folder, ImportOptions(allow_code=True), ImportSettings(allow_code_formats=True))
    assert not store.exists("opt-aoti:v1")
