"""Backup and restore of what serving.yaml cannot rebuild: every model's routes (weights, experiment, canary,
shadow, runtime-loaded models) and the stored versions those routes name.

    doc = await take(admin)                 # GET /admin/backup, `rtserve backup FILE`
    summary = await restore(admin, doc)     # POST /admin/restore, `rtserve restore FILE`

A backup is one JSON document. With a local model store it carries each version as BentoML's own export
(`bentoml.models.export_model`, base64), so a machine that lost its store gets the same files back; when
RTSERVE_MODEL_REPOSITORY names an object-storage repository, which keeps the files itself, a version is
only a reference to it. A restore imports the versions the store lacks, then writes each model's document
back through the routing state, so every worker and replica follows as after any admin change: versions
not held are loaded, routes re-weighted. Imports count against the store's quota like a deploy (507). Models the backup does not name are left as they are. Both are
recorded in the audit log.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Literal

import bentoml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.errors import InvalidInput, shown
from models import store
from models.retention import check_quota
from routing.admin import RoutingAdmin
from routing.audit import record
from routing.document import ModelRoutes

FORMAT = 1
OBJECT_STORAGE = ("s3://", "gs://", "az://")


class StoredVersion(BaseModel):
    """One version the routes name: its files (BentoML's export, base64) or where the repository keeps them."""

    model_config = ConfigDict(extra="forbid")

    archive: str | None = None
    sha256: str | None = None
    """Of the decoded archive, checked before it is imported."""
    reference: str | None = None

    @model_validator(mode="after")
    def _one(self) -> StoredVersion:
        if (self.archive is None) == (self.reference is None):
            raise ValueError("a stored version has either an archive or a reference")
        if self.archive is not None and self.sha256 is None:
            raise ValueError("an archive needs its sha256")
        return self


class Backup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal[1]
    """Required: a document without it is not a backup of this kind."""
    created_at: float = Field(strict=True, ge=0)
    """Unix time; strict, so `false` or `"0"` is refused rather than read as 0."""
    repository: str | None = None
    """The object-storage repository the references point into; None for a local store."""
    routes: dict[str, ModelRoutes]
    versions: dict[str, StoredVersion]
    """NAME:VERSION -> its files or reference."""

    @field_validator("format", mode="before")
    @classmethod
    def _a_number(cls, value: object) -> object:
        if isinstance(value, bool):  # True == 1 would pass Literal[1]
            raise ValueError("format must be the number 1")  # noqa: TRY004 - pydantic reports ValueError, not TypeError
        return value


def repository() -> str | None:
    """The object-storage model repository, when the server pulls its versions from one."""
    uri = os.environ.get("RTSERVE_MODEL_REPOSITORY", "")
    return uri.rstrip("/") if uri.startswith(OBJECT_STORAGE) else None


def referenced(routes: dict[str, ModelRoutes]) -> list[str]:
    """NAME:VERSION of every version a route names (the document keeps every named version in `loaded`)."""
    return sorted({f"{name}:{v}" for name, r in routes.items() for v in r.loaded})


async def take(admin: RoutingAdmin) -> Backup:
    routes = await admin.store.get_all()
    repo = repository()
    versions: dict[str, StoredVersion] = {}
    for tag in referenced(routes):
        if repo is not None:
            name, version = tag.split(":", 1)
            versions[tag] = StoredVersion(reference=f"{repo}/{name}/{version}")
        elif store.exists(tag):  # a version whose files were lost cannot be backed up; its routes still are
            versions[tag] = await asyncio.to_thread(_export, tag)
    doc = Backup(format=FORMAT, created_at=time.time(), repository=repo, routes=routes, versions=versions)
    await record(admin.audit, "backup", None, None, None, f"{len(routes)} models, {len(versions)} stored versions")
    return doc


async def restore(admin: RoutingAdmin, raw: object) -> dict[str, list[str]]:
    """Import the versions the store lacks, then write back each model's routes; what was done, by kind."""
    try:
        doc = Backup.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InvalidInput(f"not an rtserve backup: {'.'.join(str(p) for p in err.get('loc', ()))}: {err['msg']}") from None
    missing = sorted(set(referenced(doc.routes)) - set(doc.versions) - {t for t in referenced(doc.routes) if store.exists(t)})
    if missing:
        raise InvalidInput(f"the backup's routes name versions it holds no files for and the store lacks: {shown(missing)}")
    wanted = {tag: stored for tag, stored in doc.versions.items() if stored.archive is not None and not store.exists(tag)}
    await asyncio.to_thread(check_quota, sum(len(s.archive or "") * 3 // 4 for s in wanted.values()), admin.retention)
    imported, present = [], []
    for tag, stored in sorted(doc.versions.items()):
        if stored.archive is None or store.exists(tag):
            present.append(tag)
            continue
        await asyncio.to_thread(_import, tag, stored)
        imported.append(tag)
    for name, routes in sorted(doc.routes.items()):
        await admin.replace(name, routes, "restore")
    await record(admin.audit, "restore", None, None, None,
                 f"{len(doc.routes)} models; imported {len(imported)} versions, {len(present)} already stored")
    return {"models": sorted(doc.routes), "imported": imported, "present": present}


def _export(tag: str) -> StoredVersion:
    with tempfile.TemporaryDirectory(prefix="rtserve-backup-") as tmp:
        path = bentoml.models.export_model(tag, str(Path(tmp) / "version.bentomodel"))
        data = Path(path).read_bytes()
    return StoredVersion(archive=base64.b64encode(data).decode("ascii"), sha256=hashlib.sha256(data).hexdigest())


def _import(tag: str, stored: StoredVersion) -> None:
    try:
        data = base64.b64decode(stored.archive or "", validate=True)
    except binascii.Error:
        raise InvalidInput(f"{shown(tag)}: the archive is not base64; the backup is damaged") from None
    if hashlib.sha256(data).hexdigest() != stored.sha256:
        raise InvalidInput(f"{shown(tag)}: the archive does not match its sha256; the backup is damaged")
    with tempfile.TemporaryDirectory(prefix="rtserve-restore-") as tmp:
        path = Path(tmp) / "version.bentomodel"
        path.write_bytes(data)
        model = bentoml.models.import_model(str(path))
    if str(model.tag) != tag:
        store.delete(str(model.tag))
        raise InvalidInput(f"{shown(tag)}: the archive holds {shown(str(model.tag))}")
