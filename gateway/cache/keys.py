"""Cache keys: `model:version_token:hash(tenant, input)`, from the decoded tensor, never the request's text.

The version token is the resolved version plus its load generation (`version_token("v1", 3)
== "v1#3"`), so a reloaded or replaced version never reads entries of the one before it. With
tenant isolation (the default) the tenant is hashed in too, so one tenant never reads, or learns of,
another's entries; the key's shape stays the same, so a version's entries are still found by prefix.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import orjson

from runners.rows import NamedRows, Rows

SEP = ":"
DIGEST_HEX = 32  # blake2b, 16 bytes, as hex


def version_token(version: str, generation: int) -> str:
    """The version part of a key: a reload bumps the generation, so old entries are never read."""
    return f"{version}#{generation}"


def cache_key(model: str, version_token: str, rows: Rows, tenant: str | None = None) -> bytes:
    """Key of one request's rows: canonical bytes (dtype, shape, C-order data) of each input, never the request's
    JSON text; strings (BYTES, object arrays) as their UTF-8 bytes, each with its length; several inputs by name,
    in the signature's order. `tenant` (None: shared by every tenant) is part of the digest."""
    if SEP in model or SEP in version_token:
        raise ValueError(f"model {model!r} and version token {version_token!r} must not contain {SEP!r}")
    h = hashlib.blake2b(digest_size=16)
    if tenant is not None:
        h.update(_sized_name(tenant))
    if isinstance(rows, NamedRows):
        for name, arr in rows.arrays.items():
            h.update(_sized_name(name))
            _update_array(h, arr)
    elif rows.dtype.hasobject:
        _update_array(h, rows)
    else:  # one array of numbers: the hot path, inline
        if not rows.dtype.isnative:
            rows = rows.astype(rows.dtype.newbyteorder("="))
        h.update(rows.dtype.str.encode())
        h.update(orjson.dumps(rows.shape))
        h.update(np.asarray(rows, order="C"))
    return f"{model}{SEP}{version_token}{SEP}{h.hexdigest()}".encode()


def _update_sized(h: hashlib.blake2b, data: bytes) -> None:
    h.update(_sized(data))


def _sized(data: bytes) -> bytes:
    return len(data).to_bytes(8, "little") + data


@functools.lru_cache(maxsize=1024)
def _sized_name(name: str) -> bytes:
    """A tenant's or an input's name as hashed, made once per name: one is hashed into every request's key."""
    return _sized(name.encode("utf-8", "surrogatepass"))


def _update_array(h: hashlib.blake2b, arr: np.ndarray) -> None:
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    h.update(arr.dtype.str.encode())
    h.update(orjson.dumps(arr.shape))
    if not arr.dtype.hasobject:
        h.update(np.asarray(arr, order="C"))
        return
    for item in arr.flat:
        if isinstance(item, str):
            item = item.encode("utf-8", "surrogatepass")
        elif not isinstance(item, bytes):
            raise TypeError(f"object arrays are hashed for strings only, not {type(item).__name__}")
        _update_sized(h, item)


def version_group(key: bytes) -> bytes:
    """`b"model:token:"`: what every key of one model version generation starts with."""
    return key[:-DIGEST_HEX]


def in_version(group: bytes, model: str, version: str) -> bool:
    """Whether a group belongs to `version` of `model`: any generation of it, or one exact token."""
    base = f"{model}{SEP}{version}".encode()
    return group == base + SEP.encode() or group.startswith(base + b"#")
