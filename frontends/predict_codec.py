"""The simple JSON API for people: a list of rows in, named outputs as lists out."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from core.errors import BadRequest, InvalidInput, shown
from frontends.oip_codec import to_array
from gateway.settings import LimitSettings
from gateway.validate import check_shape
from models.signature import OIP_TO_NUMPY, TensorSpec


def rows_to_inputs(spec: TensorSpec, rows: Any, limits: LimitSettings) -> dict[str, tuple[str, np.ndarray]]:
    """Rows to the model's input tensor: fixed rows may come flat (64 numbers for [1, 8, 8]);
    variable-length rows (token lists) are right-padded with 0.

    Row count, longest row and element count are checked before anything is padded or converted,
    so a small body cannot make a large allocation."""
    if not isinstance(rows, list) or not rows:
        raise InvalidInput("'inputs' must be a non-empty list of rows")
    where = f"input '{spec.name}'"
    check_shape((len(rows),), limits, where)  # the row count first: nothing is done per row before it
    if -1 in spec.row_shape:
        if not all(isinstance(r, list) and r for r in rows):
            raise InvalidInput(f"{where}: each row must be a non-empty list")
        width = max(len(r) for r in rows)
        check_shape((len(rows), width), limits, where)
        if width > limits.max_sequence_length:
            raise InvalidInput(f"{where}: length {width} is over the limit of {limits.max_sequence_length}")
        arr = np.zeros((len(rows), width), dtype=OIP_TO_NUMPY[spec.datatype])
        for i, row in enumerate(rows):
            values = to_array(row, spec.datatype, f"{where} row {i}")
            if values.ndim != 1:
                raise InvalidInput(f"{where} row {i}: must be a flat list of numbers")
            arr[i, : len(values)] = values
        return {spec.name: (spec.datatype, arr)}
    arr = to_array(rows, spec.datatype, where)
    per_row = math.prod(spec.row_shape)
    if arr.ndim == 0 or arr.size != len(arr) * per_row:
        raise InvalidInput(f"{where}: each row must hold {per_row} values (shape {list(spec.row_shape)})")
    return {spec.name: (spec.datatype, arr.reshape(len(arr), *spec.row_shape))}


def outputs_to_json(outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    return {name: arr.tolist() for name, arr in outputs.items()}

def rows_request(doc: Any, what: str) -> tuple[str, str | None, Any]:
    """(model, version, rows) of a `{"model", "inputs", "version"?}` document: `/predict` and JSON jobs."""
    if not isinstance(doc, dict):
        raise BadRequest(f"{what} must be a JSON object")
    unknown = set(doc) - {"model", "inputs", "version"}
    if unknown:
        raise BadRequest(f"unknown field(s) {shown(sorted(unknown))}; expected model, inputs and optionally version")
    model, version = doc.get("model"), doc.get("version")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' must be a model name")
    if version is not None and (not isinstance(version, str) or not version):
        raise BadRequest("'version' must be a version name")
    if "inputs" not in doc:
        raise BadRequest("'inputs' (a list of rows) is required")
    return model, version, doc["inputs"]
