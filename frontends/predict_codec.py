"""The simple JSON API for people: a list of rows in, named outputs as lists out."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from core.errors import BadRequest, InvalidInput, shown
from frontends import strings
from frontends.oip_codec import to_array
from gateway.settings import LimitSettings
from gateway.validate import check_shape
from models.signature import OIP_TO_NUMPY, Signature, TensorSpec


def rows_to_inputs(
    signature: Signature, rows: Any, limits: LimitSettings, feature_names: list[str] | None = None
) -> dict[str, tuple[str, np.ndarray]]:
    """Rows to the model's input tensors. A row is a list of values for a model of one input; a JSON object
    keyed by feature name when the model knows its features' names (`feature_names`); a JSON object keyed by
    input name for a model of several inputs; a string (or a list of strings) for a BYTES input.

    The row count is checked before anything is done per row, so a small body cannot make a large allocation."""
    if not isinstance(rows, list) or not rows:
        raise InvalidInput("'inputs' must be a non-empty list of rows")
    check_shape((len(rows),), limits, "inputs")
    specs = signature.inputs
    if len(specs) > 1:
        return {spec.name: one_input(spec, column, limits) for spec, column in zip(specs, _columns(specs, rows))}
    spec = specs[0]
    if feature_names and type(rows[0]) is dict:
        rows = _by_feature(rows, feature_names)
    return {spec.name: one_input(spec, rows, limits)}


def _columns(specs: tuple[TensorSpec, ...], rows: list[Any]) -> list[list[Any]]:
    """Each input's rows, from rows that are objects keyed by input name."""
    names = [s.name for s in specs]
    columns: list[list[Any]] = [[] for _ in specs]
    for i, row in enumerate(rows):
        if type(row) is not dict:
            raise InvalidInput(f"row {i}: the model takes several inputs, so each row must be an object keyed by "
                               f"input name: {names}")
        _same_names(row, names, f"row {i}", "input")
        for column, name in zip(columns, names):
            column.append(row[name])
    return columns


def _by_feature(rows: list[Any], names: list[str]) -> list[list[Any]]:
    """Rows that are objects keyed by feature name, as lists in the order the model was fitted with."""
    out = []
    for i, row in enumerate(rows):
        if type(row) is not dict:
            raise InvalidInput(f"row {i}: every row must be an object keyed by feature name once the first is")
        _same_names(row, names, f"row {i}", "feature")
        out.append([row[n] for n in names])
    return out


def _same_names(row: dict[str, Any], names: list[str], where: str, kind: str) -> None:
    if len(row) == len(names) and all(n in row for n in names):
        return
    missing = [n for n in names if n not in row]
    if missing:
        raise InvalidInput(f"{where}: missing {kind}(s) {shown(missing)}; the model takes {shown(names)}")
    raise InvalidInput(f"{where}: unknown {kind}(s) {shown(sorted(set(row) - set(names)))}; the model takes {shown(names)}")


def one_input(spec: TensorSpec, rows: list[Any], limits: LimitSettings) -> tuple[str, np.ndarray]:
    """One input's tensor from its rows: fixed rows may come flat (64 numbers for [1, 8, 8]); variable-length
    rows (token lists) are right-padded with 0; strings are never padded."""
    where = f"input '{spec.name}'"
    per_row = math.prod(d for d in spec.row_shape if d > 0)
    if spec.datatype == strings.BYTES:
        arr = strings.from_json(rows, len(rows) * per_row, limits, where)
        if -1 in spec.row_shape or arr.size != len(rows) * per_row:
            raise InvalidInput(f"{where}: each row must hold {per_row} string(s) (shape {list(spec.row_shape)})")
        return spec.datatype, arr.reshape(len(rows), *spec.row_shape)
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
        return spec.datatype, arr
    arr = to_array(rows, spec.datatype, where)
    if arr.ndim == 0 or arr.size != len(arr) * per_row:
        raise InvalidInput(f"{where}: each row must hold {per_row} values (shape {list(spec.row_shape)})")
    return spec.datatype, arr.reshape(len(arr), *spec.row_shape)


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
