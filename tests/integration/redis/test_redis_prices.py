"""RedisPriceSource against the real Redis: one round trip, bad and stale prices skipped."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from strategy_worker.adapters.redis_prices import RedisPriceSource, write_price
from strategy_worker.config import RedisSection
from strategy_worker.errors import TransientError
from strategy_worker.metrics import WorkerMetrics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

NOW = datetime(2024, 1, 1, 15, 30, tzinfo=UTC)


@pytest.fixture
def prefix() -> str:
    return f"test-prices-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def source(
    redis_url: str, prefix: str
) -> AsyncIterator[tuple[RedisPriceSource, WorkerMetrics]]:
    metrics = WorkerMetrics(CollectorRegistry())
    config = RedisSection.model_validate(
        {"url": redis_url, "key_prefix": prefix, "price_max_age": 60}
    )
    prices = RedisPriceSource.from_config(config, metrics=metrics, now=lambda: NOW)
    try:
        yield prices, metrics
    finally:
        await prices.close()


async def cleanup(client: Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)


async def test_prices_are_read_exactly_and_bad_or_stale_ones_skipped(
    redis_client: Redis, source: tuple[RedisPriceSource, WorkerMetrics], prefix: str
) -> None:
    prices, metrics = source
    try:
        await write_price(redis_client, "AAPL", Decimal("175.5000"), NOW, key_prefix=prefix)
        await write_price(redis_client, "MSFT", Decimal("410.1234"), NOW, key_prefix=prefix)
        await redis_client.hset(f"{prefix}GOOGL", mapping={"price": "abc", "ts": NOW.isoformat()})
        await redis_client.hset(f"{prefix}TSLA", mapping={"price": "NaN", "ts": NOW.isoformat()})
        await redis_client.hset(f"{prefix}AMZN", mapping={"price": "-1", "ts": NOW.isoformat()})
        await redis_client.hset(f"{prefix}META", mapping={"price": "500", "ts": "yesterday"})
        stale = (NOW - timedelta(seconds=61)).isoformat()
        await redis_client.hset(f"{prefix}NFLX", mapping={"price": "600", "ts": stale})

        result = await prices.get_prices(
            ["AAPL", "MSFT", "GOOGL", "TSLA", "AMZN", "META", "NFLX", "NOPE", "AAPL"]
        )
    finally:
        await cleanup(redis_client, prefix)

    assert result == {"AAPL": Decimal("175.5000"), "MSFT": Decimal("410.1234")}
    assert str(result["AAPL"]) == "175.5000"
    skipped = metrics.prices_skipped
    assert skipped.labels(reason="malformed")._value.get() == 3
    assert skipped.labels(reason="malformed_ts")._value.get() == 1
    assert skipped.labels(reason="stale")._value.get() == 1
    assert await prices.ping()


async def test_empty_symbol_list_needs_no_round_trip(
    source: tuple[RedisPriceSource, WorkerMetrics],
) -> None:
    prices, _ = source

    assert await prices.get_prices([]) == {}


async def test_unreachable_redis_is_a_transient_error() -> None:
    config = RedisSection.model_validate({"url": "redis://127.0.0.1:1/0", "socket_timeout": 0.5})
    prices = RedisPriceSource.from_config(config)
    try:
        with pytest.raises(TransientError):
            await prices.get_prices(["AAPL"])
        assert not await prices.ping()
    finally:
        await prices.close()


async def test_ping_is_a_bounded_readiness_check_of_a_frozen_redis(
    redis_url: str, redis_client: Redis
) -> None:
    config = RedisSection.model_validate({"url": redis_url, "socket_timeout": 0.3})
    prices = RedisPriceSource.from_config(config)
    try:
        assert await prices.ping() is True

        await redis_client.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        frozen = await asyncio.wait_for(prices.ping(), timeout=1.0)  # within its bound

        assert frozen is False
        await asyncio.sleep(1.5)
        assert await prices.ping() is True
    finally:
        await prices.close()
