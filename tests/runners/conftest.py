from __future__ import annotations

import pytest

from runners.loader import load_runner


@pytest.fixture(scope="session")
def runners(model_store) -> dict:
    """One real runner per demo model (v1), sharing member runners like the service does."""
    cache: dict = {}
    return {name: load_runner(f"{name}:v1", "cpu", cache) for name in
            ("digits-sklearn", "digits-torch", "digits-onnx", "digits-ensemble", "seq-torch")}
