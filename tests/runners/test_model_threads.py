"""A model's own `intra_op_threads` reaches that model's runtime alone: its onnxruntime session, its XGBoost booster,
its LightGBM predicts; a runtime whose pools are one per process (torch, ensembles) refuses a count of its own."""

from __future__ import annotations

import json
import uuid

import numpy as np

from core.threads import intra_op_threads
from models.importer import ImportOptions, import_model
from runners.registry import ModelRegistry, VersionState
from runners.settings import ServingConfig
from tests.models.makers import Made, cancer_xgboost, tables_onnx, wine_lightgbm


def imported(made: Made) -> str:
    name = f"threads-{uuid.uuid4().hex[:8]}"
    import_model(name, "v1", made.path, ImportOptions())
    return name


def registry(threads: dict[str, int | None]) -> ModelRegistry:
    """A worker serving each model with its own `intra_op_threads` (None: none of its own)."""
    return ModelRegistry(ServingConfig.model_validate({"models": {
        name: {"versions": ["v1"], "batching": {} if n is None else {"intra_op_threads": n}} for name, n in threads.items()
    }}))


def test_an_onnx_model_of_its_own_gets_a_session_of_that_many_threads_and_the_others_keep_the_workers(model_store, tmp_path):
    assert intra_op_threads() == 1
    mine, other = imported(tables_onnx(tmp_path, 0.1, 1)), "digits-onnx"
    served = registry({mine: 2, other: None})
    for name in (mine, other):
        assert served.load(name, "v1").state is VersionState.READY
    assert served.get(mine, "v1").runner.session.get_session_options().intra_op_num_threads == 2
    assert served.get(other, "v1").runner.session.get_session_options().intra_op_num_threads == 1


def test_an_xgboost_booster_of_its_own_runs_that_many_threads(model_store, tmp_path):
    made = cancer_xgboost(tmp_path)
    name = imported(made)
    entry = registry({name: 3}).load(name, "v1")
    assert entry.state is VersionState.READY, entry.error
    booster = entry.runner.loaded.model
    assert json.loads(booster.save_config())["learner"]["generic_param"]["nthread"] == "3"
    np.testing.assert_allclose(entry.runner.run(made.x.astype(np.float32))["probabilities"], made.expected["probabilities"],
                               rtol=1e-5)


def test_a_lightgbm_model_of_its_own_predicts_with_that_many_threads(model_store, tmp_path, monkeypatch):
    made = wine_lightgbm(tmp_path)
    name = imported(made)
    entry = registry({name: 2}).load(name, "v1")
    assert entry.state is VersionState.READY, entry.error
    booster = entry.runner.loaded.model
    asked: list[int] = []
    predict = booster.predict
    monkeypatch.setattr(booster, "predict", lambda x, **kw: asked.append(kw["num_threads"]) or predict(x, **kw))
    np.testing.assert_allclose(entry.runner.run(made.x.astype(np.float32))["probabilities"], made.expected["probabilities"],
                               rtol=1e-5)
    assert asked == [2]


def test_a_torch_model_refuses_a_count_other_than_the_workers_and_takes_the_workers_own(model_store):
    entry = registry({"digits-torch": 2}).load("digits-torch", "v1")
    assert entry.state is VersionState.FAILED
    assert "intra_op_threads 2 cannot apply to this model alone" in entry.error and "torch.set_num_threads" in entry.error
    assert registry({"digits-torch": 1}).load("digits-torch", "v1").state is VersionState.READY


def test_an_ensembles_members_run_with_their_own_entries_count(model_store):
    served = registry({"digits-ensemble": None, "digits-onnx": 2})
    assert served.load("digits-ensemble", "v1").state is VersionState.READY
    (onnx,) = [r for r, _ in served.get("digits-ensemble", "v1").runner.members if r.name == "digits-onnx"]
    assert onnx.session.get_session_options().intra_op_num_threads == 2
    refused = registry({"digits-ensemble": 2}).load("digits-ensemble", "v1")
    assert refused.state is VersionState.FAILED and "set intra_op_threads on their entries" in refused.error
