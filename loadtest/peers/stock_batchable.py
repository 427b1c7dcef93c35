"""Peer (b): the same scikit-learn model served the way BentoML documents it, `batchable=True`."""

from __future__ import annotations

import bentoml
import numpy as np
import skops.io as sio


@bentoml.service(name="stock-batchable", workers=1)
class StockBatchable:
    model_ref = bentoml.models.BentoModel("digits-sklearn:v1")

    def __init__(self) -> None:
        path = self.model_ref.path_of("model.skops")
        self.model = sio.load(path, trusted=sio.get_untrusted_types(file=path))  # the types the importer checked

    @bentoml.api(batchable=True)
    def predict(self, input: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(input)
