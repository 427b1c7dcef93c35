"""A job's rows: decoded once at submission, checked row by row, so one bad row fails alone.

A submission is JSON (`{"model", "version", "inputs": [[...], ...]}`, rows as `/predict` takes
them) or an upload of the model's input as `.npy`, or `.npz` holding it under the input's name (each
input under its own name, for a model of several inputs).
Whatever cannot be read as rows at all is refused at submission (4xx); a row of the wrong length
or type, or with values outside the signature's range or not finite, becomes that row's error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from core.errors import InvalidInput
from gateway.settings import LimitSettings
from jobs import npy
from models.signature import TensorSpec

Tensors = dict[str, tuple[str, np.ndarray]]
"""Named input tensors as the data plane takes them: name -> (datatype, array)."""


@dataclass
class Rows:
    """Fixed-shape rows in one array, or variable-length rows (token lists) one array each."""

    spec: TensorSpec
    fixed: np.ndarray | None = None
    ragged: list[np.ndarray | None] | None = None
    errors: dict[int, str] = field(default_factory=dict)
    """Rows refused when they were decoded, by index."""

    def __len__(self) -> int:
        return len(self.fixed) if self.fixed is not None else len(self.ragged)

    def batch(self, start: int, end: int, limits: LimitSettings) -> tuple[np.ndarray | None, list[int], dict[int, str]]:
        """Rows [start, end) that pass every check, as one array, their indices, and the errors of the others."""
        errors = {i: self.errors[i] for i in range(start, end) if i in self.errors}
        index = np.array([i for i in range(start, end) if i not in errors], dtype=np.int64)
        if self.fixed is not None:
            data = self.fixed[index]
        else:
            rows = [self.ragged[i] for i in index]
            width = max((len(r) for r in rows), default=0)
            data = np.zeros((len(rows), width), dtype=self.spec.dtype)
            for k, r in enumerate(rows):
                data[k, : len(r)] = r
        keep = np.ones(len(index), dtype=bool)
        for k, problem in _value_problems(self.spec, data, limits):
            errors[int(index[k])] = problem
            keep[k] = False
        if not keep.all():
            index, data = index[keep], data[keep]
        return (data if len(index) else None), index.tolist(), errors


def _value_problems(spec: TensorSpec, data: np.ndarray, limits: LimitSettings) -> list[tuple[int, str]]:
    """The same value checks as a real-time request (gateway/validate.py), one verdict per row."""
    if not len(data):
        return []
    flat = data.reshape(len(data), -1)
    problems: dict[int, str] = {}
    if flat.dtype.kind == "f" and not limits.allow_non_finite:
        for k in np.flatnonzero(~np.isfinite(flat).all(axis=1)):
            problems[int(k)] = "NaN or infinity in the data"
    if spec.min_value is not None:
        for k in np.flatnonzero(flat.min(axis=1) < spec.min_value):
            problems.setdefault(int(k), f"values must be >= {spec.min_value:g}")
    if spec.max_value is not None:
        for k in np.flatnonzero(flat.max(axis=1) > spec.max_value):
            problems.setdefault(int(k), f"values must be <= {spec.max_value:g}")
    return sorted(problems.items())


def from_json(spec: TensorSpec, rows: object, max_rows: int, limits: LimitSettings) -> Rows:
    if not isinstance(rows, list) or not rows:
        raise InvalidInput("'inputs' must be a non-empty list of rows")
    if len(rows) > max_rows:
        raise InvalidInput(f"{len(rows)} rows is over the job limit of {max_rows}")
    if -1 in spec.row_shape:
        out = Rows(spec, ragged=[None] * len(rows))
        for i, row in enumerate(rows):
            try:
                out.ragged[i] = _ragged_row(spec, row, limits)
            except InvalidInput as exc:
                out.errors[i] = exc.message
        return out
    per_row = math.prod(spec.row_shape)
    try:
        arr = _numbers(rows, spec)
        if arr.ndim >= 1 and arr.size == len(rows) * per_row:
            return Rows(spec, fixed=arr.reshape(len(rows), *spec.row_shape))
    except InvalidInput:
        pass
    # Something is wrong with some rows: find which, row by row.
    out = Rows(spec, fixed=np.zeros((len(rows), *spec.row_shape), dtype=spec.dtype))
    for i, row in enumerate(rows):
        try:
            values = _numbers(row, spec)
            if values.size != per_row:
                raise InvalidInput(f"each row must hold {per_row} values (shape {list(spec.row_shape)}), not {values.size}")
            out.fixed[i] = values.reshape(spec.row_shape)
        except InvalidInput as exc:
            out.errors[i] = exc.message
    return out


def _ragged_row(spec: TensorSpec, row: object, limits: LimitSettings) -> np.ndarray:
    if not isinstance(row, list) or not row:
        raise InvalidInput("each row must be a non-empty list")
    if len(row) > limits.max_sequence_length:
        raise InvalidInput(f"length {len(row)} is over the limit of {limits.max_sequence_length}")
    values = _numbers(row, spec)
    if values.ndim != 1:
        raise InvalidInput("each row must be a flat list of numbers")
    return values


def _numbers(data: object, spec: TensorSpec) -> np.ndarray:
    """JSON numbers to the spec's dtype, refusing anything lossy (floats for integers, strings, ragged lists)."""
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput("row is ragged or not numeric") from None
    return _cast(arr, spec)


def _cast(arr: np.ndarray, spec: TensorSpec) -> np.ndarray:
    dtype = spec.dtype
    if arr.dtype.kind not in "biuf":
        raise InvalidInput(f"data must be numbers of type {spec.datatype}")
    if dtype.kind in "iu" and arr.dtype.kind == "f":
        raise InvalidInput(f"{spec.datatype} data must be integers")
    if dtype.kind in "iu" and arr.size and (arr.min() < np.iinfo(dtype).min or arr.max() > np.iinfo(dtype).max):
        raise InvalidInput(f"values out of range for {spec.datatype}")
    return arr.astype(dtype, copy=False)


def from_upload(spec: TensorSpec, body: bytes, max_rows: int, limits: LimitSettings, max_bytes: int) -> Rows:
    """An .npy array of the input ([n, *row] or [n, row elements]), or an .npz holding it under the input's name.

    The header's shape and dtype are checked against the limits before any array exists (jobs/npy.py)."""
    arr = npy.load(body, spec.name, lambda shape, dtype: _check_shape(spec, shape, max_rows, limits), max_bytes)
    arr = _cast(arr, spec)
    if -1 in spec.row_shape:
        return Rows(spec, ragged=list(arr))
    return Rows(spec, fixed=arr.reshape(len(arr), *spec.row_shape))


def _check_shape(spec: TensorSpec, shape: tuple[int, ...], max_rows: int, limits: LimitSettings) -> None:
    if not shape or math.prod(shape) == 0:  # no rows, or rows of no values (shape (n, 0))
        raise InvalidInput("the upload holds no rows")
    if shape[0] > max_rows:
        raise InvalidInput(f"{shape[0]} rows is over the job limit of {max_rows}")
    if -1 in spec.row_shape:
        if len(shape) != 2:
            raise InvalidInput(f"shape {list(shape)[:8]} does not match {list(spec.shape)} (rows right-padded with 0)")
        if shape[1] > limits.max_sequence_length:
            raise InvalidInput(f"length {shape[1]} is over the limit of {limits.max_sequence_length}")
    elif math.prod(shape[1:]) != math.prod(spec.row_shape):
        raise InvalidInput(f"shape {list(shape)[:8]} does not match {list(spec.shape)}")


@dataclass
class InputRows:
    """The rows of a model of several inputs, from an `.npz` holding each input under its name."""

    specs: tuple[TensorSpec, ...]
    arrays: dict[str, np.ndarray]
    spec: TensorSpec
    """The size of one row, as one input of that many elements: what the job's batch size is worked out from."""
    errors: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def batch(self, start: int, end: int, limits: LimitSettings) -> tuple[Tensors | None, list[int], dict[int, str]]:
        """Rows [start, end) whose every input passes the value checks, as named tensors, their indices, and the
        errors of the others (a row fails alone, named by its input)."""
        errors: dict[int, str] = {}
        for spec in self.specs:
            for k, problem in _value_problems(spec, self.arrays[spec.name][start:end], limits):
                errors.setdefault(start + k, f"{spec.name}: {problem}")
        keep = np.array([i not in errors for i in range(start, end)], dtype=bool)
        index = [i for i in range(start, end) if i not in errors]
        if not index:
            return None, [], errors
        return ({s.name: (s.datatype, self.arrays[s.name][start:end][keep]) for s in self.specs}, index, errors)


def from_named_upload(specs: tuple[TensorSpec, ...], body: bytes, max_rows: int, limits: LimitSettings,
                      max_bytes: int) -> InputRows:
    """An .npz holding each of the model's inputs under its name, every one with the same number of rows.

    Each member's header is checked against its input (shape, rows, dtype) before any member is read."""
    by_name = {s.name: s for s in specs}
    rows: dict[str, int] = {}

    def check(name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        try:
            _check_shape(by_name[name], shape, max_rows, limits)
        except InvalidInput as exc:
            raise InvalidInput(f"input '{name}': {exc.message}") from None
        rows[name] = shape[0]
        if len(set(rows.values())) > 1:
            raise InvalidInput(f"the inputs must hold the same number of rows, not {rows}")

    arrays = npy.load_members(body, list(by_name), check, max_bytes)
    named = {}
    for spec in specs:
        arr = _cast(arrays[spec.name], spec)
        named[spec.name] = arr if -1 in spec.row_shape else arr.reshape(len(arr), *spec.row_shape)
    width = sum(math.prod(limits.max_sequence_length if d < 0 else d for d in s.row_shape) for s in specs)
    return InputRows(specs, named, TensorSpec("rows", "FP32", (-1, width)))
