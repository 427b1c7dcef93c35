"""Settings of the gRPC front end, read from the environment (prefix RTSERVE_GRPC_) when the service starts."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GrpcSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTSERVE_GRPC_")

    enabled: bool = True
    """Serve the KServe V2 gRPC API beside the HTTP API, in the same workers."""
    host: str = "0.0.0.0"
    """Address the gRPC port binds to."""
    port: int = Field(3001, ge=1, le=65535)
    """The gRPC port; the workers of one service share it, a second service is refused it."""
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    """Largest request or response message; larger ones are refused with RESOURCE_EXHAUSTED. A load with files
    (RepositoryModelLoad) has a limit of its own, RTSERVE_REPOSITORY_MAX_LOAD_BYTES."""
    stream_max_in_flight: int = Field(64, ge=1)
    """Items of one ModelStreamInfer stream being served at once; the stream is not read further until one is done."""
    stream_idle_timeout_s: float = Field(30.0, gt=0)
    """Longest a ModelStreamInfer stream may go without an item (it authenticated once, at its start): past it,
    once the items in flight are answered, the call ends with DEADLINE_EXCEEDED, as an HTTP stream ends
    past RTSERVE_STREAM_IDLE_TIMEOUT_S."""
    shutdown_grace_s: float = Field(5.0, ge=0)
    """How long calls in progress may finish when the worker stops."""
    lock_dir: Path = Path(tempfile.gettempdir())
    """Where the port's lock file lies (`rtserve-grpc-<port>.lock`): every service on this machine must see the same one."""
