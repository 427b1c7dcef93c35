"""How outputs are stored in Redis: a small header and the arrays' raw bytes, refused unless plain numbers
or strings.

A shared store may hold anything, so decoding accepts only plain numeric dtypes and blobs that the
header describes exactly; string outputs (BYTES, such as class names) are stored as a JSON list of
strings and come back as an object array of `str` only, never as arbitrary objects.
"""

from __future__ import annotations

import math

import numpy as np
import orjson

Outputs = dict[str, np.ndarray]

_MAGIC = b"RTC1"
# Plain numbers only (never object arrays from a shared store), looked up rather than parsed.
_SAFE_DTYPES = {d.str: d for d in map(np.dtype, "?bBhHiIlLqQefd")}
STRINGS = "BYTES"


def encode_outputs(outputs: Outputs) -> bytes:
    """Magic, header length, orjson header [[name, dtype, shape(, blob length for strings)], ...], then each
    array's bytes (numbers raw, strings as a JSON list)."""
    header, blobs = [], []
    for name, arr in outputs.items():
        if arr.dtype.hasobject:
            blob = orjson.dumps(arr.ravel().tolist())
            header.append([name, STRINGS, arr.shape, len(blob)])
        else:
            arr = np.asarray(arr, order="C")
            blob = arr.tobytes()
            header.append([name, arr.dtype.str, arr.shape])
        blobs.append(blob)
    head = orjson.dumps(header)
    return b"".join([_MAGIC, len(head).to_bytes(4, "little"), head, *blobs])


def decode_outputs(raw: bytes) -> Outputs:
    """Inverse of `encode_outputs`; refuses anything but plain numeric arrays and lists of strings that exactly
    fill `raw`."""
    try:
        if raw[:4] != _MAGIC:
            raise ValueError("not a cache entry")
        offset = 8 + int.from_bytes(raw[4:8], "little")
        outputs: Outputs = {}
        for name, dtype_str, shape, *blob in orjson.loads(raw[8:offset]):
            if not all(isinstance(d, int) and d >= 0 for d in shape):
                raise ValueError(f"unsafe tensor {name!r}: shape {shape}")
            count = math.prod(shape)
            if dtype_str == STRINGS and len(blob) == 1 and isinstance(blob[0], int):
                offset, outputs[str(name)] = _strings(raw, offset, blob[0], count, shape)
                continue
            dtype = _SAFE_DTYPES.get(dtype_str)
            if dtype is None or blob:
                raise ValueError(f"unsafe tensor {name!r}: {dtype_str} {shape}")
            end = offset + count * dtype.itemsize
            if end > len(raw):
                raise ValueError("truncated")
            arr = np.frombuffer(raw, dtype, count, offset) if count else np.empty(0, dtype)
            arr = arr.reshape(shape)
            arr.flags.writeable = False
            outputs[str(name)] = arr
            offset = end
        if offset != len(raw):
            raise ValueError("trailing bytes")
        return outputs
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"corrupt cache entry: {exc}") from None


def _strings(raw: bytes, offset: int, size: int, count: int, shape: list[int]) -> tuple[int, np.ndarray]:
    """A string output: a JSON list of exactly `count` strings in `size` bytes, as a read-only object array."""
    end = offset + size
    if size < 0 or end > len(raw):
        raise ValueError("truncated")
    items = orjson.loads(raw[offset:end])
    if type(items) is not list or len(items) != count or not all(type(item) is str for item in items):
        raise ValueError("string output is not a list of strings of its shape")
    arr = np.empty(count, dtype=object)
    arr[:] = items
    arr = arr.reshape(shape)
    arr.flags.writeable = False
    return end, arr
