"""Tensors in and out of KServe V2 gRPC messages: typed `contents` or `raw_input_contents`/`raw_output_contents`.

Each input's declared shape is checked against the limits before anything of that size is
made, and the data must fill the shape exactly. An answer comes back the way the request
came: raw bytes for raw inputs (what `tritonclient.grpc` sends), typed contents for typed ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from core.errors import BadRequest, InvalidInput, shown
from frontends import strings
from gateway.settings import LimitSettings
from gateway.validate import check_shape, check_tensor_count
from models.signature import NUMPY_TO_OIP, OIP_TO_NUMPY, datatype_of

# The typed `InferTensorContents` field of each numeric datatype; FP16 has none (raw only). BYTES: `bytes_contents`.
_CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}

_WIDE = {"b": np.bool_, "i": np.int64, "u": np.uint64, "f": np.float64}


@dataclass(slots=True)
class Decoded:
    inputs: dict[str, tuple[str, np.ndarray]]  # name -> (OIP datatype, array)
    outputs: list[str] | None  # requested output names; None means all
    raw: bool  # the inputs came as raw bytes: answer with raw bytes
    priority: int = 0  # the schedule policy extension's `priority` parameter (1 the highest, 0 the default level)
    timeout_us: int | None = None  # its `timeout` parameter, in microseconds


def decode_request(request: pb.ModelInferRequest, limits: LimitSettings) -> Decoded:
    """The request's tensors as arrays, or a BadRequest/InvalidInput naming the problem."""
    if not request.inputs:
        raise BadRequest("'inputs' must be a non-empty list")
    raw_contents = request.raw_input_contents
    raw = len(raw_contents) > 0
    if raw and len(raw_contents) != len(request.inputs):
        raise BadRequest(f"{len(raw_contents)} raw_input_contents for {len(request.inputs)} inputs; send one per input")
    check_tensor_count(len(request.inputs), len(request.outputs), limits)
    inputs: dict[str, tuple[str, np.ndarray]] = {}
    for i, tensor in enumerate(request.inputs):
        name = tensor.name
        where = f"input {shown(name)}"
        if name in inputs:
            raise BadRequest(f"{where} appears twice")
        shape = tuple(tensor.shape)
        if any(d < 0 for d in shape):
            raise BadRequest(f"{where}: shape must be a list of non-negative integers")
        check_shape(shape, limits, where)
        datatype = tensor.datatype
        dtype = OIP_TO_NUMPY.get(datatype)
        if dtype is None and datatype != strings.BYTES:
            raise InvalidInput(f"{where}: unsupported datatype {shown(datatype)}")
        expected = math.prod(shape)
        if raw and tensor.HasField("contents"):
            raise BadRequest(f"{where}: contents and raw_input_contents cannot be mixed")
        if dtype is None:
            arr = _strings(tensor.contents, raw_contents[i] if raw else None, expected, limits, where)
        elif raw:
            arr = _from_raw(raw_contents[i], dtype, expected, shape, where)
        else:
            arr = _from_contents(tensor.contents, datatype, dtype, expected, shape, where)
        inputs[name] = (datatype, arr.reshape(shape))
    outputs = [o.name for o in request.outputs] or None
    parameters = request.parameters
    priority = _schedule_parameter(parameters, "priority", 2**63)
    timeout_us = _schedule_parameter(parameters, "timeout", 10**15)
    return Decoded(inputs, outputs, raw, priority, timeout_us or None)


def _schedule_parameter(parameters: Mapping[str, pb.InferParameter], name: str, bound: int) -> int:
    """`priority` or `timeout` (microseconds) as tritonclient sends them (uint64 and int64): 0 when absent,
    else an integer below `bound`, as the REST codec takes them."""
    if name not in parameters:
        return 0
    parameter = parameters[name]
    kind = parameter.WhichOneof("parameter_choice")
    value = getattr(parameter, kind) if kind in ("int64_param", "uint64_param") else None
    if value is None or not 0 <= value < bound:
        raise BadRequest(f"parameters.{name} must be an integer from 0 to {bound - 1}")
    return value


def _strings(
    contents: pb.InferTensorContents, raw: bytes | None, expected: int, limits: LimitSettings, where: str
) -> np.ndarray:
    """A BYTES input: length-prefixed elements in raw_input_contents (tritonclient's way), or bytes_contents."""
    if raw is not None:
        return strings.deserialize(memoryview(raw), expected, limits, where)
    filled = [f.name for f, _ in contents.ListFields() if f.name != "bytes_contents"]
    if filled:
        raise InvalidInput(f"{where}: BYTES data belongs in bytes_contents, not {filled[0]}")
    if len(contents.bytes_contents) != expected:
        raise InvalidInput(f"{where}: {len(contents.bytes_contents)} values do not fill shape ({expected} values)")
    return strings.from_items(contents.bytes_contents, expected, limits, where)


def _from_raw(data: bytes, dtype: np.dtype, expected: int, shape: tuple[int, ...], where: str) -> np.ndarray:
    if len(data) != expected * dtype.itemsize:
        raise InvalidInput(
            f"{where}: {len(data)} bytes of raw_input_contents do not fill shape {list(shape)} ({expected * dtype.itemsize} bytes)"
        )
    arr = np.frombuffer(data, dtype=dtype).copy()  # the message's bytes are read-only; models may write
    if dtype.kind == "b" and arr.view(np.uint8).max(initial=0) > 1:
        raise InvalidInput(f"{where}: BOOL bytes must be 0 or 1")
    return arr


def _from_contents(
    contents: pb.InferTensorContents, datatype: str, dtype: np.dtype, expected: int, shape: tuple[int, ...], where: str
) -> np.ndarray:
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(f"{where}: {datatype} has no typed contents; send it in raw_input_contents")
    filled = [f.name for f, _ in contents.ListFields() if f.name != field]
    if filled:
        raise InvalidInput(f"{where}: {datatype} data belongs in {field}, not {filled[0]}")
    values = getattr(contents, field)
    if len(values) != expected:
        raise InvalidInput(f"{where}: {len(values)} values do not fill shape {list(shape)} ({expected} values)")
    wide = np.array(values, dtype=_WIDE[dtype.kind])  # as the proto holds them; range-checked before narrowing
    if dtype.kind in "iu" and wide.size and (wide.min() < np.iinfo(dtype).min or wide.max() > np.iinfo(dtype).max):
        raise InvalidInput(f"{where}: values out of range for {datatype}")
    return wide.astype(dtype, copy=False)


def encode_response(
    model: str, version: str, request_id: str, outputs: dict[str, np.ndarray], raw: bool
) -> pb.ModelInferResponse:
    """The answer: every output described, its data raw or typed as the request's inputs were."""
    response = pb.ModelInferResponse(model_name=model, model_version=version, id=request_id)
    for name, arr in outputs.items():
        try:
            datatype = NUMPY_TO_OIP[arr.dtype]
        except KeyError:  # strings (BYTES), off the numeric path
            tensor = response.outputs.add(name=name, datatype=datatype_of(arr.dtype), shape=arr.shape)
            if raw:
                response.raw_output_contents.append(strings.serialize(arr))
            else:
                tensor.contents.bytes_contents.extend(strings.encoded(arr))
            continue
        tensor = response.outputs.add(name=name, datatype=datatype, shape=arr.shape)
        if raw:
            response.raw_output_contents.append(np.ascontiguousarray(arr).tobytes())
        else:
            getattr(tensor.contents, _CONTENTS_FIELD[datatype]).extend(arr.ravel().tolist())
    return response
