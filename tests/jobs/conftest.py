"""Jobs and streams in process: the service's HTTP app over the session's model store, jobs kept in a test folder."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.inprocess import InProcess, serve_in_process

MODELS = {
    "digits-sklearn": {"versions": ["v1", "v2"], "weights": {"v1": 100}},
    "seq-torch": {"versions": ["v1"]},
    "digits-torch": {"versions": ["v1"]},
    "digits-onnx": {"versions": ["v1"]},
    "digits-ensemble": {"versions": ["v1"]},
}


@pytest.fixture
def digits() -> np.ndarray:
    return load_digits().data.astype(np.float32)


@pytest.fixture
async def app(model_store, tmp_path, monkeypatch) -> AsyncIterator[InProcess]:
    monkeypatch.setenv("RTSERVE_JOBS_STATE_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("RTSERVE_JOBS_FLUSH_ROWS", "256")
    monkeypatch.setenv("RTSERVE_STREAM_IDLE_TIMEOUT_S", "0.5")
    async with serve_in_process(tmp_path, MODELS, metrics=True) as served:
        yield served
