"""Runtimes of a user's own, named by import string in a model.yaml (`implementation`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class WeightedSum:
    """Multiplies each row by weights read from the version's file."""

    def __init__(self, path: Path, metadata: dict) -> None:
        self.weights = np.load(path)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        (x,) = inputs.values()
        return {"score": (x @ self.weights).astype(np.float32)[:, None]}


class Drifting(WeightedSum):
    """Answers as declared for small batches, and with a column too many from four rows on."""

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = super().predict(inputs)["score"]
        (x,) = inputs.values()
        return {"score": np.hstack([out, out]) if len(x) >= 4 else out}


class TokenCount:
    """A model of strings whose rows vary in width (tokens per row): each row's tokens and characters."""

    def __init__(self, path: Path, metadata: dict) -> None:
        pass

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        (tokens,) = inputs.values()
        return {"tokens": np.array([len(row) for row in tokens], dtype=np.int64),
                "chars": np.array([sum(len(t) for t in row) for row in tokens], dtype=np.int64)}
