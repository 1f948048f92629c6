"""RedisPriceFeed against the real Redis: an announced price is yielded once validated, bad
or stale ones are skipped, and a killed connection is resubscribed (and caught up)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from strategy_worker.adapters.redis_price_feed import RedisPriceFeed
from strategy_worker.adapters.redis_prices import RedisPriceSource, write_price
from strategy_worker.adapters.retry import Backoff
from strategy_worker.config import RedisSection
from strategy_worker.metrics import WorkerMetrics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

Batch = Mapping[str, Decimal]


class Rig:
    """A feed on its own channel, key prefix and client name (the Redis server is shared)."""

    def __init__(self, redis_url: str, client: Redis, *, idle_s: float = 5.0) -> None:
        tag = uuid.uuid4().hex[:8]
        self.client = client
        self.prefix = f"test-feed-{tag}:"
        self.channel = f"test-feed-{tag}.updates"
        self.name = f"test-feed-{tag}"
        self.metrics = WorkerMetrics(CollectorRegistry())
        config = RedisSection.model_validate(
            {"url": redis_url, "key_prefix": self.prefix, "price_max_age": 60}
        )
        self.source = RedisPriceSource.from_config(config, metrics=self.metrics)
        feed_client = Redis.from_url(
            redis_url, client_name=self.name, retry=Retry(NoBackoff(), 0), socket_timeout=5
        )
        self.feed = RedisPriceFeed(
            feed_client,
            self.source,
            channel=self.channel,
            backoff=Backoff(base_s=0.01, max_s=0.1),
            idle_s=idle_s,
            metrics=self.metrics,
        )
        self.updates: AsyncIterator[Batch] = self.feed.updates()
        self._next: asyncio.Task[Batch] | None = None

    def start_next(self) -> None:
        """Ask for the next batch (the feed subscribes when first asked)."""
        self._next = asyncio.ensure_future(anext(self.updates))

    async def next_batch(self) -> Batch:
        if self._next is None:
            self.start_next()
        assert self._next is not None
        try:
            return await asyncio.wait_for(self._next, 5.0)
        finally:
            self._next = None

    async def subscribed(self, count: int = 1) -> None:
        """Until Redis counts `count` subscribers on the channel (publishing before that
        would be lost: pub/sub is fire-and-forget)."""
        async with asyncio.timeout(5):
            while True:
                numsub = dict(await self.client.pubsub_numsub(self.channel))
                if numsub.get(self.channel, 0) >= count:
                    return
                await asyncio.sleep(0.01)

    async def publish(self, symbol: str, price: str, at: datetime | None = None) -> None:
        at = at or datetime.now(UTC)
        await write_price(
            self.client, symbol, Decimal(price), at, key_prefix=self.prefix, channel=self.channel
        )

    async def close(self) -> None:
        if self._next is not None:
            self._next.cancel()
            await asyncio.gather(self._next, return_exceptions=True)
        await self.updates.aclose()  # type: ignore[attr-defined]
        await self.feed.close()
        await self.source.close()
        keys = [key async for key in self.client.scan_iter(match=f"{self.prefix}*")]
        if keys:
            await self.client.delete(*keys)


@pytest.fixture
async def rig(redis_url: str, redis_client: Redis) -> AsyncIterator[Rig]:
    rig = Rig(redis_url, redis_client)
    try:
        yield rig
    finally:
        await rig.close()


async def test_announced_price_is_yielded_exactly(rig: Rig) -> None:
    rig.start_next()
    await rig.subscribed()

    await rig.publish("AAPL", "175.5000")
    batch = await rig.next_batch()

    assert batch == {"AAPL": Decimal("175.5000")}
    assert str(batch["AAPL"]) == "175.5000"


async def test_burst_of_announcements_yields_each_symbol_once(rig: Rig) -> None:
    rig.start_next()
    await rig.subscribed()

    for symbol, price in (("AAPL", "175.50"), ("MSFT", "410.00"), ("AAPL", "175.40")):
        await rig.publish(symbol, price)
    seen: dict[str, Decimal] = {}
    batches = 0
    while len(seen) < 2:
        seen.update(await rig.next_batch())
        batches += 1

    # The last write wins: a symbol is read when the batch is, not per announcement.
    assert seen == {"AAPL": Decimal("175.40"), "MSFT": Decimal("410.00")}
    assert batches <= 2


async def test_garbage_stale_and_malformed_announcements_are_skipped(
    rig: Rig, redis_client: Redis
) -> None:
    rig.start_next()
    await rig.subscribed()
    now = datetime.now(UTC)

    await redis_client.hset(f"{rig.prefix}GOOGL", mapping={"price": "abc", "ts": now.isoformat()})
    await redis_client.publish(rig.channel, "GOOGL")
    await rig.publish("NFLX", "600", at=now - timedelta(seconds=61))
    await redis_client.publish(rig.channel, "not a symbol; DROP")
    await redis_client.publish(rig.channel, "\xff" * 40)
    await redis_client.publish(rig.channel, "NOPRICE")  # announced, but no hash
    await rig.publish("MSFT", "410.1234")
    batch = await rig.next_batch()

    assert batch == {"MSFT": Decimal("410.1234")}
    skipped = rig.metrics.prices_skipped
    assert skipped.labels(reason="malformed")._value.get() == 1
    assert skipped.labels(reason="stale")._value.get() == 1
    assert skipped.labels(reason="malformed_symbol")._value.get() == 2


async def test_killed_connection_is_resubscribed_and_known_symbols_reread(
    rig: Rig, redis_client: Redis
) -> None:
    rig.start_next()
    await rig.subscribed()
    await rig.publish("AAPL", "175.50")
    assert await rig.next_batch() == {"AAPL": Decimal("175.50")}
    rig.start_next()
    await asyncio.sleep(0.05)  # the feed waits on its subscription again
    # A price whose announcement is lost (as it would be while the subscription is down).
    now = datetime.now(UTC)
    await write_price(redis_client, "AAPL", Decimal("160.00"), now, key_prefix=rig.prefix)

    killed = 0
    for info in await redis_client.client_list():
        if info.get("name") == rig.name:
            killed += await redis_client.client_kill_filter(_id=info["id"])
    assert killed == 1
    # Once resubscribed, the feed re-reads the symbols it knew.
    batch = await rig.next_batch()
    await rig.subscribed()

    assert batch == {"AAPL": Decimal("160.00")}
    assert rig.feed.subscriptions == 2
    await rig.publish("MSFT", "410.00")
    assert await rig.next_batch() == {"MSFT": Decimal("410.00")}


async def test_silent_channel_is_pinged_and_stays_subscribed(
    redis_url: str, redis_client: Redis
) -> None:
    rig = Rig(redis_url, redis_client, idle_s=0.1)
    try:
        rig.start_next()
        await rig.subscribed()
        await asyncio.sleep(0.5)  # five idle periods: pongs keep the subscription alive

        await rig.publish("AAPL", "175.50")
        assert await rig.next_batch() == {"AAPL": Decimal("175.50")}
        assert rig.feed.subscriptions == 1
    finally:
        await rig.close()


async def test_unreachable_redis_is_retried_without_raising() -> None:
    config = RedisSection.model_validate(
        {"url": "redis://127.0.0.1:1/0", "socket_timeout": 0.2, "price_channel": "x.updates"}
    )
    source = RedisPriceSource.from_config(config)
    feed = RedisPriceFeed.from_config(config, source)
    updates = feed.updates()
    pending = asyncio.ensure_future(anext(updates))
    try:
        done, _ = await asyncio.wait({pending}, timeout=1.0)

        assert not done  # still retrying, nothing raised
        assert feed.subscriptions == 0
    finally:
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
        await feed.close()
        await source.close()


async def _until(predicate: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while True:
            if await predicate():
                return
            await asyncio.sleep(0.02)


async def test_feed_ping_tells_readiness_whether_the_subscription_is_alive(
    redis_url: str, redis_client: Redis
) -> None:
    # /ready never checked Redis; the feed had no ping. It reports its own subscription:
    # down before it subscribes, up once Redis confirmed it, down while Redis does not
    # answer (a frozen server), up again after.
    rig = Rig(redis_url, redis_client, idle_s=0.2)
    try:
        assert await rig.feed.ping() is False  # not subscribed yet

        rig.start_next()
        await rig.subscribed()
        await _until(rig.feed.ping)

        await redis_client.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        await _until(lambda: _not(rig.feed.ping), within=1.4)

        await _until(rig.feed.ping, within=10)  # the pause ended: answered or resubscribed
        await rig.publish("AAPL", "175.50")
        assert await rig.next_batch() == {"AAPL": Decimal("175.50")}
    finally:
        await rig.close()

    assert await rig.feed.ping() is False  # closed


async def _not(predicate: Callable[[], Awaitable[bool]]) -> bool:
    return not await predicate()
