"""A batch job: which model version runs which rows for which tenant, and how far it got."""

from __future__ import annotations

import enum
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


WORKER_LOST = "the worker running this job stopped; submit it again"


JOB_ID = re.compile(r"[0-9a-f]{24}")
"""The ids `new_job_id` makes; anything else names no job and is refused before it reaches a file name or a key."""


def new_job_id() -> str:
    """Unguessable: an id is not a credential (jobs are checked against the tenant), but it should not leak counts."""
    return secrets.token_hex(12)


def is_job_id(text: str) -> bool:
    return JOB_ID.fullmatch(text) is not None


@dataclass
class Job:
    id: str
    tenant: str
    model: str
    version: str
    rows: int
    state: JobState = JobState.QUEUED
    rows_done: int = 0
    """Rows answered, with outputs or with their own error."""
    rows_failed: int = 0
    """Rows answered with an error (bad input, model error, not run)."""
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    heartbeat_at: float = field(default_factory=time.time)
    error: str | None = None
    """Why the job stopped before its last row, when it did."""
    subject: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["state"] = self.state.value
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Job:
        return cls(**{**doc, "state": JobState(doc["state"])})

    def seen_at(self, now: float, heartbeat_s: float) -> Job:
        """The job as readers should see it: one whose worker stopped recording it reads as failed."""
        if not self.state.finished and now - self.heartbeat_at > 10 * heartbeat_s:
            return Job.from_dict({**self.to_dict(), "state": JobState.FAILED.value, "error": WORKER_LOST,
                                  "finished_at": self.heartbeat_at})
        return self

    def rows_per_second(self, now: float) -> float | None:
        if self.started_at is None:
            return None
        elapsed = (self.finished_at or now) - self.started_at
        return round(self.rows_done / elapsed, 1) if elapsed > 0 else None

    def public(self, now: float, retention_s: float) -> dict[str, Any]:
        """What the API shows: no heartbeat, plus the rate and when the results go away."""
        doc = self.to_dict()
        del doc["heartbeat_at"]
        doc["rows_per_second"] = self.rows_per_second(now)
        doc["expires_at"] = self.finished_at + retention_s if self.finished_at is not None else None
        return doc
