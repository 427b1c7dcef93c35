"""The model's own outputs made into the served ones, and checked against the version's signature.

Every format's runner ends here, in the serving worker and in the probe alike, so a model whose
outputs do not match what it declared is refused at deploy, and a mismatch in serving is a
`model_error` naming the output, never a malformed answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from core.errors import ModelFailed
from models.signature import Signature

CLASSIFICATION_TASKS = ("classification", "sequence-classification")


class OutputMismatch(ModelFailed):
    """An output is missing, extra, or of another datatype or shape than the signature says."""


class Head:
    """Turns the model's own named outputs into the served ones for the version's task."""

    def __init__(self, metadata: Mapping[str, Any], signature: Signature) -> None:
        self.signature = signature
        self.task = metadata.get("task", "classification")
        self.softmax = bool(metadata.get("softmax"))
        names = metadata.get("class_names")
        self.classes = None if not names else np.asarray(names, dtype=object if isinstance(names[0], str) else np.int64)
        # What every batch is checked against, worked out once: (name, dtype, dimensions, fixed (index, size) pairs).
        self._expected = [
            (spec.name, spec.dtype, len(spec.shape), [(i, d) for i, d in enumerate(spec.shape) if i and d >= 0])
            for spec in signature.outputs
        ]

    def __call__(self, raw: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        if self.task == "tensors":
            outputs = raw
        elif self.task == "regression":
            outputs = {"predictions": self._single(raw).astype(np.float32, copy=False)}
            if outputs["predictions"].ndim == 2 and outputs["predictions"].shape[1] == 1 and len(self.signature.outputs[0].shape) == 1:
                outputs["predictions"] = outputs["predictions"][:, 0]
        else:
            outputs = self._classify(self._single(raw))
        if not self._fits(outputs, rows):
            check_outputs(self.signature, outputs, rows)  # says what does not fit
        return outputs

    def _fits(self, outputs: dict[str, np.ndarray], rows: int) -> bool:
        """The per-batch check, kept cheap: `check_outputs` explains a failure."""
        if len(outputs) != len(self._expected):
            return False
        for name, dtype, ndim, fixed in self._expected:
            arr = outputs.get(name)
            if type(arr) is not np.ndarray or arr.dtype != dtype or arr.ndim != ndim or arr.shape[0] != rows:
                return False
            for i, d in fixed:
                if arr.shape[i] != d:
                    return False
        return True

    @staticmethod
    def _single(raw: dict[str, np.ndarray]) -> np.ndarray:
        if len(raw) != 1:
            raise OutputMismatch(f"the model returned outputs {sorted(raw)} where its task expects one")
        return np.asarray(next(iter(raw.values())))

    def _classify(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        if scores.ndim == 1:  # a binary model's probability of the second class
            scores = np.stack([1.0 - scores, scores], axis=1)
        if self.softmax:
            shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores = shifted / shifted.sum(axis=-1, keepdims=True)
        probs = scores.astype(np.float32, copy=False)
        index = probs.argmax(axis=-1)
        label = index.astype(np.int64) if self.classes is None else self.classes[index]
        return {"probabilities": probs, "label": label}


def check_outputs(signature: Signature, outputs: dict[str, np.ndarray], rows: int) -> None:
    """OutputMismatch naming the first output that is not as the signature declares it."""
    declared = {spec.name: spec for spec in signature.outputs}
    extra = sorted(set(outputs) - set(declared))
    if extra:
        raise OutputMismatch(f"output(s) {extra} are not in the signature, which declares {sorted(declared)}")
    for name, spec in declared.items():
        if name not in outputs:
            raise OutputMismatch(f"output '{name}' is missing from what the model returned ({sorted(outputs)})")
        arr = outputs[name]
        if not isinstance(arr, np.ndarray) or arr.dtype != spec.dtype:
            kind = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
            raise OutputMismatch(f"output '{name}' is {kind}, the signature declares {spec.datatype}")
        shape = (rows, *spec.shape[1:])
        if arr.ndim != len(shape) or any(d >= 0 and d != s for d, s in zip(shape, arr.shape)):
            raise OutputMismatch(f"output '{name}' has shape {list(arr.shape)}, the signature declares "
                                 f"{list(spec.shape)} for {rows} rows")
