"""The two-tier prediction cache: an in-process LRU in front of a shared Redis.

A hit in the LRU costs a dict lookup, so a repeated request never reaches the batcher.
Redis shares answers between workers and replicas; it is an optimisation, never a
dependency: when it is down or slow the cache answers from memory, treats the rest as
misses, and leaves Redis alone for a second before trying it again.

Keys are `model:version_token:hash(input)` (keys.py); `drop_model_version` frees a removed
version's memory at once, while its old Redis entries become unreachable and expire by their
TTL. The parts: keys.py (keys), wire.py (the Redis format), lru.py (the memory tier),
redis_tier.py (coalesced reads, batched writes, the breaker), prediction.py (single flight).
"""

from __future__ import annotations

from gateway.cache.keys import cache_key, version_token
from gateway.cache.prediction import PredictionCache
from gateway.cache.settings import CacheSettings
from gateway.cache.stats import CacheStats
from gateway.cache.wire import Outputs

__all__ = ["CacheSettings", "CacheStats", "Outputs", "PredictionCache", "cache_key", "version_token"]
