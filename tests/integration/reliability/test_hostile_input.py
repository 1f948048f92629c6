"""≥ 10,000 hypothesis-generated hostile messages: the worker never crashes, dead-letters every
one with a reason code, counts it, and creates no execution. A sample also goes through Kafka
(consumer → worker → dead-letter topic)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from strategy_worker.adapters.kafka import (
    ConsumedRecord,
    KafkaDeadLetterPublisher,
    KafkaProducer,
    KafkaRecordConsumer,
)
from strategy_worker.config import KafkaConfig
from strategy_worker.oms_sim.server import OmsSimServer

from .harness import fetch_all, open_rig, record_figures, unique
from .hostile import generate

pytestmark = pytest.mark.timeout(180)

COUNT = 10_000
KAFKA_SAMPLE_EVERY = 40


@pytest.fixture(scope="module")
def hostile() -> list[tuple[str, bytes]]:
    messages = generate(COUNT)
    assert len(messages) >= COUNT
    return messages


async def test_hostile_messages_are_all_dead_lettered_with_a_reason_and_create_nothing(
    hostile: list[tuple[str, bytes]],
    migrated_dsn: str,
    redis_url: str,
    price_prefix: str,
    oms_server: OmsSimServer,
) -> None:
    # Arrange
    rig = await open_rig(
        dsn=migrated_dsn,
        oms_port=oms_server.port,
        redis_url=redis_url,
        price_prefix=price_prefix,
        owner_id=unique("hostile"),
        start=False,
    )
    crashes: list[tuple[str, str]] = []
    unanswered: list[str] = []
    started = time.perf_counter()
    try:
        # Act
        for category, payload in hostile:
            before = len(rig.sink.dead_letters)
            try:
                await rig.worker.handle_strategy(payload, f"hostile:{category}")
            except Exception as exc:  # the point: there must be none
                crashes.append((category, repr(exc)[:200]))
            if len(rig.sink.dead_letters) != before + 1:
                unanswered.append(category)
        elapsed = time.perf_counter() - started
    finally:
        await rig.close()

    # Assert
    assert crashes == []
    assert unanswered == [], Counter(unanswered)
    letters = rig.sink.dead_letters
    assert len(letters) == len(hostile)
    assert all(letter["code"] and letter["reason"] for letter in letters)
    executions = await fetch_all(migrated_dsn, "SELECT count(*) AS n FROM strategy_executions")
    assert executions[0]["n"] == 0
    assert list(rig.worker.book) == []
    codes = Counter(str(letter["code"]) for letter in letters)
    counted = {
        code: rig.registry.get_sample_value(
            "strategy_messages_dead_lettered_total", {"reason": code}
        )
        for code in codes
    }
    assert counted == {code: float(n) for code, n in codes.items()}
    categories = Counter(category for category, _ in hostile)
    assert len(categories) == 12, categories  # every kind of hostility was generated
    record_figures(
        "hostile_input",
        {
            "messages": len(hostile),
            "dead_lettered": len(letters),
            "executions_created": executions[0]["n"],
            "crashes": len(crashes),
            "seconds": round(elapsed, 2),
            "per_category": dict(categories),
            "per_reason_code": dict(codes),
        },
    )


async def test_hostile_sample_through_kafka_lands_on_the_dead_letter_topic(
    hostile: list[tuple[str, bytes]],
    migrated_dsn: str,
    redis_url: str,
    price_prefix: str,
    oms_server: OmsSimServer,
    kafka_bootstrap: str,
    make_topic,  # type: ignore[no-untyped-def]
) -> None:
    # Arrange
    sample = hostile[::KAFKA_SAMPLE_EVERY]
    approved, dlq = await make_topic("approved"), await make_topic("dlq")
    config = KafkaConfig(bootstrap_servers=kafka_bootstrap, commit_interval=0.1)
    producer = KafkaProducer(config)
    await producer.start()
    # The production sink: the dead-letter topic.
    dead_letters = KafkaDeadLetterPublisher(producer, topic=dlq, worker_id="hostile-kafka")
    rig = await open_rig(
        dsn=migrated_dsn,
        oms_port=oms_server.port,
        redis_url=redis_url,
        price_prefix=price_prefix,
        owner_id=unique("hostile-kafka"),
        dead_letters=dead_letters,
        start=False,
    )
    handled: list[int] = []

    async def dispatch(record: ConsumedRecord) -> None:
        await rig.worker.handle_strategy(record.value, str(record.source))
        handled.append(record.offset)

    consumer = KafkaRecordConsumer(
        config,
        topics=[approved],
        handler=dispatch,
        dead_letters=dead_letters,
        group_id=f"hostile-{uuid.uuid4().hex[:8]}",
    )
    raw = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=2_000_000)
    await raw.start()
    try:
        for _, payload in sample:
            await raw.send(approved, payload)
        await raw.flush()
        await consumer.start()

        # Act
        records = await _read(kafka_bootstrap, dlq, len(sample), within_s=60)
    finally:
        await raw.stop()
        await consumer.stop()
        await producer.stop()
        await rig.close()

    # Assert
    envelopes = [json.loads(r.value) for r in records]
    assert len(envelopes) == len(sample)
    assert all(e.get("code") or e.get("reason_code") for e in envelopes)
    assert len(handled) + sum(1 for e in envelopes if _consumer_side(e)) >= len(sample)
    executions = await fetch_all(migrated_dsn, "SELECT count(*) AS n FROM strategy_executions")
    assert executions[0]["n"] == 0
    record_figures(
        "hostile_input_kafka",
        {
            "sample": len(sample),
            "dead_letter_records": len(envelopes),
            "handled_by_worker": len(handled),
        },
    )


def _consumer_side(envelope: dict[str, object]) -> bool:
    return str(envelope.get("code", envelope.get("reason_code", ""))) in {"oversized", "empty"}


async def _read(bootstrap: str, topic: str, count: int, within_s: float) -> list:  # type: ignore[type-arg]
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
