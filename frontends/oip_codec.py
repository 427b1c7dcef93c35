"""The Open Inference Protocol (KServe V2) REST codec, with Triton's binary tensor extension.

Requests: a JSON header, optionally followed by raw tensor bytes when the client sends
`Inference-Header-Content-Length` (what `tritonclient` does by default). Responses: JSON,
or JSON plus raw bytes when the client asked for binary outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from core.errors import BadRequest, InvalidInput, shown
from frontends import strings
from frontends.strings import BYTES
from gateway.settings import LimitSettings
from gateway.validate import check_shape, check_tensor_count
from models.signature import NUMPY_TO_OIP, OIP_TO_NUMPY, datatype_of

_NUMERIC_KINDS = {"b", "i", "u", "f"}


@dataclass(slots=True)
class InferRequest:
    id: str | None
    inputs: dict[str, tuple[str, np.ndarray]]  # name -> (OIP datatype, array)
    outputs: list[str] | None  # requested output names; None means all
    binary_outputs: set[str]
    priority: int = 0
    """Triton's schedule policy: 1 is the highest level, 0 the model's default."""
    timeout_us: int | None = None
    """Triton's schedule policy: the request's deadline in microseconds from now; None (or 0) for none."""


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None


def to_array(data: Any, datatype: str, where: str) -> np.ndarray:
    """JSON numbers (flat or nested) to a numpy array of `datatype`, refusing anything lossy."""
    dtype = OIP_TO_NUMPY.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise InvalidInput(f"{where}: unsupported datatype {shown(datatype)}")
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"{where}: data is ragged or not numeric") from None
    if arr.dtype.kind not in _NUMERIC_KINDS:
        raise InvalidInput(f"{where}: data must be numbers of type {datatype}")
    if dtype.kind in "iu" and arr.dtype.kind == "f":
        raise InvalidInput(f"{where}: {datatype} data must be integers")
    if dtype.kind == "b" and arr.dtype.kind != "b":
        raise InvalidInput(f"{where}: BOOL data must be true or false")
    if dtype.kind in "iu" and arr.size and (arr.min() < np.iinfo(dtype).min or arr.max() > np.iinfo(dtype).max):
        raise InvalidInput(f"{where}: values out of range for {datatype}")
    return arr.astype(dtype, copy=False)


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if type(value) is list:
        for d in value:
            if type(d) is not int or d < 0:  # `type`, not isinstance: a bool is no dimension
                break
        else:
            return tuple(value)
    raise BadRequest(f"{where}: shape must be a list of non-negative integers")


def decode_infer(body: bytes, limits: LimitSettings, json_length: int | None = None) -> InferRequest:
    """Parse an infer request; `json_length` splits a binary-extension body into header and tensors.

    Each declared shape is checked against the limits before its data is converted, so no input
    allocates more than the limits allow."""
    if json_length is not None:
        if json_length < 0 or json_length > len(body):
            raise BadRequest("Inference-Header-Content-Length is larger than the body")
        header, binary = body[:json_length], memoryview(body)[json_length:]
    else:
        header, binary = body, memoryview(b"")
    doc = parse_json(header)
    if not isinstance(doc, dict):
        raise BadRequest("request must be a JSON object")
    items = doc.get("inputs")
    if not isinstance(items, list) or not items:
        raise BadRequest("'inputs' must be a non-empty list")
    outputs = doc.get("outputs")
    check_tensor_count(len(items), len(outputs) if isinstance(outputs, list) else 0, limits)
    inputs: dict[str, tuple[str, np.ndarray]] = {}
    offset = 0
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest(f"inputs[{i}] must be an object with a string 'name'")
        name = item["name"]
        where = f"input {shown(name)}"
        if name in inputs:
            raise BadRequest(f"{where} appears twice")
        shape = _shape(item.get("shape"), where)
        check_shape(shape, limits, where)
        datatype = item.get("datatype")
        params = item.get("parameters") or {}
        if not isinstance(params, dict):
            raise BadRequest(f"{where}: parameters must be an object")
        size = params.get("binary_data_size")
        expected = math.prod(shape)
        if size is None and "data" not in item:
            raise BadRequest(f"{where} has no 'data'")
        if datatype == BYTES:
            if size is not None:
                arr, offset = _bytes_from_binary(binary, offset, size, expected, limits, where)
            else:
                arr = strings.from_json(item["data"], expected, limits, where)
        elif size is not None:
            arr, offset = _from_binary(binary, offset, size, datatype, where)
        else:
            arr = to_array(item["data"], datatype, where)
        if arr.size != expected:
            raise InvalidInput(f"{where}: {arr.size} values do not fill shape {list(shape)} ({expected} values)")
        inputs[name] = (datatype, arr.reshape(shape))
    if offset != len(binary):
        raise BadRequest("binary data left over after the last input")
    params = doc.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise BadRequest("'parameters' must be an object")
    params = params or {}
    timeout_us = _schedule_parameter(params, "timeout", 10**15) if params else 0  # the 12-digit timeout header's bound
    return InferRequest(
        id=doc.get("id") if isinstance(doc.get("id"), str) else None,
        inputs=inputs,
        outputs=_requested_outputs(outputs),
        binary_outputs=_binary_outputs(doc),
        priority=_schedule_parameter(params, "priority", 2**63) if params else 0,
        timeout_us=timeout_us or None,
    )


def _schedule_parameter(params: dict, name: str, bound: int) -> int:
    """`priority` or `timeout` (microseconds) of the schedule policy extension: an integer below `bound`; absent is 0."""
    value = params.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < bound:
        raise BadRequest(f"parameters.{name} must be an integer from 0 to {bound - 1}")
    return value


def _from_binary(binary: memoryview, offset: int, size: Any, datatype: Any, where: str) -> tuple[np.ndarray, int]:
    dtype = OIP_TO_NUMPY.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise InvalidInput(f"{where}: unsupported datatype {shown(datatype)}")
    if not isinstance(size, int) or size < 0 or offset + size > len(binary) or size % dtype.itemsize:
        raise BadRequest(f"{where}: binary_data_size does not match the binary data")
    arr = np.frombuffer(binary[offset : offset + size], dtype=dtype).copy()
    if dtype.kind == "b" and arr.view(np.uint8).max(initial=0) > 1:
        raise InvalidInput(f"{where}: BOOL bytes must be 0 or 1")
    return arr, offset + size


def _bytes_from_binary(
    binary: memoryview, offset: int, size: Any, count: int, limits: LimitSettings, where: str
) -> tuple[np.ndarray, int]:
    if not isinstance(size, int) or size < 0 or offset + size > len(binary):
        raise BadRequest(f"{where}: binary_data_size does not match the binary data")
    return strings.deserialize(binary[offset : offset + size], count, limits, where), offset + size


def _requested_outputs(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in value):
        raise BadRequest("'outputs' must be a list of objects with a string 'name'")
    return [o["name"] for o in value]


def _binary_outputs(doc: dict) -> set[str]:
    wanted: set[str] = set()
    params = doc.get("parameters")
    everything = isinstance(params, dict) and params.get("binary_data_output") is True
    for o in doc.get("outputs") or []:
        p = o.get("parameters")
        if everything or (isinstance(p, dict) and p.get("binary_data") is True):
            wanted.add(o["name"])
    if everything and not doc.get("outputs"):
        wanted.add("*")
    return wanted


def encode_infer(
    model: str, version: str, request_id: str | None, outputs: dict[str, np.ndarray], binary: set[str]
) -> tuple[bytes, int | None]:
    """Response body and, when any output is binary, the length of its JSON header."""
    described = []
    blobs = []
    for name, arr in outputs.items():
        try:
            datatype = NUMPY_TO_OIP[arr.dtype]
        except KeyError:  # strings (BYTES), off the numeric path
            described.append(_strings_entry(name, arr, name in binary or "*" in binary, blobs))
            continue
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if name in binary or "*" in binary:
            raw = np.ascontiguousarray(arr).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = np.ascontiguousarray(arr).ravel()
        described.append(entry)
    doc: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": described}
    if request_id is not None:
        doc["id"] = request_id
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def _strings_entry(name: str, arr: np.ndarray, binary: bool, blobs: list[bytes]) -> dict[str, Any]:
    """A string output: JSON strings, or length-prefixed elements appended to `blobs`."""
    entry: dict[str, Any] = {"name": name, "datatype": datatype_of(arr.dtype), "shape": list(arr.shape)}
    if binary:
        raw = strings.serialize(arr)
        entry["parameters"] = {"binary_data_size": len(raw)}
        blobs.append(raw)
    else:
        entry["data"] = strings.as_text(arr)
    return entry
