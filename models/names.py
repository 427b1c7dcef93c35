"""What a model name or a version may be: BentoML's tag rules, and nothing a path would read specially.

Light on purpose: the `rtserve` client checks names with it before it uploads anything.
"""

from __future__ import annotations

import re

from core.errors import ModelRefused

NAME = re.compile(r"^[a-z0-9](?:[a-z0-9_.-]{0,62})$")
"""Lowercase letters, digits, `_`, `-`, `.`; at most 63, starting with a letter or digit."""


def check_name(kind: str, value: str) -> None:
    if not NAME.fullmatch(value or ""):
        raise ModelRefused(f"{kind} '{value}' is not allowed: use lowercase letters, digits, '_', '-' and '.' "
                           "(at most 63, starting with a letter or digit)")
