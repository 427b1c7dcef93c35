"""Per-model route tables held in this process."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.errors import ModelNotFound
from routing.table import RouteTable


class Router:
    def __init__(self, tables: Mapping[str, RouteTable]) -> None:
        self._tables = dict(tables)

    def table(self, name: str) -> RouteTable:
        try:
            return self._tables[name]
        except KeyError:
            raise ModelNotFound(f"model '{name}' is not served here") from None

    def set_weights(self, name: str, weights: Mapping[str, float]) -> None:
        self._tables[name] = RouteTable(weights, salt=self.table(name).salt)

    def resolve(self, name: str, user: str | None = None) -> str:
        return self.table(name).choose(user)
