"""The prediction cache's settings, read from `RTSERVE_CACHE_*` when the service starts."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class CacheSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTSERVE_CACHE_")

    enabled: bool = True
    """Off: every request runs the model (e.g. for models whose output is not a function of the input)."""
    max_entries: int = 10_000
    """Most entries in the in-process LRU of each worker."""
    max_bytes: int = 64 * 1024 * 1024
    """Most bytes (outputs plus a per-entry overhead) in the in-process LRU of each worker."""
    redis_ttl_s: int = 300
    """Lifetime of an entry in Redis; it also bounds how long entries of an unloaded version linger."""
    redis_timeout_ms: float = 20
    """Longest wait for one Redis read (queued or sent) or write; past it the cache answers without Redis."""
    redis_backoff_s: float = 1.0
    """After a Redis error, how long to leave Redis alone, so an outage costs no per-request timeouts."""
    max_pending_reads: int = 256
    """Redis reads in flight or queued per worker (queued ones leave as one MGET); past it a miss skips Redis."""
    max_pending_writes: int = 256
    """Redis writes waiting per worker (one writer batches them); more are skipped, so a slow Redis costs no memory."""
    redis_batch: int = 128
    """Most keys in one Redis read (MGET) or write (script call); the rest leave with the next."""
    redis_min_cost_ms: float = 0.5
    """Versions whose requests are expected to cost less than this keep to the in-process tier: running
    them again is cheaper than a Redis round trip and its client's CPU on the event loop. 0 shares all."""
    tenant_isolation: bool = True
    """Each tenant has cache entries of its own: a tenant never gets another's answer, so neither
    `X-Cache: hit` nor the speed of a hit tells it that another tenant sent the same input. Off, tenants
    share entries (more hits when they send the same inputs), and a hit can tell them so."""
    key_prefix: str = "rtserve:cache:"
    """Prefix of every Redis key of the cache."""
