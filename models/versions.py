"""Version names a model can be served as, checked the same way on every path that loads or deploys one."""

from __future__ import annotations

import re

VERSION_NAME = re.compile(r"[a-z0-9_][a-z0-9_.-]{0,62}")
"""A version a model can be served as: a BentoML tag version in the store's own (lower) case, since the
store lower-cases what it is asked for, and `V1` would serve `v1` a second time under another name."""
RESERVED_VERSIONS = frozenset({"latest"})
"""Versions with a meaning of their own: the store resolves `name:latest` to its newest version, so a version
loaded as `latest` would serve that one again, under a name whose meaning moves with the next save."""


def version_problem(version: str) -> str | None:
    """Why `version` cannot name a served version, or None when it can; every load and deploy path asks."""
    if not VERSION_NAME.fullmatch(version):
        return "is not a version name (lower-case letters, digits, _ . -, at most 63)"
    if version in RESERVED_VERSIONS:
        return "is reserved: the model store resolves it to its newest version; name the version itself"
    return None
