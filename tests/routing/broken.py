"""Versions built by the tests to be rolled back: one that raises, one that is slow, one far slower.

They pass the service's warm-up (one value throughout, the middle of the declared range: see
`sample_inputs` in models/spec.py) so that they load and take traffic; real inputs then show the fault.
"""

from __future__ import annotations

import time

import joblib
import numpy as np

from models import store
from models.build import DIGITS_ROW
from models.signature import Signature, classifier_outputs


def is_warmup(x: np.ndarray) -> bool:
    """The warm-up's input: one value throughout (a digit image never is)."""
    return bool(np.all(x == x.flat[0]))


class RaisingEstimator:
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if is_warmup(x):
            return np.full((len(x), 10), 0.1)
        raise RuntimeError("this version is broken")


class SlowEstimator:
    def __init__(self, inner, delay_s: float) -> None:
        self.inner, self.delay_s = inner, delay_s

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if not is_warmup(x):
            time.sleep(self.delay_s)
        return self.inner.predict_proba(x)


def save_estimator(tag: str, estimator) -> None:
    """Save like models/build.py does, so the real sklearn runner serves it."""
    if store.exists(tag):
        return
    store.save(tag, framework="sklearn", task="classification", signature=Signature((DIGITS_ROW,), classifier_outputs(10)),
               accuracy=0.0, write=lambda d: joblib.dump(estimator, d / "model.joblib"))


def build_broken_versions() -> None:
    import bentoml

    save_estimator("digits-sklearn:broken", RaisingEstimator())
    good = joblib.load(bentoml.models.get("digits-sklearn:v1").path_of("model.joblib"))
    save_estimator("digits-sklearn:slow", SlowEstimator(good, delay_s=0.05))
    save_estimator("digits-sklearn:stuck", SlowEstimator(good, delay_s=1.0))
