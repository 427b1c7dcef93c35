"""Versions with a fault built in, saved like the demo models so the real sklearn runner serves them.

The server unpickles these classes, so they live in an importable module (the server runs in
the project root). Each passes its warm-up (constant inputs of 1.0) so that it loads.
"""

from __future__ import annotations

import time

import joblib
import numpy as np

from models import store
from models.build import DIGITS_ROW
from models.signature import Signature, classifier_outputs

POISON = 16.0
"""A first pixel of this value makes `PickyEstimator` raise: a fault that only some inputs trigger."""


class PickyEstimator:
    """Scores like the estimator it wraps, but raises on rows whose first pixel is `POISON`."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        bad = np.flatnonzero(x[:, 0] == POISON)
        if len(bad):
            raise ValueError(f"cannot score rows whose first pixel is {POISON:g} (batch rows {bad.tolist()})")
        return self.inner.predict_proba(x)


class SleepyEstimator:
    """Scores like the estimator it wraps after sleeping `delay_s` per call, warm-up included, so the
    batcher learns its real cost."""

    def __init__(self, inner, delay_s: float) -> None:
        self.inner, self.delay_s = inner, delay_s

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        time.sleep(self.delay_s)
        return self.inner.predict_proba(x)


def _save(tag: str, write) -> None:
    if not store.exists(tag):
        store.save(
            tag,
            framework="sklearn",
            task="classification",
            signature=Signature((DIGITS_ROW,), classifier_outputs(10)),
            accuracy=0.0,
            write=write,
        )


def build_fault_versions(slow_delay_s: float) -> None:
    """`faults-picky:v1`, `faults-slow:v1` and `digits-sklearn:corrupt` (its model file is not a joblib file)."""
    import bentoml

    good = joblib.load(bentoml.models.get("digits-sklearn:v1").path_of("model.joblib"))
    _save("faults-picky:v1", lambda d: joblib.dump(PickyEstimator(good), d / "model.joblib"))
    _save("faults-slow:v1", lambda d: joblib.dump(SleepyEstimator(good, slow_delay_s), d / "model.joblib"))
    _save("digits-sklearn:corrupt", lambda d: (d / "model.joblib").write_bytes(b"\x00 truncated upload \x00" * 8))
