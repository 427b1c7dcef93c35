"""Versions the fault tests put straight into the store, past the importer (whose probe load would refuse
them): estimators that raise or stall on some inputs, and files that are not pickles at all. They are
saved as the importer records a joblib file (`format: pickle`, with its SHA-256), so the real
scikit-learn runner serves them.
"""

from __future__ import annotations

import hashlib
import io

import bentoml
import joblib

from demo.build import DIGITS_ROW
from models import store
from models.signature import Signature, classifier_outputs

FILE = "model.joblib"


def pickled(estimator: object) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    return buffer.getvalue()


def save_pickled(tag: str, content: bytes) -> None:
    """`tag` as a digits classifier whose file holds `content` (see `pickled`), unless it exists."""
    if store.exists(tag):
        return
    store.save(tag, framework="sklearn", task="classification", signature=Signature((DIGITS_ROW,), classifier_outputs(10)),
               accuracy=0.0, write=lambda d: (d / FILE).write_bytes(content),
               extra={"format": "pickle", "file": FILE, "sha256": {FILE: hashlib.sha256(content).hexdigest()}})


def demo_estimator(tag: str = "digits-sklearn:v1") -> object:
    """A demo model's fitted pipeline, to wrap or copy."""
    import skops.io as sio

    model = bentoml.models.get(tag)
    meta = model.info.metadata
    return sio.load(model.path_of(meta["file"]), trusted=meta["trusted_types"])
