"""`KafkaBarFeed`: the `BarFeed` port on the bar topic (`kafka.topics.bars`).

**No consumer group.** Strategies are spread over workers by the approved topic's group,
but every worker needs every bar of the symbols its executions trade, so each feed assigns
itself *all* partitions of the bar topic and keeps no committed offsets. Where it starts:

- by default at the end of each partition: the history an execution needs comes from
  PostgreSQL (`market_bars`, loaded for warm-up), not from the topic;
- with `start_from` (a time), at the first record at or after it (`offsets_for_times`),
  e.g. the start of the last stored bar, so bars published while the worker was down are
  not missed; redelivered bars are duplicates for the `BarGate` and cost nothing.

Partitions added to the topic while the feed runs are picked up on the next start.

**Malformed messages are counted and logged, not dead-lettered**: with N workers each bad
message would be dead-lettered N times, and the topic belongs to the market-data side,
which is where the fix is. Each one is yielded in `BarBatch.rejected` (source
`topic/partition/offset` and the `Rejection`), counted in
`strategy_bars_ignored_total{reason=<code>}` and logged as a warning (the first 20 per code,
then every 1000th), and never stops the feed. A broker outage is ridden out: aiokafka
reconnects, and fetch errors are logged and retried with capped backoff.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from strategy_worker.adapters.kafka.security import client_kwargs
from strategy_worker.adapters.retry import Backoff
from strategy_worker.config import KafkaConfig
from strategy_worker.domain.rejection import Rejection
from strategy_worker.domain.signals.bars import Bar
from strategy_worker.errors import ConfigError
from strategy_worker.log import get_logger
from strategy_worker.messages.bars import MAX_BAR_BYTES, parse_bar_message
from strategy_worker.metrics import WorkerMetrics
from strategy_worker.ports import BarBatch, RejectedBar

_log = get_logger(__name__)
_LOG_FIRST, _LOG_EVERY = 20, 1000


class KafkaBarFeed:
    """Reads every partition of the bar topic; yields parsed batches (implements `BarFeed`)."""

    def __init__(
        self,
        config: KafkaConfig,
        *,
        topic: str | None = None,
        start_from: datetime | None = None,
        metrics: WorkerMetrics | None = None,
        max_records: int = 500,
        poll_timeout_ms: int = 500,
        backoff: Backoff | None = None,
    ) -> None:
        chosen = topic if topic is not None else config.topics.bars
        if chosen is None:
            raise ConfigError("kafka.topics.bars is null: bars come from price announcements")
        self.topic = chosen
        self._config = config
        self._start_from = start_from
        self._metrics = metrics
        self._max_records = max_records
        self._poll_ms = poll_timeout_ms
        self._backoff = backoff or Backoff(base_s=0.2, max_s=10.0)
        self._consumer: AIOKafkaConsumer[bytes, bytes] | None = None
        self._stopping = asyncio.Event()
        self._rejected: Counter[str] = Counter()

    @property
    def partitions(self) -> tuple[int, ...]:
        consumer = self._consumer
        return tuple(sorted(tp.partition for tp in consumer.assignment())) if consumer else ()

    async def start(self) -> None:
        """Connect, assign every partition of the topic and seek to the start position."""
        if self._consumer is not None:
            return
        consumer: AIOKafkaConsumer[bytes, bytes] = AIOKafkaConsumer(
            group_id=None,
            client_id=f"{self._config.client_id}-bars",
            enable_auto_commit=False,
            auto_offset_reset="latest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=max(1_048_576, self._config.max_message_bytes),
            **client_kwargs(self._config),
        )
        await consumer.start()
        try:
            # A fresh metadata snapshot (the consumer's cache only knows assigned topics).
            cluster = await consumer._client.fetch_all_metadata()
            numbers = cluster.partitions_for_topic(self.topic)
            if not numbers:
                raise ConfigError(f"bar topic {self.topic!r} does not exist (kafka.topics.bars)")
            tps = [TopicPartition(self.topic, n) for n in sorted(numbers)]
            consumer.assign(tps)
            await self._seek(consumer, tps)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        _log.info("bar_feed_started", topic=self.topic, partitions=len(tps))

    async def _seek(
        self, consumer: AIOKafkaConsumer[bytes, bytes], tps: list[TopicPartition]
    ) -> None:
        if self._start_from is None:
            await consumer.seek_to_end(*tps)
            return
        stamp = int(self._start_from.timestamp() * 1000)
        found = await consumer.offsets_for_times(dict.fromkeys(tps, stamp))
        late = [tp for tp, offset in found.items() if offset is None]
        for tp, offset in found.items():
            if offset is not None:
                consumer.seek(tp, offset.offset)
        if late:
            await consumer.seek_to_end(*late)

    async def stop(self) -> None:
        """Stop fetching and close the connection; idempotent (no offsets to commit)."""
        self._stopping.set()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def __aenter__(self) -> KafkaBarFeed:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def __aiter__(self) -> AsyncIterator[BarBatch]:
        attempt = 0
        while not self._stopping.is_set():
            consumer = self._consumer
            if consumer is None:
                return
            try:
                fetched = await consumer.getmany(
                    timeout_ms=self._poll_ms, max_records=self._max_records
                )
            except KafkaError as exc:
                attempt += 1
                delay = self._backoff.delay(attempt)
                _log.warning("bar_feed_fetch_failed", error=str(exc), retry_in_s=round(delay, 3))
                await asyncio.sleep(delay)
                continue
            attempt = 0
            batch = self._parse(fetched)
            if batch.bars or batch.rejected:
                yield batch

    def _parse(self, fetched: dict[TopicPartition, list[object]]) -> BarBatch:
        bars: list[Bar] = []
        rejected: list[RejectedBar] = []
        limit = max(MAX_BAR_BYTES, 1)
        for tp in sorted(fetched, key=lambda t: t.partition):
            for record in fetched[tp]:
                value = getattr(record, "value", None)
                offset = getattr(record, "offset", -1)
                source = f"{tp.topic}/{tp.partition}/{offset}"
                parsed: Bar | Rejection
                if value is None:
                    parsed = Rejection("empty_payload", "$", "a tombstone is not a bar")
                else:
                    parsed = parse_bar_message(value, max_bytes=limit)
                if isinstance(parsed, Rejection):
                    rejected.append(RejectedBar(source, parsed))
                    self._count_rejection(source, parsed)
                else:
                    bars.append(parsed)
        if self._metrics is not None and bars:
            self._metrics.bars_received.labels(source="kafka").inc(len(bars))
        return BarBatch(tuple(bars), tuple(rejected))

    def _count_rejection(self, source: str, rejection: Rejection) -> None:
        self._rejected[rejection.code] += 1
        seen = self._rejected[rejection.code]
        if self._metrics is not None:
            self._metrics.bars_ignored.labels(reason=rejection.code).inc()
        if seen <= _LOG_FIRST or seen % _LOG_EVERY == 0:
            _log.warning(
                "bar_message_rejected",
                source=source,
                code=rejection.code,
                field=rejection.path,
                reason=rejection.message,
                seen=seen,
            )
