"""BYTES tensors on the wire: JSON strings, and Triton's length-prefixed binary form (each element a 4-byte
little-endian length, then its bytes), shared by the REST codec's binary extension and gRPC's raw contents.

Elements are UTF-8 text: a model is handed Python `str` objects in a numpy object array, whichever
way they came, so a text pipeline sees the same thing over JSON, binary and gRPC. The element count
is checked against `max_strings` before anything is decoded, and each element against
`max_string_bytes`, so a small body cannot make many or large Python objects.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

import numpy as np

from core.errors import BadRequest, InvalidInput
from gateway.settings import LimitSettings

BYTES = "BYTES"
_LENGTH = struct.Struct("<I")


def check_count(count: int, limits: LimitSettings, where: str) -> None:
    """Refuse more strings than the limit before any of them is made."""
    if count > limits.max_strings:
        raise InvalidInput(f"{where}: {count} strings is over the limit of {limits.max_strings}")


def _text(item: bytes | memoryview, limits: LimitSettings, where: str) -> str:
    if len(item) > limits.max_string_bytes:
        raise InvalidInput(f"{where}: a string of {len(item)} bytes is over the limit of {limits.max_string_bytes}")
    try:
        return str(item, "utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{where}: BYTES elements must be UTF-8 text") from None


def from_json(data: Any, count: int, limits: LimitSettings, where: str) -> np.ndarray:
    """JSON strings (flat, or nested in row-major order) to a flat object array of `str`; anything else is refused.
    orjson has made every string already, so the body limit bounds what this walks."""
    check_count(count, limits, where)
    out: list[str] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if type(item) is str:
            if len(item) * 4 > limits.max_string_bytes:  # UTF-8 takes at most 4 bytes a character
                _text(item.encode("utf-8", "surrogatepass"), limits, where)
            out.append(item)
        elif type(item) is list:
            stack.extend(reversed(item))
        else:
            raise InvalidInput(f"{where}: BYTES data must be strings")
    return _object_array(out)


def from_items(items: Iterable[bytes], count: int, limits: LimitSettings, where: str) -> np.ndarray:
    """gRPC's `bytes_contents` to a flat object array of `str`."""
    check_count(count, limits, where)
    return _object_array([_text(item, limits, where) for item in items])


def deserialize(buffer: memoryview, count: int, limits: LimitSettings, where: str) -> np.ndarray:
    """Exactly `count` length-prefixed elements filling `buffer`, as a flat object array of `str`."""
    check_count(count, limits, where)
    out: list[str] = []
    offset, end = 0, len(buffer)
    while offset < end:
        if offset + 4 > end:
            raise BadRequest(f"{where}: BYTES data ends inside an element's 4-byte length")
        (size,) = _LENGTH.unpack_from(buffer, offset)
        offset += 4
        if offset + size > end:
            raise BadRequest(f"{where}: a BYTES element's length ({size}) runs past the data")
        if len(out) == count:
            raise InvalidInput(f"{where}: more than {count} BYTES elements for its shape")
        out.append(_text(buffer[offset : offset + size], limits, where))
        offset += size
    return _object_array(out)


def serialize(arr: np.ndarray) -> bytes:
    """The elements of a BYTES tensor, in C order, each as a 4-byte little-endian length and its UTF-8 bytes."""
    parts: list[bytes] = []
    for item in _encoded(arr):
        parts.append(_LENGTH.pack(len(item)))
        parts.append(item)
    return b"".join(parts)


def encoded(arr: np.ndarray) -> list[bytes]:
    """The elements as bytes (gRPC's `bytes_contents`)."""
    return list(_encoded(arr))


def as_text(arr: np.ndarray) -> list[Any]:
    """The elements as JSON strings, flat in C order."""
    return [item if type(item) is str else bytes(item).decode("utf-8", "replace") for item in arr.ravel().tolist()]


def _encoded(arr: np.ndarray) -> Iterable[bytes]:
    for item in arr.ravel().tolist():
        yield item.encode("utf-8", "surrogatepass") if isinstance(item, str) else bytes(item)


def _object_array(items: list[Any]) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr
