"""Where the live stream's events come from: Kafka `strategy.execution`, or the outbox.

Both implement `EventFollower`: `start()` returns the position they start from, `events()`
yields every event after it in order, each with its position. A position is a
(partition, offset) pair; the outbox has one partition (0) whose offsets are the relay's
gap-free `published_seq`. The hub (`stream.py`) turns positions into clients' cursors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from strategy_worker.adapters.kafka.security import client_kwargs
from strategy_worker.config import KafkaConfig
from strategy_worker.log import get_logger

_log = get_logger(__name__)

#: The next offset to read, per partition.
Position = dict[int, int]


@dataclass(frozen=True, slots=True)
class FollowedEvent:
    """One execution event as published, with where it sits in the source's order."""

    partition: int
    offset: int
    #: The event's JSON text exactly as published (exact numbers).
    raw: str
    user_id: uuid.UUID | None
    execution_id: uuid.UUID | None
    event_type: str
    #: The producer's `event-id` (Kafka header; the outbox's event_id): repeats are dropped.
    event_id: str | None = None


class EventFollower(Protocol):
    """A source of execution events, read from its current end onwards."""

    name: str

    async def start(self) -> Position:
        """Connect and return the position the events will start from."""
        ...

    def events(self) -> AsyncIterator[FollowedEvent]:
        """Every event after the start position, in order, until `close()`."""
        ...

    async def close(self) -> None: ...


def _ids(payload: dict[str, Any]) -> tuple[uuid.UUID | None, uuid.UUID | None]:
    def as_uuid(value: object) -> uuid.UUID | None:
        try:
            return uuid.UUID(str(value)) if value is not None else None
        except ValueError:
            return None

    return as_uuid(payload.get("user_id")), as_uuid(payload.get("execution_id"))


class KafkaFollower:
    """Reads every partition of the execution topic without a consumer group (each API
    instance sees everything), from the end at start-up."""

    name = "kafka"

    def __init__(self, config: KafkaConfig, *, topic: str | None = None) -> None:
        self._config = config
        self._topic = topic or config.topics.execution
        self._consumer: Any = None

    async def start(self) -> Position:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            client_id=f"{self._config.client_id}-api",
            fetch_max_wait_ms=50,
            **client_kwargs(self._config),
        )
        await consumer.start()
        self._consumer = consumer
        for _ in range(100):
            # A consumer without subscription keeps no metadata of its own topics: ask for
            # the cluster's (aiokafka has no public call for the partitions of any topic).
            metadata = await consumer._client.fetch_all_metadata()
            partitions = metadata.partitions_for_topic(self._topic)
            if partitions:
                break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"topic {self._topic} has no partitions")
        assigned = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_end(*assigned)
        return {tp.partition: await consumer.position(tp) for tp in assigned}

    async def events(self) -> AsyncIterator[FollowedEvent]:
        consumer = self._consumer
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            for tp in sorted(batches, key=lambda t: t.partition):
                for record in batches[tp]:
                    event = self._decode(record)
                    if event is not None:
                        yield event

    def _decode(self, record: Any) -> FollowedEvent | None:
        try:
            text = bytes(record.value).decode("utf-8")
            payload = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError, TypeError):
            _log.warning("undecodable execution event skipped", offset=record.offset)
            return None
        if not isinstance(payload, dict):
            return None
        user_id, execution_id = _ids(payload)
        headers = dict(record.headers or ())
        event_id = headers.get("event-id")
        return FollowedEvent(
            partition=record.partition,
            offset=record.offset,
            raw=text,
            user_id=user_id,
            execution_id=execution_id,
            event_type=str(payload.get("type", "")),
            event_id=event_id.decode() if isinstance(event_id, bytes) else None,
        )

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()


_OUTBOX_HEAD = "SELECT coalesce(max(published_seq), 0) FROM event_outbox"
_OUTBOX_AFTER = """
SELECT published_seq, event_id, user_id, execution_id, event_type, payload::text AS raw
FROM event_outbox
WHERE published_seq >= $1
ORDER BY published_seq
LIMIT $2
"""


class OutboxFollower:
    """Follows the transactional outbox (`event_outbox`, migration 002) by `published_seq`:
    the relay assigns it gap-free in publication order, so `published_seq > cursor ORDER BY
    published_seq` misses nothing and repeats nothing. Until migration 002 creates the
    table, it polls for it (and then reads it from its first row)."""

    name = "outbox"

    def __init__(self, pool: asyncpg.Pool, *, poll_interval: float = 0.1, batch: int = 500):
        self._pool = pool
        self._poll = poll_interval
        self._batch = batch
        self._next = 1
        self._closed = asyncio.Event()

    async def start(self) -> Position:
        try:
            head = await self._pool.fetchval(_OUTBOX_HEAD)
        except asyncpg.UndefinedTableError:
            # Created empty by its migration: every row it will ever hold comes after now.
            _log.warning("event_outbox does not exist yet; following it once it does")
            head = 0
        self._next = int(head) + 1
        return {0: self._next}

    async def events(self) -> AsyncIterator[FollowedEvent]:
        while not self._closed.is_set():
            try:
                rows = await self._pool.fetch(_OUTBOX_AFTER, self._next, self._batch)
            except asyncpg.UndefinedTableError:
                rows = []
            for row in rows:
                seq = int(row["published_seq"])
                if seq != self._next:
                    # A gap means the relay's promise broke; say so, never skip silently.
                    _log.error("event_outbox published_seq gap", expected=self._next, got=seq)
                self._next = seq + 1
                yield FollowedEvent(
                    partition=0,
                    offset=seq,
                    raw=row["raw"],
                    user_id=row["user_id"],
                    execution_id=row["execution_id"],
                    event_type=row["event_type"],
                    event_id=str(row["event_id"]),
                )
            if len(rows) < self._batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), self._poll)

    async def close(self) -> None:
        self._closed.set()
