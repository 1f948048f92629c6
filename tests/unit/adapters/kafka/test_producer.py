"""The Kafka record of an outbox event, built without a broker."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from strategy_worker.adapters.kafka.producer import (
    KafkaEventPublisher,
    KafkaProducer,
    event_record,
)
from strategy_worker.config import KafkaConfig
from strategy_worker.errors import StrategyWorkerError
from strategy_worker.store import OutboxEvent


def _event(**payload: object) -> OutboxEvent:
    return OutboxEvent(
        event_id=uuid.UUID("2b1e3c4d-0000-4000-8000-000000000001"),
        execution_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        key="8f0e1d2c-0000-4000-8000-00000000000a",
        event_type="strategy.execution.order_filled",
        payload={"type": "strategy.execution.order_filled", **payload},
    )


def test_record_is_the_exact_json_keyed_by_strategy_with_id_and_type_headers() -> None:
    value, key, headers = event_record(_event(price=Decimal("175.50"), quantity=200))

    assert value == (
        b'{"type": "strategy.execution.order_filled", "price": 175.50, "quantity": 200}'
    )
    assert key == b"8f0e1d2c-0000-4000-8000-00000000000a"
    assert dict(headers) == {
        "event-id": b"2b1e3c4d-0000-4000-8000-000000000001",
        "event-type": b"strategy.execution.order_filled",
    }


async def test_a_payload_that_is_not_exact_json_is_refused_for_good_before_sending() -> None:
    producer = KafkaProducer(KafkaConfig.model_validate({"bootstrap_servers": "127.0.0.1:1"}))
    publisher = KafkaEventPublisher(producer, topic="t")

    with pytest.raises(StrategyWorkerError, match="JSON") as caught:
        await publisher.publish([_event(price=175.5)])  # a float: never money on the wire

    assert caught.value.retryable is False
