"""How much the model store keeps: a count of unserved versions per model, and a disk quota for deploys.

A version is served when the routes name it (traffic, a canary, a shadow, an experiment, or simply loaded)
or serving.yaml lists it; those are never removed. Of the others, the newest `keep_unserved_versions` of
a model stay (a rollback target, an earlier deploy), older ones leave the store after each deploy and
unload of that model. Without the setting nothing is removed.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path

import bentoml
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import StorageQuotaExceeded
from models import store
from models.writable_store import is_linked

log = logging.getLogger(__name__)
MB = 1_000_000


class StoreSettings(BaseSettings):
    """Read when the service starts."""

    model_config = SettingsConfigDict(env_prefix="RTSERVE_STORE_")

    keep_unserved_versions: int | None = Field(None, ge=0)
    """Versions of a model kept beyond the served ones (newest first); older unserved ones are removed from
    the store after each deploy and unload of the model. None keeps every version."""
    quota_mb: float | None = Field(None, gt=0)
    """Most megabytes the model store may hold; a deploy that would pass it is refused with 507
    `storage_quota_exceeded`. None: no quota."""


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file under a directory."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def store_bytes() -> int:
    """Bytes the model store holds now (every version of every model); a Bento's versions linked into it take
    no space of its own."""
    return sum(size_of(Path(m.path)) for m in bentoml.models.list() if not is_linked(Path(m.path)))


def check_quota(incoming_bytes: int, settings: StoreSettings) -> None:
    """Refuse `incoming_bytes` more when the store would pass its quota."""
    if settings.quota_mb is None:
        return
    used = store_bytes()
    if used + incoming_bytes > settings.quota_mb * MB:
        raise StorageQuotaExceeded(
            f"the model store holds {used / MB:.1f} MB; {incoming_bytes / MB:.1f} MB more would pass its quota of "
            f"{settings.quota_mb:g} MB (RTSERVE_STORE_QUOTA_MB). Unload and remove unused versions, or raise the quota")


def collect(name: str, served: Collection[str], settings: StoreSettings) -> list[str]:
    """Remove `name`'s unserved versions beyond the newest `keep_unserved_versions`; the tags removed."""
    if settings.keep_unserved_versions is None:
        return []
    try:
        stored = bentoml.models.list(name)
    except bentoml.exceptions.NotFound:
        return []
    unserved = sorted((m for m in stored if m.tag.version not in served), key=lambda m: m.creation_time, reverse=True)
    removed = []
    for model in unserved[settings.keep_unserved_versions:]:
        try:
            store.delete(str(model.tag))
        except bentoml.exceptions.NotFound:  # another worker removed it first
            continue
        removed.append(str(model.tag))
    if removed:
        log.info("store retention: removed %s (keeping %d unserved versions of %s)", removed, settings.keep_unserved_versions, name)
    return removed


