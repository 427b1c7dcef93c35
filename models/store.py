"""Saving to and reading from the BentoML model store, one way for every framework.

Every model is a directory in the store written through `bentoml.models.create` (the
framework-neutral API of BentoML 1.4), with the signature, framework and held-out
accuracy in its metadata, so a runner can serve it knowing only the tag.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import NotFound

from models.signature import Signature


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
) -> bentoml.Model:
    """Create `tag` in the store; `write` puts the model's files into the given directory."""
    metadata: dict[str, Any] = {
        "framework": framework,
        "task": task,
        "accuracy": round(float(accuracy), 4),
        **signature.to_metadata(),
        **(extra or {}),
    }
    labels = {"framework": framework, "task": task, "project": "rtserve"}
    with bentoml.models.create(tag, labels=labels, metadata=metadata, module="rtserve") as model:
        write(Path(model.path))
    return bentoml.models.get(tag)


def delete(tag: str) -> None:
    bentoml.models.delete(tag)
