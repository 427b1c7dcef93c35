from __future__ import annotations

import pytest

from core.errors import ModelNotFound, ModelNotReady
from app.wiring import Runtime
from runners.registry import VersionState
from runners.settings import ServingConfig


def config(**models) -> ServingConfig:
    return ServingConfig.model_validate({"models": models})


def test_ready_only_after_every_configured_version_is_loaded(model_store):
    runtime = Runtime(config(**{"digits-sklearn": {"versions": ["v1", "v2"]}}))
    assert not runtime.ready
    runtime.start().join(60)
    assert runtime.ready
    assert runtime.pipeline.route("digits-sklearn", None).entry.version == "v2"  # no weights: the last listed version
    assert runtime.registry.get("digits-sklearn", "v1").load_seconds > 0


def test_a_version_that_fails_to_load_leaves_the_others_serving(model_store):
    runtime = Runtime(config(**{"digits-sklearn": {"versions": ["v1", "v7"], "weights": {"v1": 100}}}))
    runtime.start().join(60)
    assert not runtime.ready
    assert runtime.registry.get("digits-sklearn", "v7").state is VersionState.FAILED
    assert runtime.pipeline.route("digits-sklearn", None).entry.version == "v1"
    with pytest.raises(ModelNotReady, match="failed to load"):
        runtime.pipeline.route("digits-sklearn", "v7")
    with pytest.raises(ModelNotFound):
        runtime.pipeline.route("digits-sklearn", "v3")


def test_weights_must_name_configured_versions():
    with pytest.raises(ValueError, match="not loaded"):
        config(**{"m": {"versions": ["v1"], "weights": {"v2": 100}}})


def test_per_model_batching_overrides_defaults():
    cfg = ServingConfig.model_validate(
        {"defaults": {"max_batch_size": 8}, "models": {"a": {"versions": ["v1"], "batching": {"max_latency_ms": 5}}, "b": {"versions": ["v1"]}}}
    )
    assert cfg.batch_settings("a").max_batch_size == 8 and cfg.batch_settings("a").max_latency_ms == 5
    assert cfg.batch_settings("b").max_latency_ms == 50
