"""The fleet-wide order rate limit on the real Redis: one bucket for every worker, refilled
on Redis's clock; closing orders take tokens even below zero."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from strategy_worker.adapters.redis_rate_limit import RedisOrderRate

pytestmark = pytest.mark.integration


async def test_two_workers_share_one_bucket_and_closes_borrow(redis_url: str) -> None:
    key = f"sw-test:{uuid.uuid4().hex}:rate"
    a = RedisOrderRate(Redis.from_url(redis_url), key=key, rate=10.0, burst=5)
    b = RedisOrderRate(Redis.from_url(redis_url), key=key, rate=10.0, burst=5)
    try:
        first, _ = await a.take(ordinary=4, forced=0)
        second, wait = await b.take(ordinary=4, forced=0)
        assert (first, second) == (4, 1)  # five tokens in all, whoever asks
        assert 0 < wait <= 0.1

        granted, _ = await a.take(ordinary=3, forced=3)  # closes go, and borrow
        assert granted == 0
        await asyncio.sleep(0.35)  # 3.5 tokens back, 3 of them owed: none yet
        assert (await b.take(ordinary=1, forced=0))[0] == 0
        await asyncio.sleep(0.3)
        assert (await b.take(ordinary=5, forced=0))[0] >= 2
    finally:
        await a.close()
        await b.close()
