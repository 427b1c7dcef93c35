"""How outputs are stored in Redis: a small header and the arrays' raw bytes, refused unless plain numbers.

A shared store may hold anything, so decoding accepts only plain numeric dtypes (never object
arrays) and blobs that the header describes exactly.
"""

from __future__ import annotations

import math

import numpy as np
import orjson

Outputs = dict[str, np.ndarray]

_MAGIC = b"RTC1"
# Plain numbers only (never object arrays from a shared store), looked up rather than parsed.
_SAFE_DTYPES = {d.str: d for d in map(np.dtype, "?bBhHiIlLqQefd")}


def encode_outputs(outputs: Outputs) -> bytes:
    """Magic, header length, orjson header [[name, dtype, shape], ...], then each array's raw bytes."""
    arrays = [np.asarray(a, order="C") for a in outputs.values()]
    header = orjson.dumps([[n, a.dtype.str, a.shape] for n, a in zip(outputs, arrays)])
    return b"".join([_MAGIC, len(header).to_bytes(4, "little"), header, *(a.tobytes() for a in arrays)])


def decode_outputs(raw: bytes) -> Outputs:
    """Inverse of `encode_outputs`; refuses anything but plain numeric arrays that exactly fill `raw`."""
    try:
        if raw[:4] != _MAGIC:
            raise ValueError("not a cache entry")
        offset = 8 + int.from_bytes(raw[4:8], "little")
        outputs: Outputs = {}
        for name, dtype_str, shape in orjson.loads(raw[8:offset]):
            dtype = _SAFE_DTYPES.get(dtype_str)
            if dtype is None or not all(isinstance(d, int) and d >= 0 for d in shape):
                raise ValueError(f"unsafe tensor {name!r}: {dtype_str} {shape}")
            count = math.prod(shape)
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
