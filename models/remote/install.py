"""Putting a pulled version into this replica's BentoML store all at once, never half.

The files land in a folder next to the store, are checked against the manifest there, and only then
renamed into the store (one rename on one filesystem). A lock per version lets one worker of the replica
download while the others wait and then find it installed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def store_root() -> Path:
    """The store `bentoml.models.get` reads: BENTOML_HOME's, or a served Bento's own."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.model_store.get()._path)


def staging_root() -> Path:
    """Beside the store, on the same filesystem, so the final rename is atomic; outside it, so the store never lists it."""
    root = store_root().resolve().parent / "rtserve-pulls"
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def version_lock(name: str, version: str) -> Iterator[None]:
    """Held by the one worker of this replica that pulls NAME:VERSION."""
    path = staging_root() / f"{name}@{version}.lock"
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def staging(name: str, version: str) -> Iterator[Path]:
    """A fresh folder for one attempt; removed afterwards, whatever happened (installed, it is empty)."""
    path = Path(tempfile.mkdtemp(prefix=f"{name}@{version}.", dir=staging_root()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def install(name: str, version: str, staged: Path) -> None:
    """Move a checked folder into the store as NAME:VERSION (a version already there is kept as it is)."""
    target = store_root() / name / version
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staged, target)
    except OSError:
        if not target.is_dir():
            raise
        return
    latest = target.parent / "latest"
    if not latest.exists():
        latest.write_text(version)
