"""The outbox relay's Kafka publisher against the real broker: key, headers, exact
decimals and order, and a record refused for good told apart from a passing failure."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from strategy_worker.adapters.kafka import KafkaEventPublisher, KafkaProducer
from strategy_worker.config import KafkaConfig
from strategy_worker.errors import StrategyWorkerError
from strategy_worker.messages import EventContext, execution_started
from strategy_worker.store import OutboxEvent

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TopicFactory = Callable[..., Awaitable[str]]


def _config(bootstrap: str) -> KafkaConfig:
    return KafkaConfig.model_validate({"bootstrap_servers": bootstrap})


async def _read(bootstrap: str, topic: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(20):
            while len(records) < count:
                batch = await consumer.getmany(timeout_ms=200)
                for partition_records in batch.values():
                    records.extend(partition_records)
    finally:
        await consumer.stop()
    return records


def _event(ctx: EventContext, n: int) -> OutboxEvent:
    payload = {
        **execution_started(ctx, at=datetime(2024, 1, 1, 0, 0, n, tzinfo=UTC), initial_orders=[]),
        "cash": Decimal("99824.50"),
        "tiny": Decimal("0.000000000001"),
        "n": n,
    }
    return OutboxEvent(
        event_id=uuid.uuid5(ctx.execution_id, f"event-{n}"),
        execution_id=ctx.execution_id,
        user_id=ctx.user_id,
        key=ctx.key,
        event_type=str(payload["type"]),
        payload=payload,
    )


async def test_a_batch_arrives_keyed_by_strategy_with_headers_exact_decimals_and_in_order(
    kafka_bootstrap: str, make_topic: TopicFactory
) -> None:
    # Arrange: events of two strategies, interleaved, on a topic of three partitions.
    topic = await make_topic("execution", partitions=3)
    contexts = [
        EventContext(execution_id=uuid.uuid4(), strategy_id=uuid.uuid4(), user_id=uuid.uuid4())
        for _ in range(2)
    ]
    events = [_event(contexts[n % 2], n) for n in range(20)]
    producer = KafkaProducer(_config(kafka_bootstrap))
    await producer.start()
    publisher = KafkaEventPublisher(producer, topic=topic)

    # Act: returns once every record is acknowledged.
    await publisher.publish(events[:12])
    await publisher.publish(events[12:])
    await publisher.publish([])
    await publisher.close()
    assert await producer.ping()
    await producer.stop()
    await producer.stop()  # idempotent

    # Assert
    records = await _read(kafka_bootstrap, topic, 20)
    by_id = {str(e.event_id): e for e in events}
    for ctx in contexts:
        mine = [r for r in records if r.key == ctx.key.encode()]
        assert len({r.partition for r in mine}) == 1  # one key, one partition
        assert [json.loads(r.value)["n"] for r in mine] == [
            e.payload["n"] for e in events if e.key == ctx.key
        ]
    for record in records:
        headers = dict(record.headers)
        event = by_id[headers["event-id"].decode()]
        assert headers["event-type"] == b"strategy.execution.started"
        assert json.loads(record.value, parse_float=Decimal) == event.payload
        assert b'"cash": 99824.50' in record.value  # an exact JSON number
        assert b'"tiny": 0.000000000001' in record.value


async def test_a_record_too_large_for_kafka_is_refused_for_good(
    kafka_bootstrap: str, make_topic: TopicFactory
) -> None:
    topic = await make_topic("execution")
    ctx = EventContext(execution_id=uuid.uuid4(), strategy_id=uuid.uuid4(), user_id=uuid.uuid4())
    huge = _event(ctx, 1)
    huge = OutboxEvent(
        event_id=huge.event_id,
        execution_id=huge.execution_id,
        user_id=huge.user_id,
        key=huge.key,
        event_type=huge.event_type,
        payload={**huge.payload, "padding": "x" * 3_000_000},
    )
    producer = KafkaProducer(_config(kafka_bootstrap))
    await producer.start()
    try:
        publisher = KafkaEventPublisher(producer, topic=topic)

        with pytest.raises(StrategyWorkerError) as caught:
            await publisher.publish([huge])

        assert caught.value.retryable is False
        await publisher.publish([_event(ctx, 2)])  # the publisher still works
    finally:
        await producer.stop()
    (record,) = await _read(kafka_bootstrap, topic, 1)
    assert json.loads(record.value)["n"] == 2
