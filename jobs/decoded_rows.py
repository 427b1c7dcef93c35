"""A job's rows for a model the tabular row reader does not fit: several inputs, strings (BYTES), or rows keyed
by feature name. They are kept as the JSON rows they came as and decoded a batch at a time by the same decoder
`/predict` uses (`decode`: rows to named tensors, checked against the signature and the limits); a batch that
does not decode is decoded row by row, so a bad row fails alone, as in `jobs.rows`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.errors import InvalidInput
from gateway.settings import LimitSettings
from models.signature import Signature, TensorSpec

Decode = Callable[[list[Any]], dict[str, tuple[str, np.ndarray]]]
"""JSON rows to the model's named tensors; InvalidInput when a row does not fit."""


def takes_decoded_rows(signature: Signature, rows: Any) -> bool:
    """Whether a job's JSON rows need the general decoder: several inputs, strings, or rows that are objects."""
    first = rows[0] if isinstance(rows, list) and rows else None
    return len(signature.inputs) > 1 or signature.inputs[0].datatype == "BYTES" or isinstance(first, dict)


@dataclass
class DecodedRows:
    rows: list[Any]
    decode: Decode
    spec: TensorSpec
    """The size of one row, as one input of that many elements: what the job's batch size is worked out from."""
    errors: dict[int, str] = field(default_factory=dict)

    @classmethod
    def of(cls, signature: Signature, rows: Any, decode: Decode, max_rows: int, limits: LimitSettings) -> DecodedRows:
        if not isinstance(rows, list) or not rows:
            raise InvalidInput("'inputs' must be a non-empty list of rows")
        if len(rows) > max_rows:
            raise InvalidInput(f"{len(rows)} rows is over the job limit of {max_rows}")
        width = sum(math.prod(limits.max_sequence_length if d < 0 else d for d in s.row_shape) for s in signature.inputs)
        return cls(rows, decode, TensorSpec("rows", "FP32", (-1, width)))

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, start: int, end: int, limits: LimitSettings) -> tuple[dict | None, list[int], dict[int, str]]:
        """Rows [start, end) that decode, as named tensors, their indices, and the errors of the others."""
        try:
            return self.decode(self.rows[start:end]), list(range(start, end)), {}
        except InvalidInput:
            pass
        good: list[int] = []
        errors: dict[int, str] = {}
        for i in range(start, end):
            try:
                self.decode([self.rows[i]])
                good.append(i)
            except InvalidInput as exc:
                errors[i] = exc.message
        return (self.decode([self.rows[i] for i in good]) if good else None), good, errors
