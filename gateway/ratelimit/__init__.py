"""Per-tenant rate limits: GCRA (a token bucket kept as one timestamp per tenant).

Each tenant has a theoretical arrival time (TAT). A request is allowed when the TAT,
advanced by one emission interval (1/rate), is at most `burst` intervals ahead of now;
so a fresh tenant gets `burst` requests at once and then `rate` a second. One number per
tenant means one key, one read-modify-write and nothing to refill in the background.

With Redis, a worker does not ask once per request: it leases a block of a tenant's tokens
(one Lua script call grants up to `block` tokens, as many as fit under the burst right now,
advancing the TAT by all of them) and spends them locally, with no I/O, for up to `lease_s`
after the answer arrived; what is left then is dropped. Concurrent requests of a tenant
that find the block empty wait on one shared refill instead of each calling Redis.
`block = min(lease_block, burst // 16)`, at least 1: tiers with a burst under 32 lease one
token at a time, which is exactly one decision by Redis per request. A worker asks for at
most twice what it used of its previous block (or for the requests waiting, if more), so a
quiet tenant's blocks stay small and few of its tokens expire unused.

Accuracy:
- With Redis every admission spends a token that the Lua script debited, atomically and on
  the Redis server's clock (`TIME`, so replicas' clocks do not matter), at most `lease_s`
  before (plus the reply's trip back). So across all workers and replicas, in any window
  of length L at most `burst + rate * (L + lease_s)` requests pass; the `rate * lease_s`
  beyond `burst + rate * L` is also at most the tokens that workers held unused when the
  window began (none with a block of 1). The other way, a tenant may be refused early by up
  to `block - 1` tokens per worker that holds an unused block, and tokens leased but unused
  for `lease_s` are lost (under-use, never excess). The interval is rounded to whole
  microseconds, so rates above 1e6/s are not honoured.
- Without Redis the decision is exact per process only: N workers each keep their own
  TATs, so a tenant gets up to N x (burst + rate * L) across them.
- While Redis is unreachable or slower than `redis_timeout_ms`, `fail_open` lets every
  request through (no limit at all) and `fail_open=False` refuses every request with 503;
  tokens of a block leased before the outage are still spent, as they were debited.

RateLimit-Remaining with a block is Redis's count at the last grant, the block included,
less the tokens this worker used since: exact for one worker, and never negative; other
workers' use since is not seen. Retry-After and RateLimit-Reset on a refusal are Redis's.

Cost: the in-process path is a dict lookup and integer arithmetic; the Redis path is the
same while the worker holds a block, and one EVALSHA round trip (EVAL only after the
server lost its script cache) per block, per refusal (shared by the requests waiting on
it), and per request of a tier with a block of 1.

The parts: gcra.py (the step, in Python and in Lua), settings.py, decision.py (decisions,
counters, the strategy interface), one module per strategy (local.py in-process,
per_request.py and leased.py on Redis, both through redis_grants.py), and limiter.py
(`RateLimiter`, which picks the strategy per tier).
"""

from __future__ import annotations

from gateway.ratelimit.decision import UNLIMITED, Decision, RateLimitStats
from gateway.ratelimit.gcra import GCRA_LUA, gcra
from gateway.ratelimit.limiter import RateLimiter
from gateway.ratelimit.settings import DEFAULT_TIER, RateLimitSettings, TierLimit

__all__ = [
    "DEFAULT_TIER",
    "GCRA_LUA",
    "UNLIMITED",
    "Decision",
    "RateLimitSettings",
    "RateLimitStats",
    "RateLimiter",
    "TierLimit",
    "gcra",
]
