"""frontends/openapi.yaml stays true: the server serves it, every documented operation is routed and
answers real requests as documented, and every route the server has is documented (any other
method is 405 with the full `Allow`, any other path 404)."""

from __future__ import annotations

import json
import time

import httpx
import pytest
import schemathesis

from core.errors import ServingError
from frontends.routes import document
from fuzz import seeds
from tests.fuzz.contract import ALLOWED_ERRORS, error_problem, error_table

DOC = document()
SCHEMA = schemathesis.openapi.from_dict(DOC)
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
DOCUMENTED = {(method.upper(), path) for path, item in DOC["paths"].items() for method in item if method.upper() in METHODS}
EXAMPLE = {"name": "digits-sklearn", "version": "v1", "job": "0123456789abcdef01234567"}


def concrete(template: str) -> str:
    return template.format(**EXAMPLE)


class Exercise:
    """Sends real requests and holds each response to the operation the document has for its path."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.client = httpx.Client(base_url=url, headers=headers, timeout=60)
        self.seen: set[tuple[str, str]] = set()

    def __call__(self, method: str, path: str, expect: int, wait_s: float = 0.0, **kwargs) -> httpx.Response:
        """`wait_s`: for reads of state that each worker applies a moment after the write (pub/sub)."""
        deadline = time.monotonic() + wait_s
        while (r := self.client.request(method, path, **kwargs)).status_code != expect and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text[:300]}"
        operation = SCHEMA.find_operation_by_path(method, path)
        assert operation is not None, f"{method} {path} is not in the document"
        assert str(r.status_code) in operation.definition.raw["responses"], f"{method} {path}: {r.status_code} is not documented"
        operation.validate_response(r)
        assert error_problem(r.status_code, r.content) is None
        self.seen.add((method, operation.path))
        return r


def test_document_is_valid_openapi_3():
    SCHEMA.validate()
    assert DOC["openapi"].startswith("3.")


def _subclasses(cls: type) -> set[type]:
    return {cls} | {s for sub in cls.__subclasses__() for s in _subclasses(sub)}


def test_error_codes_are_the_exception_classes_codes():
    documented = set(DOC["components"]["schemas"]["ErrorCode"]["enum"])
    assert documented == {c.code for c in _subclasses(ServingError)}


def test_the_docs_error_table_is_documented():
    documented_codes = set(DOC["components"]["schemas"]["ErrorCode"]["enum"])
    statuses = {int(s) for item in DOC["paths"].values() for op in item.values() if isinstance(op, dict)
                for s in op.get("responses", {})}
    for status, codes in error_table().items():
        # 405 answers the methods an operation does not have, so no operation lists it.
        assert status in statuses or status == 405, f"docs/api.md status {status} is on no documented operation"
        assert codes <= documented_codes, f"docs/api.md codes {codes - documented_codes} are not in the document"
    assert 500 not in ALLOWED_ERRORS


def test_server_serves_this_document_without_a_token(gateway):
    r = httpx.get(f"{gateway.url}/openapi.json", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == DOC


def test_real_requests_reach_every_operation_and_answer_as_documented(gateway, admin_gateway, routing_reset, served):
    oip = Exercise(gateway.url, gateway.headers(scopes="predict"))
    for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/openapi.json"):
        oip("GET", path, 200)
    for model in served:
        spec = model.spec
        version = oip("GET", f"/v2/models/{model.name}", 200).json()["versions"][-1]
        oip("GET", f"/v2/models/{model.name}/versions/{version}", 200)
        oip("GET", f"/v2/models/{model.name}/ready", 200)
        oip("GET", f"/v2/models/{model.name}/versions/{version}/ready", 200)
        oip("GET", f"/v2/models/{model.name}/config", 200)
        oip("GET", f"/v2/models/{model.name}/versions/{version}/config", 200)
        batch = seeds.rows(spec, 3, seed=5)
        oip("POST", f"/v2/models/{model.name}/infer", 200, content=seeds.infer_json(spec, batch))
        body, length = seeds.infer_binary(spec, batch)
        binary = oip("POST", f"/v2/models/{model.name}/versions/{version}/infer", 200, content=body,
                     headers={"Inference-Header-Content-Length": str(length), "Content-Type": "application/octet-stream"})
        assert binary.headers["content-type"] == "application/octet-stream"
        assert int(binary.headers["inference-header-content-length"]) < len(binary.content)
        oip("POST", "/predict", 200, content=seeds.predict_body(model, batch, version=version),
            headers={"Content-Type": "application/json"})
    oip("POST", "/v2/models/digits-sklearn/infer", 400, content=b"{not json")
    oip("POST", "/v2/models/digits-sklearn/infer", 422, json={"inputs": [{"name": "pixels", "shape": [1, 3], "datatype": "FP32",
                                                                         "data": [1, 2, 3]}]})
    oip("POST", "/v2/models/no-such-model/infer", 404, json={"inputs": []})
    oip("GET", "/v2/models/digits-sklearn/versions/v9", 404)
    oip("POST", "/predict", 401, json={"model": "digits-sklearn", "inputs": [[0] * 64]}, headers={"Authorization": ""})
    row = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [1.0] * 64}]}
    oip("POST", "/v2/models/digits-sklearn/infer/stream", 200, content=b"%s\n%s\n" % (json.dumps(row).encode(), b"{bad"))
    oip("POST", "/v2/models/digits-sklearn/versions/v1/infer/stream", 200, content=json.dumps(row).encode())
    jobs = Exercise(gateway.url, gateway.headers(scopes="batch"))
    job = jobs("POST", "/v2/jobs", 202, json={"model": "digits-sklearn", "version": "v1", "inputs": [[1.0] * 64] * 3}).json()
    jobs("GET", f"/v2/jobs/{job['id']}/results", 200, wait_s=30)
    jobs("GET", f"/v2/jobs/{job['id']}", 200)
    jobs("POST", f"/v2/jobs/{job['id']}/cancel", 409)
    sklearn = next(m for m in seeds.served_models() if m.name == "digits-sklearn")  # the ensembles take no batch jobs
    upload = seeds.npy(seeds.rows(sklearn.spec, 3))
    jobs("POST", "/v2/jobs", 202, params={"model": sklearn.name}, content=upload,
         headers={"Content-Type": "application/octet-stream"})
    jobs("POST", "/v2/jobs", 422, params={"model": "digits-sklearn"}, content=seeds.npy_header((10**12, 64)),
         headers={"Content-Type": "application/octet-stream"})
    oip.seen |= jobs.seen

    routing_reset.ensure_initial()
    admin = Exercise(admin_gateway.url, admin_gateway.headers(scopes="admin"))
    name = "/admin/models/digits-sklearn"
    admin("GET", "/admin/models", 200)
    admin("POST", f"{name}/versions/v2/load", 200)
    admin("PUT", f"{name}/weights", 200, json={"weights": {"v1": 90, "v2": 10}})
    admin("POST", f"{name}/experiment", 201, json={"variants": {"v1": 50, "v2": 50}, "mirror_fraction": 0.1})
    admin("GET", f"{name}/experiment", 200, wait_s=10)
    admin("DELETE", f"{name}/experiment", 200)
    admin("PUT", f"{name}/shadow", 200, json={"version": "v2", "fraction": 0.5})
    admin("DELETE", f"{name}/shadow", 200)
    admin("GET", f"{name}/canary", 404)
    admin("POST", f"{name}/canary", 201, json={"version": "v2", "steps": [10, 50], "hold_s": 3600})
    admin("GET", f"{name}/canary", 200)
    admin("DELETE", f"{name}/canary", 200)
    admin("DELETE", f"{name}/canary", 409)
    admin("POST", f"{name}/versions/v2/unload", 202)
    admin("POST", f"{name}/reset", 200)
    admin("PUT", f"{name}/versions/v9", 400, content=b"not multipart")  # a deploy takes the model as multipart/form-data
    admin("POST", f"{name}/versions/v9/optimize", 404, json={"to": "onnx"})  # the version to convert must be stored
    admin("GET", "/admin/audit", 200, params={"limit": "5", "model": "digits-sklearn"})
    backup = admin("GET", "/admin/backup", 200).content
    admin("POST", "/admin/restore", 200, content=backup)
    admin("PUT", f"{name}/weights", 422, json={"weights": {"v1": -1}})
    admin("GET", "/admin/models", 403, headers=admin_gateway.headers(scopes="predict"))
    admin("POST", "/v2/repository/index", 200, json={"ready": True})
    admin("POST", "/v2/repository/models/digits-sklearn/load", 200, json={"parameters": {"version": "v2"}})
    admin("POST", "/v2/repository/models/digits-sklearn/unload", 200, params={"version": "v2"})
    admin("POST", "/v2/repository/models/digits-sklearn/unload", 409)
    reader = admin_gateway.headers(scopes="predict")
    for path in ("/v2/models/stats", "/v2/models/digits-sklearn/stats", "/v2/models/digits-sklearn/versions/v1/stats"):
        admin("GET", path, 200, headers=reader)
    routing_reset.ensure_initial()

    missing = DOCUMENTED - oip.seen - admin.seen
    assert not missing, f"documented but never answered as documented: {sorted(missing)}"


@pytest.mark.parametrize("path", sorted({p for _, p in DOCUMENTED}))
def test_undocumented_methods_are_405_with_the_allowed_ones(admin_gateway, path):
    """The admin server: the same routes as any other, and its state is its own."""
    allowed = {m for m, p in DOCUMENTED if p == path}
    headers = admin_gateway.headers(scopes="predict admin")
    for method in sorted(set(METHODS) - allowed):
        r = httpx.request(method, f"{admin_gateway.url}{concrete(path)}", headers=headers, timeout=30)
        assert r.status_code == 405, f"{method} {path}: {r.status_code} {r.text[:200]}"
        assert r.json()["code"] == "method_not_allowed"
        advertised = {m.strip() for m in r.headers["allow"].split(",")} - {"HEAD"}
        assert advertised == allowed, f"{method} {path}: Allow: {r.headers['allow']}, documented: {sorted(allowed)}"


def _near_misses() -> list[str]:
    """Paths one step away from documented ones (a segment more, the last one changed, a parent) that
    the document does not have."""
    candidates = {"/", "/v1", "/v2/models", "/v2/health", "/admin", "/admin/models/digits-sklearn",
                  "/openapi.yaml", "/v2/models/digits-sklearn/x/infer", "/v2/models/digits-sklearn/versions/v1/x/infer"}
    for _, template in DOCUMENTED:
        path = concrete(template)
        parent = path.rsplit("/", 1)[0]
        candidates |= {f"{path}/x", f"{parent}/x", parent or "/"}
    return sorted(p for p in candidates if not any(SCHEMA.find_operation_by_path(m, p) for m in METHODS))


@pytest.mark.parametrize("path", _near_misses())
def test_undocumented_paths_are_404_and_need_a_token(gateway, path):
    r = httpx.get(f"{gateway.url}{path}", headers=gateway.headers(scopes="predict admin"), timeout=30)
    assert r.status_code == 404 and r.json()["code"] == "not_found", f"{path}: {r.status_code} {r.text[:200]}"
    anonymous = httpx.get(f"{gateway.url}{path}", timeout=30)
    assert anonymous.status_code in (401, 404), f"{path} without a token: {anonymous.status_code} {anonymous.text[:200]}"
    assert error_problem(anonymous.status_code, anonymous.content) is None
