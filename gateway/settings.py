"""Gateway settings read from the environment when the service starts: request limits, Redis, open paths."""

from __future__ import annotations

import fnmatch
import re

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LimitSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTSERVE_LIMIT_")

    max_body_bytes: int = 4 * 1024 * 1024
    """Largest request body; larger ones get 413 before they are read."""
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    """Largest request line and headers together; past it, while they arrive, the connection is answered
    431 and closed (app/head_limit.py)."""
    max_rows: int = 1024
    """Most rows (first dimension) in one request."""
    max_elements: int = 1_000_000
    """Most tensor elements in one request, across inputs."""
    max_sequence_length: int = 512
    """Longest variable dimension of an input (e.g. tokens per sequence)."""
    max_strings: int = Field(65_536, ge=1)
    """Most elements of BYTES (string) inputs in one request's tensor; each becomes a Python object, so
    this is far below `max_elements`."""
    max_string_bytes: int = Field(65_536, ge=1)
    """Longest element of a BYTES input, in bytes of UTF-8."""
    allow_non_finite: bool = False
    """Accept NaN and infinity in float inputs (no demo model does)."""
    max_tensors: int = Field(64, ge=1)
    """Most named inputs in one request, and most outputs it may ask for by name. Checked before any
    input is decoded, so a request of 60,000 one-value inputs is refused as cheaply as a bad header."""
    max_dims: int = Field(8, ge=1, le=32)
    """Most dimensions of one input tensor; no served model needs more, and numpy allows at most 64."""
    request_timeout_s: float = Field(10.0, gt=0)
    """Longest a request may take from its first byte to its answer (streams excepted: they have an idle
    timeout between items); past it the request is cancelled and answered 504."""
    body_read_timeout_s: float = Field(5.0, gt=0)
    """Longest a client may take to send a request body; past it the request is answered 408.
    Bounds what a slow client can hold (uvicorn has no body timeout of its own); keep it under
    the request timeout."""


class GatewaySettings(BaseSettings):
    """What sits in front of the models; read when the service starts."""

    model_config = SettingsConfigDict(env_prefix="RTSERVE_")

    redis_url: str | None = Field(None, validation_alias=AliasChoices("REDIS_URL", "RTSERVE_REDIS_URL"))
    """Shared state (rate-limit buckets, cache, routes). Unset or empty: everything in-process."""
    open_paths: list[str] = ["/v2", "/v2/health/*", "/openapi.json", "/docs", "/docs/*"]
    """Paths (shell patterns) answered without a token when auth is on: server liveness and readiness (a
    status only), the API document and its interactive page. A model's readiness names the model, so it needs a token unless listed here. The metrics
    have a port of their own (RTSERVE_METRICS_PORT)."""

    def open_path_pattern(self) -> re.Pattern[str]:
        return re.compile("|".join(fnmatch.translate(p) for p in self.open_paths) or "(?!)")
