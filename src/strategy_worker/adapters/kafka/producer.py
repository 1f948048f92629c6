"""Kafka out: `strategy.execution` events and dead letters over one idempotent producer.

`KafkaProducer` owns the connection (acks=all, idempotence on, short linger); the two
publishers are thin views on it implementing the `EventPublisher` (used by the outbox
relay) and `DeadLetterSink` ports. Their `close()` only flushes: whoever started the
producer stops it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from strategy_worker.adapters.kafka.security import client_kwargs
from strategy_worker.config import KafkaConfig
from strategy_worker.errors import StrategyWorkerError, TransientError
from strategy_worker.log import get_logger
from strategy_worker.messages import dead_letter_envelope, encode_event, encode_json
from strategy_worker.metrics import WorkerMetrics
from strategy_worker.store import OutboxEvent

_log = get_logger(__name__)

Headers = Sequence[tuple[str, bytes]]

Record = tuple[bytes, bytes | None, Headers]
"""(value, key, headers) as the producer sends it."""


class KafkaProducer:
    """One idempotent producer per worker: every send waits for all in-sync replicas."""

    def __init__(self, config: KafkaConfig, *, client_id: str | None = None) -> None:
        self._config = config
        self._client_id = client_id or f"{config.client_id}-producer"
        self._producer: AIOKafkaProducer[bytes, bytes] | None = None
        self._stopped = False

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer: AIOKafkaProducer[bytes, bytes] = AIOKafkaProducer(
            client_id=self._client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=self._config.producer_linger_ms,
            max_request_size=max(1_048_576, self._config.max_message_bytes * 2),
            **client_kwargs(self._config),
        )
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        """Flush what is pending and close; idempotent."""
        if self._stopped or self._producer is None:
            self._stopped = True
            return
        self._stopped = True
        await self._producer.stop()

    async def __aenter__(self) -> KafkaProducer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None = None, headers: Headers = ()
    ) -> tuple[int, int]:
        """Send and wait for the broker's ack; returns (partition, offset).

        Raises TransientError (retryable) for a broker or network failure, and a
        non-retryable StrategyWorkerError for what no retry fixes (e.g. a record too large).
        """
        if self._producer is None or self._stopped:
            raise StrategyWorkerError("Kafka producer is not running")
        try:
            metadata = await self._producer.send_and_wait(
                topic, value, key=key, headers=list(headers)
            )
        except KafkaError as exc:
            message = f"publish to {topic} failed: {type(exc).__name__}"
            if getattr(exc, "retriable", False) or isinstance(exc, asyncio.TimeoutError):
                raise TransientError(message) from exc
            raise StrategyWorkerError(message, retryable=False) from exc
        return metadata.partition, metadata.offset

    async def send_batch(self, topic: str, records: Sequence[Record]) -> None:
        """Enqueue (value, key, headers) records in order, then wait for every ack: one
        linger window for a whole batch instead of one broker round trip per record."""
        if self._producer is None or self._stopped:
            raise StrategyWorkerError("Kafka producer is not running")
        try:
            pending = [
                await self._producer.send(topic, value, key=key, headers=list(headers))
                for value, key, headers in records
            ]
            await asyncio.gather(*pending)
        except KafkaError as exc:
            message = f"publish to {topic} failed: {type(exc).__name__}"
            if getattr(exc, "retriable", False) or isinstance(exc, asyncio.TimeoutError):
                raise TransientError(message) from exc
            raise StrategyWorkerError(message, retryable=False) from exc

    async def flush(self) -> None:
        if self._producer is not None and not self._stopped:
            await self._producer.flush()

    async def ping(self) -> bool:
        """True when cluster metadata can be refreshed now (readiness wraps a timeout)."""
        if self._producer is None or self._stopped:
            return False
        try:
            updated = await self._producer.client.force_metadata_update()
        except (TimeoutError, KafkaError, OSError):
            return False
        return bool(updated)


def event_record(event: OutboxEvent) -> Record:
    """An outbox event as a Kafka record: the payload as exact JSON (Decimals as numbers; the
    committed text itself when the store handed it back), keyed by the strategy id, with
    the `event-id` (consumers drop the repeats of an at-least-once relay by it) and
    `event-type` headers."""
    headers = [
        ("event-id", str(event.event_id).encode()),
        ("event-type", event.event_type.encode()),
    ]
    value = event.encoded.encode() if event.encoded is not None else encode_event(event.payload)
    return value, event.key.encode(), headers


class KafkaEventPublisher:
    """`EventPublisher` on `strategy.execution`, for the outbox relay: a batch is sent in
    order on the idempotent producer (acks=all: no loss, no reordering, no duplicate from
    the producer's own retries) and `publish` returns once every record is acknowledged."""

    def __init__(self, producer: KafkaProducer, *, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        """Send in order and wait for every ack. TransientError (retryable) when the broker
        or the network failed: send the same batch again; a non-retryable
        StrategyWorkerError when a record is refused for good (too large, not JSON)."""
        if not events:
            return
        try:
            records = [event_record(event) for event in events]
        except (TypeError, ValueError) as exc:
            raise StrategyWorkerError(
                f"an event cannot be encoded as JSON: {exc}", retryable=False
            ) from exc
        await self._producer.send_batch(self._topic, records)

    async def close(self) -> None:
        """Flush; whoever started the producer stops it."""
        await self._producer.flush()


class KafkaDeadLetterPublisher:
    """`DeadLetterSink` on the dead-letter topic: a JSON envelope with the reason and the
    original bytes (base64); reason code and source also travel as headers for filtering."""

    def __init__(
        self,
        producer: KafkaProducer,
        *,
        topic: str,
        metrics: WorkerMetrics | None = None,
        worker_id: str | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._metrics = metrics
        self._worker_id = worker_id
        self._now = now or (lambda: datetime.now(UTC))

    async def dead_letter(self, payload: bytes, *, code: str, reason: str, source: str) -> None:
        envelope: dict[str, Any] = dead_letter_envelope(
            payload,
            code=code,
            reason=reason,
            source=source,
            at=self._now(),
            worker_id=self._worker_id,
        )
        headers = [
            ("dlq-reason-code", code.encode()),
            ("dlq-source", source.encode()),
        ]
        value = encode_json(envelope).encode()
        await self._producer.send(self._topic, value, key=source.encode(), headers=headers)
        if self._metrics is not None:
            self._metrics.record_dead_letter(code)
        _log.warning("message dead-lettered", reason_code=code, reason=reason, source=source)

    async def close(self) -> None:
        await self._producer.flush()
