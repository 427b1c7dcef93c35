"""Deploying a model as a version the store gives a meaning of its own is refused, though the model itself is fine."""

from __future__ import annotations

import bentoml
import pytest

from core.errors import ModelRefused
from models.importer import import_model
from tests.models import makers


def test_a_deploy_as_latest_is_refused(model_store, tmp_path, name, settings):
    made = makers.iris_skops(tmp_path)  # a model the same call imports as v1
    with pytest.raises(ModelRefused, match="version 'latest' is reserved") as info:
        import_model(name, "latest", made.path, settings=settings)
    assert info.value.status == 422
    with pytest.raises(bentoml.exceptions.NotFound):
        bentoml.models.get(f"{name}:latest")
    assert import_model(name, "v1", made.path, settings=settings).tag.version == "v1"
