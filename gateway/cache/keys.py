"""Cache keys: `model:version_token:hash(input)`, from the decoded tensor, never the request's text.

The version token is the resolved version plus its load generation (`version_token("v1", 3)
== "v1#3"`), so a reloaded or replaced version never reads entries of the one before it.
"""

from __future__ import annotations

import hashlib

import numpy as np
import orjson

SEP = ":"
DIGEST_HEX = 32  # blake2b, 16 bytes, as hex


def version_token(version: str, generation: int) -> str:
    """The version part of a key: a reload bumps the generation, so old entries are never read."""
    return f"{version}#{generation}"


def cache_key(model: str, version_token: str, arr: np.ndarray) -> bytes:
    """Key of one input: canonical bytes (dtype, shape, C-order data), never the request's JSON text."""
    if SEP in model or SEP in version_token:
        raise ValueError(f"model {model!r} and version token {version_token!r} must not contain {SEP!r}")
    if arr.dtype.hasobject:
        raise TypeError("object arrays have no canonical bytes")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    h = hashlib.blake2b(digest_size=16)
    h.update(arr.dtype.str.encode())
    h.update(orjson.dumps(arr.shape))
    h.update(np.asarray(arr, order="C"))
    return f"{model}{SEP}{version_token}{SEP}{h.hexdigest()}".encode()


def version_group(key: bytes) -> bytes:
    """`b"model:token:"`: what every key of one model version generation starts with."""
    return key[:-DIGEST_HEX]


def in_version(group: bytes, model: str, version: str) -> bool:
    """Whether a group belongs to `version` of `model`: any generation of it, or one exact token."""
    base = f"{model}{SEP}{version}".encode()
    return group == base + SEP.encode() or group.startswith(base + b"#")
