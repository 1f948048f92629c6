"""Kafka adapters against the real broker: commit after handling, dead letters (the event
publisher has its own module, test_event_publisher.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import CollectorRegistry

from strategy_worker.adapters.kafka import (
    ConsumedRecord,
    KafkaDeadLetterPublisher,
    KafkaProducer,
    KafkaRecordConsumer,
)
from strategy_worker.adapters.retry import Backoff
from strategy_worker.config import KafkaConfig
from strategy_worker.errors import TransientError, ValidationError
from strategy_worker.metrics import WorkerMetrics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TopicFactory = Callable[..., Awaitable[str]]


def kafka_config(bootstrap: str, **overrides: object) -> KafkaConfig:
    settings: dict[str, object] = {
        "bootstrap_servers": bootstrap,
        "commit_interval": 0.1,
        "session_timeout_ms": 6000,
    }
    settings.update(overrides)
    return KafkaConfig.model_validate(settings)


async def produce(bootstrap: str, topic: str, *values: bytes, key: bytes | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, count: int, within_s: float = 20.0) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    records = []
    try:
        async with asyncio.timeout(within_s):
            while len(records) < count:
                batch = await consumer.getmany(timeout_ms=200)
                for partition_records in batch.values():
                    records.extend(partition_records)
    finally:
        await consumer.stop()
    return records


class Recorder:
    """A handler that records what it saw and can be told to fail for chosen payloads."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.fail_with: dict[bytes, Exception] = {}
        self.event = asyncio.Event()
        self.wanted: int = 0

    async def __call__(self, record: ConsumedRecord) -> None:
        failure = self.fail_with.get(record.value)
        if failure is not None:
            raise failure
        self.seen.append(record.value)
        if len(self.seen) >= self.wanted:
            self.event.set()

    async def wait_for(self, count: int, within_s: float = 30.0) -> None:
        self.wanted = count
        if len(self.seen) >= count:
            return
        self.event.clear()
        async with asyncio.timeout(within_s):
            while len(self.seen) < count:
                self.event.clear()
                await self.event.wait()


@pytest.fixture
async def dlq_producer(kafka_bootstrap: str) -> AsyncIterator[KafkaProducer]:
    producer = KafkaProducer(kafka_config(kafka_bootstrap))
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


def make_consumer(
    bootstrap: str,
    topics: list[str],
    group: str,
    handler: Callable[[ConsumedRecord], Awaitable[None]],
    dead_letters: KafkaDeadLetterPublisher,
    metrics: WorkerMetrics | None = None,
    **overrides: object,
) -> KafkaRecordConsumer:
    return KafkaRecordConsumer(
        kafka_config(bootstrap, **overrides),
        topics=topics,
        handler=handler,
        dead_letters=dead_letters,
        metrics=metrics,
        group_id=group,
        retry_backoff=Backoff(base_s=0.05, max_s=0.2),
    )


async def test_record_whose_handler_did_not_finish_is_redelivered_after_restart(
    kafka_bootstrap: str, make_topic: TopicFactory, dlq_producer: KafkaProducer
) -> None:
    # Arrange: m1 is handled; m2's handler keeps failing with a retryable error (its effects
    # were never made durable), so m2 and everything after it must stay uncommitted.
    topic, dlq_topic = await make_topic("approved"), await make_topic("dlq")
    group = f"sw-test-{uuid.uuid4().hex[:8]}"
    dead_letters = KafkaDeadLetterPublisher(dlq_producer, topic=dlq_topic)
    await produce(kafka_bootstrap, topic, b"m1", b"m2", b"m3")
    first = Recorder()
    first.fail_with[b"m2"] = TransientError("database unavailable")
    consumer = make_consumer(kafka_bootstrap, [topic], group, first, dead_letters)

    # Act
    await consumer.start()
    await first.wait_for(1)
    await asyncio.sleep(0.5)  # m2 is being retried; commits of m1 happen meanwhile
    await consumer.stop()

    second = Recorder()
    restarted = make_consumer(kafka_bootstrap, [topic], group, second, dead_letters)
    await restarted.start()
    await second.wait_for(2)
    await restarted.stop()

    # Assert: m3 never overtook m2, and after the restart delivery resumes exactly at m2.
    assert first.seen == [b"m1"]
    assert second.seen == [b"m2", b"m3"]


async def test_finished_records_are_committed_and_never_redelivered(
    kafka_bootstrap: str, make_topic: TopicFactory, dlq_producer: KafkaProducer
) -> None:
    topic, dlq_topic = await make_topic("approved", partitions=3), await make_topic("dlq")
    group = f"sw-test-{uuid.uuid4().hex[:8]}"
    dead_letters = KafkaDeadLetterPublisher(dlq_producer, topic=dlq_topic)
    values = [f"m{i}".encode() for i in range(30)]
    for index, value in enumerate(values):
        await produce(kafka_bootstrap, topic, value, key=f"k{index % 7}".encode())
    first = Recorder()
    consumer = make_consumer(kafka_bootstrap, [topic], group, first, dead_letters)
    await consumer.start()
    await first.wait_for(30)
    await consumer.stop()
    await consumer.stop()  # idempotent

    await produce(kafka_bootstrap, topic, b"after-restart")
    second = Recorder()
    restarted = make_consumer(kafka_bootstrap, [topic], group, second, dead_letters)
    await restarted.start()
    await second.wait_for(1)
    await asyncio.sleep(1.0)  # time for any wrongly uncommitted record to show up
    await restarted.stop()

    assert sorted(first.seen) == sorted(values)
    assert second.seen == [b"after-restart"]


async def test_malformed_record_is_dead_lettered_and_the_next_one_is_handled(
    kafka_bootstrap: str, make_topic: TopicFactory, dlq_producer: KafkaProducer
) -> None:
    topic, dlq_topic = await make_topic("approved"), await make_topic("dlq")
    group = f"sw-test-{uuid.uuid4().hex[:8]}"
    metrics = WorkerMetrics(CollectorRegistry())
    dead_letters = KafkaDeadLetterPublisher(
        dlq_producer, topic=dlq_topic, metrics=metrics, worker_id="w-1"
    )
    handler = Recorder()
    handler.fail_with[b"{not json"] = ValidationError("invalid JSON at char 1")
    await produce(kafka_bootstrap, topic, b"{not json", b"valid-1")
    consumer = make_consumer(kafka_bootstrap, [topic], group, handler, dead_letters, metrics)

    await consumer.start()
    await handler.wait_for(1)
    await consumer.stop()

    (dead,) = await read_all(kafka_bootstrap, dlq_topic, 1)
    envelope = json.loads(dead.value)
    assert handler.seen == [b"valid-1"]
    assert envelope["reason_code"] == "handler_error"
    assert "ValidationError: invalid JSON at char 1" in envelope["reason"]
    assert (envelope["source_topic"], envelope["source_partition"], envelope["source_offset"]) == (
        topic,
        0,
        0,
    )
    assert base64.b64decode(envelope["payload_base64"]) == b"{not json"
    assert dict(dead.headers)["dlq-reason-code"] == b"handler_error"
    assert metrics.messages_dead_lettered.labels(reason="handler_error")._value.get() == 1
    assert metrics.messages_consumed.labels(topic=topic)._value.get() == 2


async def test_oversized_record_is_dead_lettered_without_reaching_the_handler(
    kafka_bootstrap: str, make_topic: TopicFactory, dlq_producer: KafkaProducer
) -> None:
    topic, dlq_topic = await make_topic("approved"), await make_topic("dlq")
    group = f"sw-test-{uuid.uuid4().hex[:8]}"
    dead_letters = KafkaDeadLetterPublisher(dlq_producer, topic=dlq_topic)
    handler = Recorder()
    big = b"x" * 5000
    await produce(kafka_bootstrap, topic, big, b"small")
    consumer = make_consumer(
        kafka_bootstrap, [topic], group, handler, dead_letters, max_message_bytes=4096
    )

    await consumer.start()
    await handler.wait_for(1)
    await consumer.stop()

    (dead,) = await read_all(kafka_bootstrap, dlq_topic, 1)
    envelope = json.loads(dead.value)
    assert handler.seen == [b"small"]
    assert envelope["reason_code"] == "oversized"
    assert envelope["payload_size"] == 5000


async def test_one_consumer_serves_the_approved_and_control_topics(
    kafka_bootstrap: str, make_topic: TopicFactory, dlq_producer: KafkaProducer
) -> None:
    approved, control, dlq_topic = (
        await make_topic("approved"),
        await make_topic("control"),
        await make_topic("dlq"),
    )
    group = f"sw-test-{uuid.uuid4().hex[:8]}"
    seen_topics: list[str] = []
    done = asyncio.Event()

    async def handler(record: ConsumedRecord) -> None:
        seen_topics.append(record.topic)
        if len(seen_topics) == 2:
            done.set()

    consumer = make_consumer(
        kafka_bootstrap,
        [approved, control],
        group,
        handler,
        KafkaDeadLetterPublisher(dlq_producer, topic=dlq_topic),
    )
    await consumer.start()
    await produce(kafka_bootstrap, approved, b"strategy")
    await produce(kafka_bootstrap, control, b"stop")
    async with asyncio.timeout(30):
        await done.wait()
    assert await consumer.ping()
    await consumer.stop()

    assert sorted(seen_topics) == sorted([approved, control])
    assert not await consumer.ping()


async def test_stop_consuming_lets_the_in_flight_handler_finish_and_commits_it(
    kafka_bootstrap: str, make_topic: TopicFactory, dlq_producer: KafkaProducer
) -> None:
    topic, dlq_topic = await make_topic("approved"), await make_topic("dlq")
    group = f"sw-test-{uuid.uuid4().hex[:8]}"
    dead_letters = KafkaDeadLetterPublisher(dlq_producer, topic=dlq_topic)
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[bytes] = []

    async def slow(record: ConsumedRecord) -> None:
        started.set()
        await release.wait()
        finished.append(record.value)

    await produce(kafka_bootstrap, topic, b"slow-1", b"never-started")
    consumer = make_consumer(kafka_bootstrap, [topic], group, slow, dead_letters)
    await consumer.start()
    async with asyncio.timeout(30):
        await started.wait()
    stopping = asyncio.create_task(consumer.stop_consuming())
    await asyncio.sleep(0.3)
    assert not stopping.done()  # waits for the in-flight handler
    release.set()
    await stopping
    await consumer.stop()

    second = Recorder()
    restarted = make_consumer(kafka_bootstrap, [topic], group, second, dead_letters)
    await restarted.start()
    await second.wait_for(1)
    await restarted.stop()

    assert finished == [b"slow-1"]
    assert second.seen == [b"never-started"]


async def test_two_group_members_split_partitions_without_loss_or_duplicates(
    kafka_bootstrap: str, make_topic: TopicFactory, dlq_producer: KafkaProducer
) -> None:
    # Arrange: member A alone, then B joins mid-stream (a rebalance with in-flight work).
    topic, dlq_topic = await make_topic("approved", partitions=4), await make_topic("dlq")
    group = f"sw-test-{uuid.uuid4().hex[:8]}"
    dead_letters = KafkaDeadLetterPublisher(dlq_producer, topic=dlq_topic)
    handled: list[tuple[str, bytes]] = []
    all_done = asyncio.Event()
    total = 80

    def member(name: str) -> Callable[[ConsumedRecord], Awaitable[None]]:
        async def handle(record: ConsumedRecord) -> None:
            await asyncio.sleep(0.01)  # some work in flight when the rebalance comes
            handled.append((name, record.value))
            if len({value for _, value in handled}) == total:
                all_done.set()

        return handle

    first = make_consumer(kafka_bootstrap, [topic], group, member("a"), dead_letters)
    second = make_consumer(kafka_bootstrap, [topic], group, member("b"), dead_letters)
    await first.start()
    await produce(kafka_bootstrap, topic, *[f"m{i}".encode() for i in range(0, 40)])

    # Act
    await second.start()
    async with asyncio.timeout(30):
        await second.wait_assigned()
    await produce(kafka_bootstrap, topic, *[f"m{i}".encode() for i in range(40, total)])
    async with asyncio.timeout(60):
        await all_done.wait()
    await first.stop()
    await second.stop()

    # Assert
    values = [value for _, value in handled]
    assert sorted(set(values)) == sorted(f"m{i}".encode() for i in range(total))
    assert len(values) == total  # nothing handled twice across the rebalance
    assert {name for name, _ in handled} == {"a", "b"}


class BatchRecorder:
    """A batch handler that records each call; it fails a whole batch holding a poison
    value (as a real batch would), which the consumer must then split record by record."""

    def __init__(self, poison: bytes) -> None:
        self.calls: list[list[bytes]] = []
        self.poison = poison

    async def __call__(self, records: list[ConsumedRecord]) -> None:
        values = [r.value for r in records]
        if self.poison in values:
            raise ValidationError("a poison record in the batch")
        self.calls.append(values)


async def test_backlog_with_batch_handler_then_handled_in_batches_and_poison_alone_dead_lettered(
    kafka_bootstrap: str, make_topic: TopicFactory, dlq_producer: KafkaProducer
) -> None:
    # Arrange: a backlog already waiting in one partition, one poison record inside it.
    topic, dlq_topic = await make_topic("approved"), await make_topic("dlq")
    group = f"sw-test-{uuid.uuid4().hex[:8]}"
    dead_letters = KafkaDeadLetterPublisher(dlq_producer, topic=dlq_topic)
    values = [f"m{i:02d}".encode() for i in range(40)]
    poison = values[17]
    await produce(kafka_bootstrap, topic, *values)
    single = Recorder()
    single.fail_with[poison] = ValidationError("not a strategy")
    batches = BatchRecorder(poison)
    consumer = KafkaRecordConsumer(
        kafka_config(kafka_bootstrap),
        topics=[topic],
        handler=single,
        batch_handler=batches,
        max_batch=16,
        dead_letters=dead_letters,
        group_id=group,
        retry_backoff=Backoff(base_s=0.05, max_s=0.2),
    )

    # Act
    await consumer.start()
    for _ in range(600):  # up to 30 s
        if sum(len(c) for c in batches.calls) + len(single.seen) >= len(values) - 1:
            break
        await asyncio.sleep(0.05)
    await consumer.stop()

    # Assert: every good record handled exactly once, in order, mostly in batches.
    handled = [v for call in batches.calls for v in call] + single.seen
    assert sorted(handled) == sorted(v for v in values if v != poison)
    assert len(handled) == len(set(handled))
    assert max(len(call) for call in batches.calls) > 1
    assert all(len(call) <= 16 for call in batches.calls)
    (dead,) = await read_all(kafka_bootstrap, dlq_topic, 1)
    assert base64.b64decode(json.loads(dead.value)["payload_base64"]) == poison
    # Committed: a restarted member of the group gets nothing again.
    again = Recorder()
    restarted = make_consumer(kafka_bootstrap, [topic], group, again, dead_letters)
    await restarted.start()
    await asyncio.sleep(2.0)
    await restarted.stop()
    assert again.seen == []
