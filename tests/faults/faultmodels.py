"""Versions with a fault built in, saved as joblib files (`tests.pickled`) so the real sklearn runner serves them.

The server unpickles these classes, so they live in an importable module (the server runs in
the project root). Each passes its warm-up (constant inputs of 1.0) so that it loads.
"""

from __future__ import annotations

import time

import numpy as np

from tests.pickled import demo_estimator, pickled, save_pickled

POISON = 16.0
"""A first pixel of this value makes `PickyEstimator` raise: a fault that only some inputs trigger."""


class PickyEstimator:
    """Scores like the estimator it wraps, but raises on rows whose first pixel is `POISON`."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.classes_ = inner.classes_

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
        self.classes_ = inner.classes_

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        time.sleep(self.delay_s)
        return self.inner.predict_proba(x)


def build_fault_versions(slow_delay_s: float) -> None:
    """`faults-picky:v1`, `faults-slow:v1` and `digits-sklearn:corrupt` (its model file is not a joblib file)."""
    good = demo_estimator()
    save_pickled("faults-picky:v1", pickled(PickyEstimator(good)))
    save_pickled("faults-slow:v1", pickled(SleepyEstimator(good, slow_delay_s)))
    save_pickled("digits-sklearn:corrupt", b"\x00 truncated upload \x00" * 8)
