"""Peer (d): a raw ASGI callable returning constant JSON under uvicorn: the ceiling of Python HTTP here."""

from __future__ import annotations

from loadtest.peers.empty_bentoml import constant as app

__all__ = ["app"]
