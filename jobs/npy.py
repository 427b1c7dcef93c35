"""Reading an `.npy` or `.npz` upload (an `.npz` of several members for a model of several inputs) with its
headers checked before any array exists.

`np.load` allocates the shape an `.npy` header declares before it reads a byte of data, and an
`.npz` member can inflate one megabyte of upload into a gigabyte. Here the header is read on its
own and handed to the caller's check (shape, dtype, rows); only then are the data read: an `.npy`
as a view of the upload itself, an `.npz` member no further than the bytes its checked header
declares, and never more than `max_bytes`, the most an `.npy` upload could hold.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Callable
from typing import IO

import numpy as np
from numpy.lib import format as npy_format

from core.errors import BadRequest, InvalidInput, PayloadTooLarge, ServingError

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
MAX_CENTRAL_DIRECTORY = 64 * 1024
"""Bytes of an .npz's table of members: room for about a thousand, where ZipFile would otherwise
build one object per entry of a table as large as the upload."""

Check = Callable[[tuple[int, ...], np.dtype], None]
"""Raises when the declared shape and dtype are not acceptable; called before any data are read."""
NamedCheck = Callable[[str, tuple[int, ...], np.dtype], None]
"""The same for the member of an .npz named by the first argument."""



def is_upload(body: bytes) -> bool:
    return body.startswith((NPY_MAGIC, ZIP_MAGIC))


def load(body: bytes, name: str, check: Check, max_bytes: int) -> np.ndarray:
    """The array of an .npy upload, or the member `name` (or the only member) of an .npz upload."""
    if body.startswith(NPY_MAGIC):
        stream = io.BytesIO(body)
        shape, order, dtype = _header(stream, check)
        offset, nbytes = stream.tell(), math.prod(shape) * dtype.itemsize
        if len(body) - offset != nbytes:
            raise BadRequest(f"the .npy holds {len(body) - offset} bytes of data, its header declares {nbytes}")
        return np.frombuffer(body, dtype, count=math.prod(shape), offset=offset).reshape(shape, order=order)
    return load_members(body, [name], lambda _, shape, dtype: check(shape, dtype), max_bytes, only_member=True)[name]


def load_members(body: bytes, names: list[str], check: NamedCheck, max_bytes: int,
                 only_member: bool = False) -> dict[str, np.ndarray]:
    """The members `names` of an .npz upload, each checked by its header before any is read, together never more
    than `max_bytes`. `only_member`: one name may also be the .npz's only member, whatever it is called."""
    if body.startswith(NPY_MAGIC):
        raise InvalidInput(f"an .npy holds one array; the model takes {names}: send an .npz holding each under its name")
    try:
        return _members(body, names, check, max_bytes, only_member)
    except ServingError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile and zlib raise many kinds on a bad file: all mean unreadable
        raise BadRequest(f"not a readable .npy or .npz file: {type(exc).__name__}: {str(exc)[:200]}") from None


def _members(body: bytes, names: list[str], check: NamedCheck, max_bytes: int, only_member: bool) -> dict[str, np.ndarray]:
    stream = io.BytesIO(body)
    end = zipfile._EndRecData(stream)  # the record ZipFile itself reads next: how large its table is
    if end is None:
        raise BadRequest("not a readable .npy or .npz file")
    if end[zipfile._ECD_SIZE] > MAX_CENTRAL_DIRECTORY:
        raise BadRequest(f"the .npz lists more members than the {MAX_CENTRAL_DIRECTORY} bytes of its table allow")
    out: dict[str, np.ndarray] = {}
    left = max_bytes
    with zipfile.ZipFile(stream) as archive:
        members = {n.removesuffix(".npy"): n for n in archive.namelist()}
        if only_member and len(names) == 1 and names[0] not in members and len(members) == 1:
            chosen = {names[0]: next(iter(members.values()))}
        else:
            missing, unknown = [n for n in names if n not in members], sorted(set(members) - set(names))
            if len(names) == 1 and missing:
                raise InvalidInput(f"the .npz holds {sorted(members)[:20]}; name the array '{names[0]}'")
            if missing or (unknown and len(names) > 1):
                raise InvalidInput(f"the .npz holds {sorted(members)[:20]}; the model's inputs are {names}, one member "
                                   f"each, named as the input" + (f" (missing {missing})" if missing else "")
                                   + (f" (unknown {unknown[:20]})" if unknown else ""))
            chosen = {n: members[n] for n in names}
        headers = {}
        for name, member in chosen.items():  # every header checked before any member is inflated
            with archive.open(member) as f:
                headers[name] = _header(f, lambda shape, dtype, name=name: check(name, shape, dtype))
        for name, member in chosen.items():
            shape, order, dtype = headers[name]
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes > left:
                raise PayloadTooLarge(f"the .npz member '{member.removesuffix('.npy')}' declares {nbytes} bytes of data, "
                                      f"over the limit of {max_bytes}" + (" for all its members" if len(chosen) > 1 else ""))
            left -= nbytes
            with archive.open(member) as f:
                _header(f, lambda shape, dtype: None)
                data = f.read(nbytes)  # inflates no further than the declared, checked size
            if len(data) != nbytes:
                raise BadRequest(f"the .npz member '{member.removesuffix('.npy')}' holds {len(data)} bytes of data, "
                                 f"its header declares {nbytes}")
            out[name] = np.frombuffer(data, dtype).reshape(shape, order=order)
    return out


def _header(stream: IO[bytes], check: Check) -> tuple[tuple[int, ...], str, np.dtype]:
    """(shape, order, dtype) from an .npy header, accepted by `check`; the stream is left at the data."""
    try:
        version = npy_format.read_magic(stream)
    except ValueError as exc:
        raise BadRequest(f"not a readable .npy header: {str(exc)[:200]}") from None
    if version not in ((1, 0), (2, 0)):
        raise BadRequest(f".npy format version {version[0]}.{version[1]} is not supported (1.0 and 2.0 are)")
    try:
        read = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, fortran, dtype = read(stream)
    except Exception as exc:  # noqa: BLE001 - numpy raises ValueError, SyntaxError, TokenError...: all mean unreadable
        raise BadRequest(f"not a readable .npy header: {type(exc).__name__}: {str(exc)[:200]}") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biuf":
        raise InvalidInput(f"the array's dtype '{dtype.str}' is not numbers")
    if any(d < 0 for d in shape):
        raise BadRequest(f"the .npy header declares a negative dimension: {list(shape)[:8]}")
    check(shape, dtype)
    return shape, "F" if fortran else "C", dtype
