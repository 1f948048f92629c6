"""kill -9 mid-handler: the committed offset stops right before the unfinished record."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from strategy_worker.adapters.kafka import (
    ConsumedRecord,
    KafkaDeadLetterPublisher,
    KafkaProducer,
    KafkaRecordConsumer,
)
from strategy_worker.config import KafkaConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TopicFactory = Callable[..., Awaitable[str]]
SCRIPT = Path(__file__).with_name("crash_consumer.py")
SRC = Path(__file__).resolve().parents[3] / "src"


async def eventually(condition: Callable[[], Awaitable[bool]], within_s: float) -> None:
    """Poll `condition` every 100 ms until it holds; fail after `within_s`."""
    deadline = time.monotonic() + within_s
    for _ in itertools.count():
        if await condition():
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def committed_offset(bootstrap: str, group: str, topic: str) -> int | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    found = offsets.get(TopicPartition(topic, 0))
    return None if found is None else found.offset


async def test_killed_worker_redelivers_exactly_from_the_unfinished_record(
    kafka_bootstrap: str, make_topic: TopicFactory, tmp_path: Path
) -> None:
    # Arrange
    topic, dlq_topic = await make_topic("approved"), await make_topic("dlq")
    group = f"sw-crash-{uuid.uuid4().hex[:8]}"
    progress = tmp_path / "progress.txt"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    for value in (b"m1", b"m2", b"m3"):
        await producer.send_and_wait(topic, value)
    await producer.stop()
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        kafka_bootstrap,
        topic,
        dlq_topic,
        group,
        str(progress),
        env=env,
    )

    # Act: wait until m1 is handled and committed and m2 is in flight, then kill -9.
    async def m2_in_flight() -> bool:
        return progress.exists() and "blocked m2" in progress.read_text()

    async def m1_committed() -> bool:
        return await committed_offset(kafka_bootstrap, group, topic) == 1

    try:
        await eventually(m2_in_flight, within_s=60)
        await eventually(m1_committed, within_s=30)
    finally:
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
    committed_at_kill = await committed_offset(kafka_bootstrap, group, topic)

    seen: list[bytes] = []
    done = asyncio.Event()

    async def handler(record: ConsumedRecord) -> None:
        seen.append(record.value)
        if len(seen) == 2:
            done.set()

    config = KafkaConfig(
        bootstrap_servers=kafka_bootstrap, commit_interval=0.1, session_timeout_ms=6000
    )
    dlq = KafkaProducer(config)
    await dlq.start()
    restarted = KafkaRecordConsumer(
        config,
        topics=[topic],
        handler=handler,
        dead_letters=KafkaDeadLetterPublisher(dlq, topic=dlq_topic),
        group_id=group,
    )
    await restarted.start()
    try:
        async with asyncio.timeout(60):  # the dead member's session must expire first
            await done.wait()
    finally:
        await restarted.stop()
        await dlq.stop()

    # Assert: m1 was committed before the crash; m2 (unfinished) and m3 come again.
    assert progress.read_text().splitlines() == ["handled m1", "blocked m2"]
    assert committed_at_kill == 1
    assert seen == [b"m2", b"m3"]
