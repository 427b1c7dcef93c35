"""Where the model repository is and how hard a pull tries."""

from __future__ import annotations

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ModelRepositorySettings(BaseSettings):
    """`RTSERVE_MODEL_REPOSITORY=s3://bucket/prefix`; endpoint, region and credentials from the standard AWS
    variables, as every S3 tool reads them, each overridable by its `RTSERVE_MODEL_REPOSITORY_` twin."""

    model_config = SettingsConfigDict(env_prefix="RTSERVE_MODEL_REPOSITORY_", populate_by_name=True)

    url: str | None = Field(None, validation_alias=AliasChoices("RTSERVE_MODEL_REPOSITORY", "url"))
    """s3://bucket/prefix; unset: no repository, models reach a replica only through its own store (the Bento)."""
    endpoint_url: str | None = Field(
        None, validation_alias=AliasChoices("RTSERVE_MODEL_REPOSITORY_ENDPOINT_URL", "AWS_ENDPOINT_URL", "endpoint_url"))
    """An S3-compatible endpoint (SeaweedFS, MinIO, Ceph); unset: AWS's own."""
    access_key_id: str | None = Field(
        None, validation_alias=AliasChoices("RTSERVE_MODEL_REPOSITORY_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID", "access_key_id"))
    secret_access_key: str | None = Field(
        None, validation_alias=AliasChoices("RTSERVE_MODEL_REPOSITORY_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY",
                                            "secret_access_key"), repr=False)
    region: str | None = Field(None, validation_alias=AliasChoices("RTSERVE_MODEL_REPOSITORY_REGION", "AWS_REGION", "region"))
    pull_deadline_s: float = Field(600.0, gt=0)
    """How long a worker keeps retrying a pull (storage down, version not there yet, a corrupt copy) before the
    version fails to load in it; its traffic stays on the ready versions meanwhile."""
    backoff_s: float = Field(0.5, gt=0)
    """The first wait between pull attempts; it doubles after each failure up to `backoff_max_s`."""
    backoff_max_s: float = Field(15.0, gt=0)
    timeout_s: float = Field(10.0, gt=0)
    """Connect and read timeout of one S3 call: a stalled endpoint fails the attempt instead of hanging it."""

    @field_validator("url")
    @classmethod
    def _s3(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        bucket = value.removeprefix("s3://").split("/", 1)[0]
        if not value.startswith("s3://") or not bucket:
            raise ValueError(f"must be s3://bucket/prefix, not {value!r}")
        return value.rstrip("/")

    @property
    def root(self) -> str:
        """bucket/prefix, as s3fs names paths."""
        assert self.url is not None
        return self.url.removeprefix("s3://")
