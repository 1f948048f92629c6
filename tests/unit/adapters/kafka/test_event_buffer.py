"""The event buffer: executions never wait for Kafka, events leave in order, outages are
retried, records Kafka refuses for good are dropped and counted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from strategy_worker.adapters.kafka.event_buffer import BufferedEventPublisher, Record
from strategy_worker.adapters.retry import Backoff
from strategy_worker.errors import StrategyWorkerError, TransientError
from strategy_worker.metrics import WorkerMetrics

_FAST = Backoff(base_s=0.001, max_s=0.005)


class _Sender:
    """A producer stand-in: fails the next `outage` calls, refuses values containing
    `poison` for good, and otherwise records what it was sent."""

    def __init__(self, *, outage: int = 0, poison: bytes | None = None) -> None:
        self.outage = outage
        self.poison = poison
        self.sent: list[Record] = []
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def send_batch(self, topic: str, records: Sequence[Record]) -> None:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.outage > 0:
            self.outage -= 1
            raise TransientError(f"publish to {topic} failed: KafkaConnectionError")
        if self.poison is not None and any(self.poison in value for value, _, _ in records):
            raise StrategyWorkerError("publish failed: MessageSizeTooLargeError", retryable=False)
        self.sent.extend(records)

    def values(self) -> list[int]:
        return [json.loads(value)["n"] for value, _, _ in self.sent]


def _event(n: int, note: str = "") -> dict[str, object]:
    return {"type": "strategy.execution.order_filled", "n": n, "note": note}


async def test_publish_when_kafka_stalls_then_returns_at_once_and_sends_behind() -> None:
    sender = _Sender()
    sender.gate = asyncio.Event()
    publisher = BufferedEventPublisher(sender, topic="t", backoff=_FAST)
    publisher.start()

    async with asyncio.timeout(1):
        await publisher.publish_batch("strategy-1", [_event(1), _event(2)])
    assert publisher.pending == 2
    sender.gate.set()

    assert await publisher.drain(within_s=2)
    assert sender.values() == [1, 2]
    assert {key for _, key, _ in sender.sent} == {b"strategy-1"}
    await publisher.close()


async def test_send_when_kafka_down_for_a_while_then_retried_in_order_and_nothing_lost() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    sender = _Sender(outage=5)
    publisher = BufferedEventPublisher(sender, topic="t", metrics=metrics, backoff=_FAST)
    publisher.start()

    for n in range(10):
        await publisher.publish(f"s-{n % 3}", _event(n))

    assert await publisher.drain(within_s=2)
    assert sender.values() == list(range(10))
    assert publisher.failures == 5
    assert registry.get_sample_value("strategy_event_publish_failures_total") == 5
    assert registry.get_sample_value("strategy_events_pending") == 0
    await publisher.close()


async def test_send_when_kafka_refuses_one_record_for_good_then_only_it_is_dropped() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    sender = _Sender(poison=b"POISON")
    publisher = BufferedEventPublisher(sender, topic="t", metrics=metrics, backoff=_FAST)
    publisher.start()

    await publisher.publish_batch("s", [_event(1), _event(2, "POISON"), _event(3)])

    assert await publisher.drain(within_s=2)
    assert sender.values() == [1, 3]
    assert publisher.dropped == 1
    assert registry.get_sample_value("strategy_events_dropped_total") == 1
    await publisher.close()


async def test_publish_when_queue_full_then_waits_until_kafka_takes_some() -> None:
    sender = _Sender()
    sender.gate = asyncio.Event()
    publisher = BufferedEventPublisher(sender, topic="t", backoff=_FAST, max_pending=2)
    publisher.start()
    await publisher.publish_batch("s", [_event(1), _event(2)])

    third = asyncio.create_task(publisher.publish("s", _event(3)))
    await asyncio.sleep(0.02)
    assert not third.done()  # backpressure: the queue holds its maximum
    sender.gate.set()

    async with asyncio.timeout(2):
        await third
    assert await publisher.drain(within_s=2)
    assert sender.values() == [1, 2, 3]
    await publisher.close()


async def test_drain_when_kafka_never_answers_then_false_after_timeout() -> None:
    sender = _Sender(outage=1_000_000)
    publisher = BufferedEventPublisher(sender, topic="t", backoff=_FAST)
    publisher.start()
    await publisher.publish("s", _event(1))

    assert await publisher.drain(within_s=0.05) is False
    assert publisher.pending == 1
    await publisher.close(within_s=0.01)


async def test_publish_after_close_then_error() -> None:
    publisher = BufferedEventPublisher(_Sender(), topic="t")
    publisher.start()
    await publisher.close()

    with pytest.raises(StrategyWorkerError, match="closed"):
        await publisher.publish("s", _event(1))


def test_new_when_limits_below_one_then_value_error() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BufferedEventPublisher(_Sender(), topic="t", max_batch=0)
