"""scikit-learn estimators and pipelines (skops files, or joblib/pickle where the operator allows them);
the device setting does not apply.

Linear pipelines of one numeric input run folded into one matrix product (see `runners.sklearn_affine`):
the same probabilities without scikit-learn's per-call validation, which is nearly all the work of a
one-row request. Anything else runs through the estimator, as `models.formats.sklearn` does in the probe.
"""

from __future__ import annotations

import bentoml
import numpy as np

from models.formats.sklearn import SCORES
from runners.base import Inputs
from runners.file_runner import FileRunner
from runners.sklearn_affine import compile_classifier


class SklearnRunner(FileRunner):
    formats = ("skops", "pickle")

    def __init__(self, model: bentoml.Model, device: str = "cpu", threads: int | None = None) -> None:
        super().__init__(model, "cpu", threads)
        self.estimator = self.loaded
        spec = self.input_spec
        foldable = len(self.signature.inputs) == 1 and spec.datatype != "BYTES" and len(spec.shape) == 2 and spec.shape[1] > 0
        self.folded = compile_classifier(self.estimator, self.probe_rows()) if foldable else None

    def probe_rows(self) -> np.ndarray:
        """Random valid rows, one more than the features, so agreement on them pins down an affine map."""
        spec = self.input_spec
        width = int(np.prod(spec.row_shape))
        low = spec.min_value if spec.min_value is not None else -1.0
        high = spec.max_value if spec.max_value is not None else 1.0
        rows = np.random.default_rng(0).uniform(low, high, size=(width + 1, *spec.row_shape))
        return rows.astype(spec.dtype)

    def predict(self, inputs: Inputs) -> dict[str, np.ndarray]:
        if self.folded is None:
            return super().predict(inputs)
        (batch,) = inputs.values()
        return {SCORES: self.folded.predict_proba(batch)}
