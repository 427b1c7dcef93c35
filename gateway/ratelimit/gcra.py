"""GCRA, the generic cell rate algorithm: a token bucket kept as one timestamp per tenant.

The same step twice: in Python for the in-process limiter, and in Lua for Redis, where it runs
atomically on the server's clock. tests/gateway/test_ratelimit.py runs both on the same
sequences and requires identical answers.
"""

from __future__ import annotations


def gcra(tat: int, now: int, interval: int, burst: int, n: int = 1) -> tuple[int, int, int, int, int]:
    """One GCRA step for up to `n` tokens, in integer time units, so `remaining` never
    suffers float rounding. Granting k at once is exactly k single steps at the same instant.

    Returns (granted, new_tat, remaining, reset_after, retry_after); granted is 0 (refused)
    or as many of the `n` as fit under the burst now. `GCRA_LUA` below is this function
    line for line, on Redis's clock.
    """
    if tat < now:  # noqa: PLR1730 - as the Lua says it
        tat = now
    free = (now + interval * burst - tat) // interval
    granted = min(n, free)
    if granted < 1:
        return 0, tat, 0, tat - now, tat + interval - interval * burst - now
    new_tat = tat + granted * interval
    return granted, new_tat, free - granted, new_tat - now, 0


# KEYS[1] tenant key; ARGV: interval (microseconds), burst, tokens wanted, and optionally now
# (microseconds; the limiter never sends it, so Redis's own TIME decides, but a test can drive
# the clock through it). Returns {granted, remaining, reset_after_us, retry_after_us}. TIME
# before a write needs effects replication (the default since Redis 5; the guarded call
# enables it on 3.2-4).
GCRA_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3]) or 1
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local free = math.floor((now + interval * burst - tat) / interval)
local granted = math.min(n, free)
if granted < 1 then
  return {0, 0, tat - now, tat + interval - interval * burst - now}
end
local new_tat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {granted, free - granted, new_tat - now, 0}
"""
