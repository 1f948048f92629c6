"""A fleet-wide order rate limit toward the OMS: one token bucket in Redis, shared by every
worker (`risk.fleet_orders_per_second`, `risk.fleet_order_burst`).

The per-worker limit stays in each process (it protects the process); this one protects the
OMS from the fleet. One Lua script refills and takes atomically on Redis's own clock, so
workers with skewed clocks share one bucket fairly. Closing orders (CLOSE, STOP_LOSS) are
never throttled: they take their tokens even below zero (down to -burst), which delays the
ordinary orders that follow, exactly as the per-worker bucket does.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from strategy_worker.errors import TransientError

# KEYS[1] the bucket; ARGV rate/s, burst, ordinary wanted, forced. Returns
# {ordinary granted, seconds until the next token}.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local want, forced = tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate); ts = now end
tokens = math.max(-burst, tokens - forced)
local granted = math.max(0, math.min(want, math.floor(tokens)))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts))
redis.call('EXPIRE', KEYS[1], math.ceil(2 * burst / rate) + 60)
local wait = 0
if granted < want then wait = (1 - (tokens - math.floor(tokens))) / rate end
return {granted, tostring(wait)}
"""


class RedisOrderRate:
    """`OrderRateLimit` on one Redis key (see the module docstring)."""

    def __init__(self, client: Redis, *, key: str, rate: float, burst: int) -> None:
        self._client = client
        self._key = key
        self._rate = rate
        self._burst = burst
        self._script: Any = client.register_script(_TAKE)

    async def take(self, *, ordinary: int, forced: int) -> tuple[int, float]:
        """Take `forced` tokens whatever is left and up to `ordinary` more; returns how many
        ordinary orders may go now and the seconds until the next token."""
        if ordinary == 0 and forced == 0:
            return 0, 0.0
        try:
            granted, wait = await self._script(
                keys=[self._key], args=[self._rate, self._burst, ordinary, forced]
            )
        except RedisError as exc:
            raise TransientError(f"fleet rate limit unavailable: {type(exc).__name__}") from exc
        return int(granted), float(wait)

    async def close(self) -> None:
        await self._client.aclose()
