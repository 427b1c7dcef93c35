"""Runs a version through its format's reader (`models.formats`): boosters, PyTorch files and runtimes
named by import string (and, under `runners.sklearn_runner`, scikit-learn files).

A format that can run code was let in by the operator with its files' SHA-256 recorded; the
runner checks the file against that hash before opening it, so what a worker loads is the file
the probe load checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bentoml
import numpy as np

from core.errors import LoadFailed
from models import formats
from models.importer import sha256
from runners.base import Inputs, Runner

CPU_ONLY = ("xgboost", "lightgbm", "skops", "pickle")
OWN_THREADS = ("xgboost", "lightgbm")
"""Formats whose runtime takes a thread count per model: an XGBoost booster's `nthread`, LightGBM's per predict."""


class FileRunner(Runner):
    formats = ("xgboost", "lightgbm", "torchscript", "torch_export", "torch_pickle", "custom", "torch_aoti")

    def __init__(self, model: bentoml.Model, device: str = "cpu", threads: int | None = None) -> None:
        fmt = formats.get(model.info.metadata["format"])
        super().__init__(model, "cpu" if fmt.name in CPU_ONLY else device, threads)
        self.reader = fmt
        self.file = Path(model.path) / self.metadata["file"]
        if fmt.runs_code:
            self.verify()
        self.loaded: Any = fmt.load(self.file, self.metadata, self.device)
        if threads is not None and fmt.name in OWN_THREADS:
            self.loaded.use_threads(threads)

    @property
    def threads_refused(self) -> str | None:
        if self.metadata["format"] in OWN_THREADS:
            return None
        if self.metadata["format"] == "custom":
            return "a runtime of your own gets no thread count from the server"
        return super().threads_refused

    def verify(self) -> None:
        expected = self.metadata.get("sha256", {}).get(self.metadata["file"])
        if expected is None or sha256(self.file) != expected:
            raise LoadFailed(f"{self.tag}: {self.metadata['file']} does not match the SHA-256 recorded when it was deployed")

    def predict(self, inputs: Inputs) -> dict[str, np.ndarray]:
        return self.reader.predict(self.loaded, inputs)
