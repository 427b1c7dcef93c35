"""A model's own batch settings: what its model.yaml suggests reaches the loaded version's batcher, serving.yaml's
block for the model wins over it, bad values are refused at import naming the field, and a version whose one call
already costs more than its budget loads with a warning that says what to raise."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from core.errors import ModelRefused
from models.importer import ImportOptions, import_model
from runners.registry import ModelRegistry, VersionState, over_budget
from runners.settings import BatchSettings, ServingConfig
from tests.models.makers import Made, tables_onnx


def deployed(folder: Path, batching: object) -> str:
    """A small ONNX model imported with a model.yaml whose `batching` is `batching`; its name."""
    made: Made = tables_onnx(folder, 0.1, 1)
    config = folder / "model.yaml"
    config.write_text(yaml.safe_dump({"batching": batching}))
    name = f"batching-{uuid.uuid4().hex[:8]}"
    import_model(name, "v1", made.path, ImportOptions(config=config))
    return name


def served(name: str, batching: dict | None = None) -> ModelRegistry:
    """A worker that lists the model in serving.yaml with `batching`, or (None) serves it as a runtime model."""
    models = {} if batching is None else {name: {"versions": ["v1"], "batching": batching}}
    return ModelRegistry(ServingConfig.model_validate({"models": models}))


def test_the_model_yaml_settings_reach_the_loaded_version_over_the_servers_defaults(model_store, tmp_path):
    suggested = {"max_batch_size": 8, "max_latency_ms": 2000, "warmup_lengths": [16], "intra_op_threads": 2}
    name = deployed(tmp_path, suggested)
    entry = served(name).load(name, "v1")
    assert entry.state is VersionState.READY and entry.warning is None
    assert entry.runner.metadata["batching"] is True
    assert entry.runner.metadata["batch_settings"] == {**suggested, "max_latency_ms": 2000.0}
    assert entry.batcher.settings == BatchSettings(**suggested)  # the rest: the server's defaults
    assert entry.runner.session.get_session_options().intra_op_num_threads == 2


def test_serving_yaml_has_the_last_word_field_by_field(model_store, tmp_path):
    name = deployed(tmp_path, {"max_batch_size": 8, "max_latency_ms": 2000})
    entry = served(name, {"max_latency_ms": 300, "max_queue_rows": 64}).load(name, "v1")
    settings = entry.batcher.settings
    assert (settings.max_latency_ms, settings.max_batch_size, settings.max_queue_rows) == (300, 8, 64)


@pytest.mark.parametrize("batching", [True, {}])
def test_true_or_an_empty_mapping_batch_with_the_servers_settings(model_store, tmp_path, batching):
    name = deployed(tmp_path, batching)
    entry = served(name).load(name, "v1")
    assert entry.runner.metadata["batching"] is True and "batch_settings" not in entry.runner.metadata
    assert entry.batcher.settings == BatchSettings()


@pytest.mark.parametrize(("batching", "field"), [
    ({"max_latency_ms": 0}, "batching.settings.max_latency_ms"),
    ({"max_batch_size": "many"}, "batching.settings.max_batch_size"),
    ({"warmup_lengths": [0]}, "batching.settings.warmup_lengths.0"),
    ({"priority_levels": 2}, "batching.settings.priority_levels"),  # the operator's, not the model's
    ({"device": "cpu"}, "batching.settings.device"),  # model.yaml has its own `device`
    ("sometimes", "batching.flag"),
])
def test_a_bad_setting_is_refused_at_import_naming_the_field(model_store, tmp_path, batching, field):
    with pytest.raises(ModelRefused) as refused:
        deployed(tmp_path, batching)
    assert refused.value.status == 422 and field in refused.value.message


def test_a_version_whose_one_call_exceeds_its_budget_loads_with_a_warning_naming_the_cost_and_the_setting(model_store, tmp_path):
    name = deployed(tmp_path, {"max_latency_ms": 0.001})
    entry = served(name).load(name, "v1")
    assert entry.state is VersionState.READY  # the operator's budget is kept, and said to be too small
    assert "over its max_latency_ms of 0.001 ms" in entry.warning and "refused (503)" in entry.warning
    assert "batching: {max_latency_ms: ...}" in entry.warning and f"models.{name}.batching.max_latency_ms" in entry.warning
    assert served(name, {"max_latency_ms": 1000}).load(name, "v1").warning is None  # serving.yaml raised it


def test_over_budget_compares_the_cheapest_warm_up_call():
    assert over_budget("m", [(1, 0.004), (64, 0.02)], 5) is None
    assert "took 6.0 ms" in over_budget("m", [(1, 0.006), (64, 0.02)], 5)
    assert over_budget("m", [], 5) is None
