"""The runner interface: a loaded model version that runs batches of rows.

Runners take and return arrays only; HTTP, queues and routing live elsewhere. Every demo
model is a classifier, so `run` adds the arg-max label to the probabilities the framework
returns.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import ClassVar

import bentoml
import numpy as np

from models.signature import Signature, TensorSpec


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "cpu"


class Runner(ABC):
    framework: ClassVar[str]

    def __init__(self, model: bentoml.Model, device: str = "cpu") -> None:
        self.model = model
        self.tag = str(model.tag)
        self.name = model.tag.name
        self.version = model.tag.version or ""
        self.metadata: dict = dict(model.info.metadata)
        self.signature = Signature.from_metadata(self.metadata)
        self.device = device

    @property
    def input_spec(self) -> TensorSpec:
        return self.signature.inputs[0]

    @abstractmethod
    def predict_rows(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities [n, classes] as float32 for a collated batch."""

    def collate(self, arrays: list[np.ndarray]) -> np.ndarray:
        """Stack requests into one batch, right-padding variable dimensions with 0 (the padding value)."""
        if len(arrays) == 1:
            return arrays[0]
        if all(a.shape[1:] == arrays[0].shape[1:] for a in arrays):
            return np.concatenate(arrays)
        dims = tuple(max(a.shape[d] for a in arrays) for d in range(1, arrays[0].ndim))
        out = np.zeros((sum(len(a) for a in arrays), *dims), dtype=arrays[0].dtype)
        start = 0
        for a in arrays:
            out[(slice(start, start + len(a)), *(slice(0, s) for s in a.shape[1:]))] = a
            start += len(a)
        return out

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        probs = self.predict_rows(batch)
        return {"probabilities": probs, "label": probs.argmax(axis=-1).astype(np.int64)}

    def sample(self, n: int) -> np.ndarray:
        """A valid input of n rows, for warm-up; variable dimensions get length 8."""
        spec = self.input_spec
        shape = (n, *(8 if d < 0 else d for d in spec.row_shape))
        value = max(1.0, spec.min_value or 0.0)
        return np.full(shape, value, dtype=spec.dtype)

    def warmup(self, sizes: tuple[int, ...]) -> list[tuple[int, float]]:
        """Run a few batches so first requests pay no lazy initialisation; returns (rows, seconds) per call."""
        timings: list[tuple[int, float]] = []
        for n in sizes:
            for _ in range(3):
                start = time.perf_counter()
                self.run(self.sample(n))
                timings.append((n, time.perf_counter() - start))
        return timings
