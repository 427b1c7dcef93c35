"""Check decoded tensors against a model's signature and the configured limits."""

from __future__ import annotations

import math

import numpy as np

from core.errors import InvalidInput, shown
from gateway.settings import LimitSettings
from models.signature import Signature, TensorSpec
from runners.rows import NamedRows, Rows


def check_shape(shape: tuple[int, ...], limits: LimitSettings, where: str) -> None:
    """Refuse a declared shape over the limits before anything of that size is allocated.

    Every dimension is bounded on its own, and an empty one refused here: a zero would keep the
    element count at 0 whatever the other dimensions claim, and no model takes an empty tensor."""
    if len(shape) > limits.max_dims:
        raise InvalidInput(f"{where}: {len(shape)} dimensions is over the limit of {limits.max_dims}")
    if shape and shape[0] > limits.max_rows:
        raise InvalidInput(f"{where}: {shape[0]} rows is over the limit of {limits.max_rows}")
    if 0 in shape:
        raise InvalidInput(f"{where}: empty tensor (shape {list(shape)})")
    elements = 1
    for d in shape:
        elements *= d
        if elements > limits.max_elements:
            raise InvalidInput(f"{where}: shape {list(shape)} is over the limit of {limits.max_elements} elements")


def check_tensor_count(inputs: int, outputs: int, limits: LimitSettings) -> None:
    """Refuse a request naming more inputs or outputs than the limit, before any per-input work."""
    if inputs > limits.max_tensors:
        raise InvalidInput(f"{inputs} inputs is over the limit of {limits.max_tensors}")
    if outputs > limits.max_tensors:
        raise InvalidInput(f"{outputs} requested outputs is over the limit of {limits.max_tensors}")


def check_tensor(spec: TensorSpec, arr: np.ndarray, limits: LimitSettings, where: str) -> np.ndarray:
    """The array, if it fits `spec` and the limits; an InvalidInput naming the problem otherwise."""
    shape, wanted = arr.shape, spec.shape
    if len(shape) != len(wanted):
        raise InvalidInput(f"{where}: shape {list(shape)} does not match {list(wanted)}")
    for d, s in zip(wanted, shape):  # a loop, not all() over a generator: this runs on every request
        if d != s and d != -1:
            raise InvalidInput(f"{where}: shape {list(shape)} does not match {list(wanted)}")
    if 0 in shape:
        raise InvalidInput(f"{where}: empty tensor (shape {list(shape)})")
    if shape[0] > limits.max_rows:
        raise InvalidInput(f"{where}: {shape[0]} rows is over the limit of {limits.max_rows}")
    if arr.size > limits.max_elements:
        raise InvalidInput(f"{where}: {arr.size} elements is over the limit of {limits.max_elements}")
    for d, s in zip(wanted[1:], shape[1:]):
        if d == -1 and s > limits.max_sequence_length:
            raise InvalidInput(f"{where}: length {s} is over the limit of {limits.max_sequence_length}")
    finite_only = arr.dtype.kind == "f" and not limits.allow_non_finite
    if not (finite_only or spec.min_value is not None or spec.max_value is not None):
        return arr
    # Two reductions answer all three checks: NaN carries through min and max, infinity shows in one of them.
    lo, hi = np.minimum.reduce(arr, axis=None), np.maximum.reduce(arr, axis=None)
    if finite_only and not (math.isfinite(lo) and math.isfinite(hi)):
        raise InvalidInput(f"{where}: NaN or infinity in the data")
    if spec.min_value is not None and lo < spec.min_value:
        raise InvalidInput(f"{where}: values must be >= {spec.min_value:g}")
    if spec.max_value is not None and hi > spec.max_value:
        raise InvalidInput(f"{where}: values must be <= {spec.max_value:g}")
    return arr


def check_inputs(signature: Signature, inputs: dict[str, tuple[str, np.ndarray]], limits: LimitSettings) -> Rows:
    """The model's input rows from a decoded request: its one array, or NamedRows (in the signature's order) for a
    model of several inputs, which must all be given with the same number of rows. Datatypes must match exactly."""
    specs = signature.inputs
    if len(specs) == 1:
        spec = specs[0]
        if len(inputs) != 1 or spec.name not in inputs:
            _names_problem(specs, inputs)
        return _checked(spec, inputs[spec.name], limits)
    _names_problem(specs, inputs)
    arrays = {spec.name: _checked(spec, inputs[spec.name], limits) for spec in specs}
    rows = {name: len(arr) for name, arr in arrays.items()}
    if len(set(rows.values())) > 1:
        raise InvalidInput(f"every input must have the same number of rows; got {rows}")
    elements = sum(arr.size for arr in arrays.values())
    if elements > limits.max_elements:
        raise InvalidInput(f"{elements} elements across inputs is over the limit of {limits.max_elements}")
    return NamedRows(arrays)


def _names_problem(specs: tuple[TensorSpec, ...], inputs: dict[str, tuple[str, np.ndarray]]) -> None:
    """InvalidInput naming an unknown or a missing input, if there is one."""
    names = [s.name for s in specs]
    unknown = set(inputs) - set(names)
    if unknown:
        raise InvalidInput(f"unknown input(s) {shown(sorted(unknown))}; the model takes {names}")
    missing = [n for n in names if n not in inputs]
    if missing:
        raise InvalidInput(f"missing input(s) {missing}; the model takes {names}")


def _checked(spec: TensorSpec, given: tuple[str, np.ndarray], limits: LimitSettings) -> np.ndarray:
    datatype, arr = given
    if datatype != spec.datatype:
        raise InvalidInput(f"input '{spec.name}' has datatype {datatype}, the model takes {spec.datatype}")
    return check_tensor(spec, arr, limits, f"input '{spec.name}'")
