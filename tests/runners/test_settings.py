"""Per-model batching overrides take every `defaults` field, with the same bounds, and nothing else."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from runners.settings import BatchSettings, ServingConfig


def serving(batching: dict) -> ServingConfig:
    return ServingConfig.model_validate({"models": {"m": {"versions": ["v1"], "batching": batching}}})


def test_every_default_can_be_overridden_per_model():
    changed = {"max_batch_size": 8, "max_latency_ms": 5.0, "max_queue_rows": 16, "inline_max_ms": 0.0, "workers": 2,
               "device": "cpu", "priority_levels": 4, "default_priority": 4, "warmup_lengths": [16, 512],
               "intra_op_threads": 2}
    assert set(changed) == set(BatchSettings.model_fields)
    assert serving(changed).batch_settings("m") == BatchSettings(**changed)
    assert serving({}).batch_settings("m") == BatchSettings()


@pytest.mark.parametrize("batching", [{"max_batch_size": 0}, {"max_latency_ms": 0}, {"device": "tpu"}, {"priority_levels": 17},
                                      {"max_batch_siz": 4}, {"default_priority": 5}, {"warmup_lengths": []},
                                      {"warmup_lengths": [0, 8]}, {"intra_op_threads": 0}])
def test_an_override_is_held_to_the_defaults_bounds(batching):
    with pytest.raises(ValidationError):
        serving(batching)


def test_one_thread_cap_for_every_framework_read_under_its_former_name_too():
    assert ServingConfig.model_validate({"models": {}}).intra_op_threads == 1
    assert ServingConfig.model_validate({"intra_op_threads": 2, "models": {}}).intra_op_threads == 2
    assert ServingConfig.model_validate({"torch_threads": 2, "models": {}}).intra_op_threads == 2
    with pytest.raises(ValidationError):
        ServingConfig.model_validate({"intra_op_threads": 0, "models": {}})


def test_threads_of_every_model_are_the_top_level_cap_not_a_default():
    with pytest.raises(ValidationError, match="set intra_op_threads per model"):
        ServingConfig.model_validate({"defaults": {"intra_op_threads": 2}, "models": {}})
