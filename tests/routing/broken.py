"""Versions built by the tests to be rolled back: one that raises, one that is slow, one far slower.

They pass the service's warm-up (one value throughout, the middle of the declared range: see
`sample_inputs` in models/spec.py) so that they load and take traffic; real inputs then show the fault.
"""

from __future__ import annotations

import time

import numpy as np

from tests.pickled import demo_estimator, pickled, save_pickled


def is_warmup(x: np.ndarray) -> bool:
    """The warm-up's input: one value throughout (a digit image never is)."""
    return bool(np.all(x == x.flat[0]))


class RaisingEstimator:
    classes_ = np.arange(10)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if is_warmup(x):
            return np.full((len(x), 10), 0.1)
        raise RuntimeError("this version is broken")


class SlowEstimator:
    def __init__(self, inner, delay_s: float) -> None:
        self.inner, self.delay_s = inner, delay_s
        self.classes_ = inner.classes_

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if not is_warmup(x):
            time.sleep(self.delay_s)
        return self.inner.predict_proba(x)


def build_broken_versions() -> None:
    save_pickled("digits-sklearn:broken", pickled(RaisingEstimator()))
    good = demo_estimator()
    save_pickled("digits-sklearn:slow", pickled(SlowEstimator(good, delay_s=0.05)))
    save_pickled("digits-sklearn:stuck", pickled(SlowEstimator(good, delay_s=1.0)))
