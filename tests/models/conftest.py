from __future__ import annotations

import uuid

import pytest

from models.settings import ImportSettings


@pytest.fixture
def settings() -> ImportSettings:
    """An operator who allows formats that run code (each deploy must still ask)."""
    return ImportSettings(allow_code_formats=True, probe_timeout_s=120, probe_memory_mb=1500)


@pytest.fixture
def name() -> str:
    """A model name of the test's own in the session's store."""
    return f"own-{uuid.uuid4().hex[:10]}"
