"""A worker-like process for the kill -9 test: handles records, blocks forever on b"m2".

Usage: python crash_consumer.py BOOTSTRAP TOPIC DLQ_TOPIC GROUP PROGRESS_FILE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from strategy_worker.adapters.kafka import (
    ConsumedRecord,
    KafkaDeadLetterPublisher,
    KafkaProducer,
    KafkaRecordConsumer,
)
from strategy_worker.config import KafkaConfig


async def main(bootstrap: str, topic: str, dlq_topic: str, group: str, progress: Path) -> None:
    config = KafkaConfig(bootstrap_servers=bootstrap, commit_interval=0.1, session_timeout_ms=6000)
    producer = KafkaProducer(config)
    await producer.start()

    async def handler(record: ConsumedRecord) -> None:
        if record.value == b"m2":
            with progress.open("a") as out:
                out.write("blocked m2\n")
            await asyncio.Event().wait()  # the durable effect of m2 never happens
        with progress.open("a") as out:
            out.write(f"handled {record.value.decode()}\n")

    consumer = KafkaRecordConsumer(
        config,
        topics=[topic],
        handler=handler,
        dead_letters=KafkaDeadLetterPublisher(producer, topic=dlq_topic),
        group_id=group,
    )
    await consumer.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    bootstrap, topic, dlq_topic, group, progress = sys.argv[1:6]
    asyncio.run(main(bootstrap, topic, dlq_topic, group, Path(progress)))
