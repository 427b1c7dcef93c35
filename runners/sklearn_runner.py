"""The demo's scikit-learn classifiers saved with joblib by `models.build`; the device setting does not apply.

Linear pipelines run folded into one matrix product (see `runners.sklearn_affine`): the
same probabilities without scikit-learn's per-call validation.
"""

from __future__ import annotations

import os
import pickle

import bentoml
import joblib
import numpy as np

from runners.base import Inputs, Runner
from runners.sklearn_affine import compile_classifier


class SklearnRunner(Runner):
    formats = ("sklearn",)

    def __init__(self, model: bentoml.Model, device: str = "cpu") -> None:
        super().__init__(model, "cpu")
        self.estimator = _read(model.path_of("model.joblib"))
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


def _read(path: str):
    """The estimator; a file that does not unpickle says so, not `IndexError: pop from empty list`."""
    try:
        return joblib.load(path)
    except (pickle.UnpicklingError, EOFError, IndexError, KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{os.path.basename(path)} is not a readable joblib file (truncated or corrupt?): "
                             f"{type(exc).__name__}: {exc}") from None


class ModelFileError(Exception):
    """A version's file cannot be read as the format its metadata names."""
