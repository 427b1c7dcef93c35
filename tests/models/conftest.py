from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from models.settings import ImportSettings


@pytest.fixture
def settings() -> ImportSettings:
    """An operator who allows formats that run code (each deploy must still ask)."""
    return ImportSettings(allow_code_formats=True, probe_timeout_s=120, probe_memory_mb=1500)


@pytest.fixture
def runtimes_importable(monkeypatch) -> None:
    """A user's own runtime is found on PYTHONPATH, in the probe's process too: here, tests/models/runtimes.py
    (the probe keeps PYTHONPATH, and a fresh clone has no other way to import the `tests` package)."""
    root = str(Path(__file__).resolve().parents[2])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))


@pytest.fixture
def name() -> str:
    """A model name of the test's own in the session's store."""
    return f"own-{uuid.uuid4().hex[:10]}"
