"""Request limits; read from the environment (prefix RTSERVE_LIMIT_) when the service starts."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class LimitSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTSERVE_LIMIT_")

    max_body_bytes: int = 4 * 1024 * 1024
    """Largest request body; larger ones get 413 before they are read."""
    max_rows: int = 1024
    """Most rows (first dimension) in one request."""
    max_elements: int = 1_000_000
    """Most tensor elements in one request, across inputs."""
    max_sequence_length: int = 512
    """Longest variable dimension of an input (e.g. tokens per sequence)."""
    allow_non_finite: bool = False
    """Accept NaN and infinity in float inputs (no demo model does)."""
