"""A route table: the weights of one model's versions, and the choice of a version per request."""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Mapping


def sticky_fraction(key: str, salt: str) -> float:
    """A stable point in [0, 1) for a user: the same user and salt always land in the same place."""
    digest = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class RouteTable:
    def __init__(self, weights: Mapping[str, float], salt: str = "") -> None:
        positive = {v: float(w) for v, w in weights.items() if w > 0}
        if not positive:
            raise ValueError("a route table needs at least one version with a positive weight")
        self.weights = dict(weights)
        self.salt = salt
        total = sum(positive.values())
        self._versions = list(positive)
        self._edges: list[float] = []
        acc = 0.0
        for w in positive.values():
            acc += w / total
            self._edges.append(acc)
        self._edges[-1] = 1.0

    def choose(self, user: str | None = None) -> str:
        """By weight; a `user` is sticky (hashed with the table's salt), anyone else is random."""
        if len(self._versions) == 1:
            return self._versions[0]
        point = random.random() if user is None else sticky_fraction(user, self.salt)
        return self._versions[bisect.bisect_right(self._edges, point)]
