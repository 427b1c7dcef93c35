"""The demo's scikit-learn classifiers saved with joblib by `models.build`; the device setting does not apply.

Linear pipelines run folded into one matrix product (see `runners.sklearn_affine`): the
same probabilities without scikit-learn's per-call validation.
"""

from __future__ import annotations

import bentoml
import joblib
import numpy as np

from runners.base import Inputs, Runner
from runners.sklearn_affine import compile_classifier


class SklearnRunner(Runner):
    formats = ("sklearn",)

    def __init__(self, model: bentoml.Model, device: str = "cpu") -> None:
        super().__init__(model, "cpu")
        self.estimator = joblib.load(model.path_of("model.joblib"))
        self.folded = compile_classifier(self.estimator, self.probe_rows())
        self._predict = (self.folded or self.estimator).predict_proba

    def probe_rows(self) -> np.ndarray:
        """Random valid rows, one more than the features, so agreement on them pins down an affine map."""
        spec = self.input_spec
        width = int(np.prod(spec.row_shape))
        low = spec.min_value if spec.min_value is not None else -1.0
        high = spec.max_value if spec.max_value is not None else 1.0
        rows = np.random.default_rng(0).uniform(low, high, size=(width + 1, *spec.row_shape))
        return rows.astype(spec.dtype)

    def predict(self, inputs: Inputs) -> dict[str, np.ndarray]:
        (batch,) = inputs.values()
        return {"probabilities": self._predict(batch).astype(np.float32, copy=False)}
