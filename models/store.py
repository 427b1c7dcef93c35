"""Saving to and reading from the BentoML model store, one way for every framework.

Every model is a directory in the store written through `bentoml.models.create` (the
framework-neutral API of BentoML 1.4), with the signature, framework and held-out
accuracy in its metadata, so a runner can serve it knowing only the tag. The metadata also
declares the inference modes the version supports (`real_time`, `batch`, `streaming`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import NotFound

from models.declared import MODES
from models.signature import Signature
from models.writable_store import is_linked

__all__ = ["MODES", "create", "delete", "exists", "modes_of", "save"]


def modes_of(metadata: Mapping[str, Any]) -> tuple[str, ...]:
    """The modes a version declares. Versions saved before modes were recorded declare none and
    keep serving in every mode, as they did before."""
    declared = metadata.get("modes")
    return MODES if declared is None else tuple(m for m in MODES if m in declared)


def exists(tag: str) -> bool:
    try:
        bentoml.models.get(tag)
    except NotFound:
        return False
    return True


def save(
    tag: str,
    *,
    framework: str,
    task: str,
    signature: Signature,
    accuracy: float,
    write: Callable[[Path], None],
    extra: dict[str, Any] | None = None,
    modes: Iterable[str] = MODES,
) -> bentoml.Model:
    """Create `tag` in the store; `write` puts the model's files into the given directory."""
    modes = list(modes)
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        raise ValueError(f"{tag}: modes must be a non-empty subset of {list(MODES)}, not {modes}")
    metadata: dict[str, Any] = {
        "framework": framework,
        "task": task,
        "accuracy": round(float(accuracy), 4),
        "modes": [m for m in MODES if m in modes],
        **signature.to_metadata(),
        **(extra or {}),
    }
    return create(tag, metadata, write)


def create(tag: str, metadata: dict[str, Any], write: Callable[[Path], None]) -> bentoml.Model:
    """Create `tag` with `metadata` (which names its framework and task); `write` fills its directory."""
    labels = {"framework": metadata["framework"], "task": metadata["task"], "project": "rtserve"}
    with bentoml.models.create(tag, labels=labels, metadata=metadata, module="rtserve") as model:
        write(Path(model.path))
    return bentoml.models.get(tag)


def delete(tag: str) -> None:
    """Remove a version from the store. A Bento's version linked into it (models/writable_store.py) loses its
    link only: the Bento is read-only and may be served by other replicas."""
    path = Path(bentoml.models.get(tag).path)
    if is_linked(path):
        path.unlink()
        path.mkdir()  # an empty folder in the link's place, which BentoML removes, setting the model's latest anew
    bentoml.models.delete(tag)
