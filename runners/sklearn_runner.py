"""scikit-learn estimators saved with joblib; the device setting does not apply."""

from __future__ import annotations

import bentoml
import joblib
import numpy as np

from runners.base import Runner


class SklearnRunner(Runner):
    framework = "sklearn"

    def __init__(self, model: bentoml.Model, device: str = "cpu") -> None:
        super().__init__(model, "cpu")
        self.estimator = joblib.load(model.path_of("model.joblib"))

    def predict_rows(self, batch: np.ndarray) -> np.ndarray:
        return self.estimator.predict_proba(batch).astype(np.float32, copy=False)
