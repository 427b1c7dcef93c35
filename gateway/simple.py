"""The simple JSON API for people: a list of rows in, named outputs as lists out."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gateway.codec import to_array
from gateway.errors import InvalidInput
from models.signature import TensorSpec


def rows_to_inputs(spec: TensorSpec, rows: Any) -> dict[str, tuple[str, np.ndarray]]:
    """Rows to the model's input tensor: fixed rows may come flat (64 numbers for [1, 8, 8]);
    variable-length rows (token lists) are right-padded with 0."""
    if not isinstance(rows, list) or not rows:
        raise InvalidInput("'inputs' must be a non-empty list of rows")
    where = f"input '{spec.name}'"
    if -1 in spec.row_shape:
        if not all(isinstance(r, list) and r for r in rows):
            raise InvalidInput(f"{where}: each row must be a non-empty list")
        width = max(len(r) for r in rows)
        padded = [r + [0] * (width - len(r)) for r in rows]
        return {spec.name: (spec.datatype, to_array(padded, spec.datatype, where))}
    arr = to_array(rows, spec.datatype, where)
    per_row = math.prod(spec.row_shape)
    if arr.ndim == 0 or arr.size != len(arr) * per_row:
        raise InvalidInput(f"{where}: each row must hold {per_row} values (shape {list(spec.row_shape)})")
    return {spec.name: (spec.datatype, arr.reshape(len(arr), *spec.row_shape))}


def outputs_to_json(outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    return {name: arr.tolist() for name, arr in outputs.items()}
