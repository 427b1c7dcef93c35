"""Settings of the inference modes beside real time: batch jobs and HTTP streams, read when the service starts."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class JobSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTSERVE_JOBS_")

    enabled: bool = True
    """Serve /v2/jobs (scope `batch`)."""
    max_body_bytes: int = Field(128 * 1024 * 1024, gt=0)
    """Largest job submission (JSON rows, or an .npy / .npz upload); larger ones get 413 before they are read."""
    upload_timeout_s: float = Field(8.0, gt=0)
    """Longest a client may take to send a submission. BentoML answers 504 to any request that has not
    started its response within RTSERVE_TRAFFIC_TIMEOUT_S (10 s), so keep this under it."""
    max_rows: int = Field(1_000_000, gt=0)
    """Most rows in one job."""
    busy_step_s: float = Field(0.1, gt=0)
    """A job runs a batch whenever no real-time request is in flight in its worker; while real-time
    requests keep the worker busy without a pause, it runs one batch per this interval, so it still
    progresses (64 rows per 0.1 s, a fraction of a per cent of the worker)."""
    max_running: int = Field(1, ge=1)
    """Jobs a worker runs at once; later ones wait (state `queued`)."""
    max_active_per_tenant: int = Field(8, ge=1)
    """Queued and running jobs a tenant may have; another submission is refused with 429."""
    max_stored_per_tenant: int = Field(1000, ge=1)
    """Jobs a tenant may keep, in any state, until their retention ends; another submission is refused with 429."""
    max_result_bytes_per_tenant: int = Field(1024**3, gt=0)
    """Result bytes a tenant may keep; past it a submission is refused with 429, and a running job whose results
    outgrow what its tenant had left when it was submitted stops, `failed`, with the rows written so far."""
    retention_s: float = Field(24 * 3600.0, gt=0)
    """How long a job's status and results are kept after it finished."""
    flush_rows: int = Field(8192, gt=0)
    """Result rows gathered before they are written to the store (and the cancel flag is read)."""
    heartbeat_s: float = Field(2.0, gt=0)
    """How often a worker records the progress of its jobs; a job without a record for ten times
    this long belonged to a worker that stopped, and reads as failed."""
    state_dir: Path = Path(".rtserve/jobs")
    """Where jobs are kept without Redis: shared by the workers of one machine."""
    redis_prefix: str = "rtserve:jobs:"
    """Prefix of the Redis keys of jobs (with REDIS_URL)."""


class StreamSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTSERVE_STREAM_")

    max_in_flight: int = Field(32, ge=1)
    """Items of one stream being served at once; the body is not read further until one completes."""
    idle_timeout_s: float = Field(30.0, gt=0)
    """Longest wait for the next item of a stream; past it the stream ends with an error line.
    Streams are exempt from the whole-body read timeout."""
    max_line_bytes: int = Field(4 * 1024 * 1024, gt=0)
    """Longest item (one line); a longer one fails with 413's code and the stream ends."""
