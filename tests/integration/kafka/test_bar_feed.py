"""KafkaBarFeed on the real broker: every worker reads every partition, malformed bars are
counted with their code, and the start position follows `start_from`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from strategy_worker.adapters.kafka.bars import KafkaBarFeed
from strategy_worker.config import KafkaConfig
from strategy_worker.domain.signals.bars import Bar
from strategy_worker.domain.signals.synthetic import random_bars
from strategy_worker.messages.bars import encode_bar_message
from strategy_worker.messages.jsonwire import encode_json
from strategy_worker.metrics import WorkerMetrics
from strategy_worker.ports import BarBatch, BarFeed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TopicFactory = Callable[..., Awaitable[str]]


async def _produce(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def _collect(
    feed: BarFeed, bars: int, rejected: int = 0, within_s: float = 20.0
) -> list[BarBatch]:
    batches: list[BarBatch] = []

    async def run() -> None:
        async for batch in feed:
            batches.append(batch)
            if (
                sum(len(b.bars) for b in batches) >= bars
                and sum(len(b.rejected) for b in batches) >= rejected
            ):
                return

    await asyncio.wait_for(run(), within_s)
    return batches


def _config(bootstrap: str) -> KafkaConfig:
    return KafkaConfig.model_validate({"bootstrap_servers": bootstrap})


async def test_two_feeds_each_read_every_bar_of_every_partition_and_count_bad_ones(
    kafka_bootstrap: str, make_topic: TopicFactory
) -> None:
    # Arrange: 3 partitions, two symbols keyed by symbol, two malformed messages.
    topic = await make_topic("bars", partitions=3)
    bars = random_bars(20, seed=1) + random_bars(20, seed=2, symbol="MSFT")
    fields = json.loads(encode_bar_message(bars[0]), parse_float=Decimal)
    bad_high = encode_json({**fields, "high": fields["low"] - 1}).encode()
    items = [(b.symbol.encode(), encode_bar_message(b)) for b in bars]
    items += [(b"AAPL", b"not json"), (b"AAPL", bad_high)]
    await _produce(kafka_bootstrap, topic, items)
    registry = CollectorRegistry()
    start = datetime.now(UTC) - timedelta(minutes=5)
    feeds = [
        KafkaBarFeed(
            _config(kafka_bootstrap), topic=topic, start_from=start, metrics=WorkerMetrics(registry)
        ),
        KafkaBarFeed(_config(kafka_bootstrap), topic=topic, start_from=start),
    ]
    # Act
    try:
        for feed in feeds:
            await feed.start()
        results = [await _collect(feed, len(bars), rejected=2) for feed in feeds]
    finally:
        for feed in feeds:
            await feed.stop()
    # Assert: both saw all 40 bars (no group shares them out), per symbol in order.
    for feed, batches in zip(feeds, results, strict=True):
        assert feed.partitions == ()  # stopped
        got: list[Bar] = [bar for batch in batches for bar in batch.bars]
        assert sorted(got, key=lambda b: (b.symbol, b.start)) == sorted(
            bars, key=lambda b: (b.symbol, b.start)
        )
        for symbol in ("AAPL", "MSFT"):
            starts = [b.start for b in got if b.symbol == symbol]
            assert starts == sorted(starts)
        codes = sorted(r.rejection.code for batch in batches for r in batch.rejected)
        assert codes == ["inconsistent_ohlc", "invalid_json"]
        assert all(r.source.startswith(f"{topic}/") for batch in batches for r in batch.rejected)
    assert registry.get_sample_value("strategy_bars_received_total", {"source": "kafka"}) == 40
    assert registry.get_sample_value("strategy_bars_ignored_total", {"reason": "invalid_json"}) == 1


async def test_by_default_a_feed_starts_at_the_end_and_sees_only_new_bars(
    kafka_bootstrap: str, make_topic: TopicFactory
) -> None:
    topic = await make_topic("bars", partitions=2)
    old, new = random_bars(5, seed=3), random_bars(5, seed=4, symbol="MSFT")
    await _produce(kafka_bootstrap, topic, [(b"AAPL", encode_bar_message(b)) for b in old])
    feed = KafkaBarFeed(_config(kafka_bootstrap), topic=topic)
    await feed.start()
    try:
        assert feed.partitions == (0, 1)
        await _produce(kafka_bootstrap, topic, [(b"MSFT", encode_bar_message(b)) for b in new])
        batches = await _collect(feed, len(new))
    finally:
        await feed.stop()
    assert [bar for batch in batches for bar in batch.bars] == new


async def test_a_missing_bar_topic_fails_the_start_with_a_clear_error(kafka_bootstrap: str) -> None:
    feed = KafkaBarFeed(_config(kafka_bootstrap), topic="no.such.bars.topic.x1")
    with pytest.raises(Exception, match="does not exist"):
        await feed.start()
    await feed.stop()
