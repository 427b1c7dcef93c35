from __future__ import annotations

import bentoml
import numpy as np
import pytest

from demo import data
from demo.build import BUILDERS, DIGITS_ROW, build_all, is_current
from models import store
from models.signature import Signature, classifier_outputs
from runners.loader import load_runner

DIGITS = ["digits-sklearn", "digits-torch", "digits-onnx", "digits-ensemble"]


def test_every_demo_model_is_in_the_store(model_store):
    tags = {str(m.tag) for m in bentoml.models.list()}
    assert {tag for tag, _ in BUILDERS} <= tags
    for name in DIGITS:
        assert {f"{name}:v1", f"{name}:v2"} <= tags


@pytest.mark.parametrize("tag", [f"{n}:{v}" for n in DIGITS for v in ("v1", "v2")])
def test_digits_models_reach_090_on_held_out_data(model_store, tag):
    runner = load_runner(tag)
    split = data.digits()
    x = split.x_test.reshape(len(split.x_test), *runner.input_spec.row_shape)
    accuracy = float((runner.run(x)["label"] == split.y_test).mean())
    assert accuracy >= 0.9
    assert runner.metadata["accuracy"] == pytest.approx(accuracy, abs=1e-3)


def test_seq_model_learns_the_majority_group_task(model_store):
    runner = load_runner("seq-torch:v1")
    x, y = data.sequences(500, seed=99)
    assert float((runner.run(x)["label"] == y).mean()) >= 0.9


@pytest.mark.parametrize("tag", [tag for tag, _ in BUILDERS])
def test_metadata_describes_the_model(model_store, tag):
    model = bentoml.models.get(tag)
    meta = model.info.metadata
    assert meta["framework"] in {"sklearn", "pytorch", "onnx", "ensemble"}
    assert model.info.labels["framework"] == meta["framework"]
    sig = Signature.from_metadata(meta)
    assert sig.outputs[0].name == "probabilities" and sig.outputs[0].shape[0] == -1
    assert sig.inputs[0].shape[0] == -1
    assert 0.0 < meta["accuracy"] <= 1.0


def test_versions_are_trained_differently(model_store):
    split = data.digits()
    for name in ("digits-sklearn", "digits-torch"):
        v1, v2 = load_runner(f"{name}:v1"), load_runner(f"{name}:v2")
        x = split.x_test.reshape(len(split.x_test), *v1.input_spec.row_shape)
        assert not np.allclose(v1.run(x)["probabilities"], v2.run(x)["probabilities"], atol=1e-3)


def test_ensemble_metadata_names_served_members(model_store):
    members = bentoml.models.get("digits-ensemble:v2").info.metadata["members"]
    assert set(members) == {"digits-sklearn:v2", "digits-torch:v2", "digits-onnx:v2"}
    assert sum(members.values()) == pytest.approx(1.0)


def test_building_again_skips_what_exists(model_store):
    lines: list[str] = []
    assert build_all(log=lines.append) == {}
    assert all("skipped" in line for line in lines)


@pytest.mark.parametrize("tag", [tag for tag, _ in BUILDERS if "ensemble" not in tag])
def test_demo_models_come_through_the_importer(model_store, tag):
    meta = bentoml.models.get(tag).info.metadata
    assert meta["source"]["origin"] == "demo" and is_current(tag)
    assert meta["format"] in {"skops", "onnx", "torchscript"}
    assert list(meta["sha256"]) == [meta["file"]] and meta["memory_mb"] >= 0
    assert meta["inputs"][0]["min_value"] == 0  # the value range its model.yaml declares


def test_a_version_saved_by_an_earlier_build_counts_as_missing(model_store):
    tag = "demo-old-layout:v1"
    store.save(tag, framework="sklearn", task="classification", signature=Signature((DIGITS_ROW,), classifier_outputs(10)),
               accuracy=0.5, write=lambda d: (d / "model.joblib").write_bytes(b""))
    try:
        assert not is_current(tag)
    finally:
        store.delete(tag)
