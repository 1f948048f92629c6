"""Kafka in: hand each record to an async handler, commit its offset only after it returned.

Invariant "commit last": a partition's committed offset never passes a record whose handler
has not finished. Records of one partition are handled in order by that partition's lane
(one at a time, or, with a `batch_handler`, all that are waiting, up to `max_batch`, in one
call); lanes of different partitions run concurrently. Finished offsets are
committed in batches (every `commit_interval`, on revoke and on stop).

What a handler outcome means:
- returns              -> done; the offset may be committed.
- raises retryable     -> (StrategyWorkerError.retryable, ConnectionError, TimeoutError) the
                          same record is retried with capped backoff; the partition waits.
                          A stop abandons it uncommitted, so it is redelivered after restart.
- raises anything else -> the record goes to the dead-letter sink with the reason, is done,
                          and consumption continues with the next record.
Oversized and empty (tombstone) records are dead-lettered without calling the handler.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from strategy_worker.adapters.kafka.security import client_kwargs
from strategy_worker.adapters.retry import Backoff
from strategy_worker.config import KafkaConfig
from strategy_worker.errors import StrategyWorkerError
from strategy_worker.log import get_logger
from strategy_worker.messages import RejectCode, SourceRef
from strategy_worker.metrics import WorkerMetrics
from strategy_worker.ports import DeadLetterSink

_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    """One Kafka record as handlers see it (value never None: tombstones are dead-lettered)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def source(self) -> SourceRef:
        """Where it came from; `str(record.source)` is the DeadLetterSink `source`."""
        return SourceRef(self.topic, self.partition, self.offset)


RecordHandler = Callable[[ConsumedRecord], Awaitable[None]]
BatchHandler = Callable[[list[ConsumedRecord]], Awaitable[None]]


def is_retryable(exc: BaseException) -> bool:
    """Errors that may succeed if the same record is handled again later."""
    if isinstance(exc, StrategyWorkerError):
        return exc.retryable
    return isinstance(exc, ConnectionError | TimeoutError)


@dataclass(eq=False)
class _Lane:
    """The sequential worker of one partition."""

    tp: TopicPartition
    queue: deque[ConsumerRecord[bytes, bytes]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False
    paused: bool = False
    done_offset: int | None = None  # next offset to commit (last finished + 1)
    committed_offset: int | None = None
    task: asyncio.Task[None] | None = None


class KafkaRecordConsumer:
    """Consumer group member that commits only what its handler finished."""

    def __init__(
        self,
        config: KafkaConfig,
        *,
        topics: Sequence[str],
        handler: RecordHandler,
        dead_letters: DeadLetterSink,
        metrics: WorkerMetrics | None = None,
        group_id: str | None = None,
        client_id: str | None = None,
        retry_backoff: Backoff | None = None,
        max_backlog: int = 500,
        batch_handler: BatchHandler | None = None,
        max_batch: int = 200,
    ) -> None:
        self._config = config
        self._topics = tuple(topics)
        self._handler = handler
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._group_id = group_id or config.consumer_group
        self._client_id = client_id or f"{config.client_id}-consumer"
        self._backoff = retry_backoff or Backoff(base_s=0.2, max_s=30.0)
        self._max_backlog = max_backlog
        self._batch_handler = batch_handler
        self._max_batch = max(1, max_batch)
        self._consumer: AIOKafkaConsumer[bytes, bytes] | None = None
        self._lanes: dict[TopicPartition, _Lane] = {}
        self._fetch_task: asyncio.Task[None] | None = None
        self._commit_lock = asyncio.Lock()
        self._last_commit = 0.0
        self._consuming = False
        self._stop_lock = asyncio.Lock()
        self._stopped = False
        self._assigned = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Join the group and start fetching in a background task."""
        if self._consumer is not None:
            return
        consumer: AIOKafkaConsumer[bytes, bytes] = AIOKafkaConsumer(
            group_id=self._group_id,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset=self._config.auto_offset_reset,
            max_poll_records=self._config.max_poll_records,
            session_timeout_ms=self._config.session_timeout_ms,
            heartbeat_interval_ms=max(100, self._config.session_timeout_ms // 3),
            isolation_level="read_committed",
            **client_kwargs(self._config),
        )
        consumer.subscribe(list(self._topics), listener=_Listener(self))
        await consumer.start()
        self._consumer = consumer
        self._consuming = True
        self._fetch_task = asyncio.create_task(self._fetch_loop(), name="kafka-fetch")

    async def __aenter__(self) -> KafkaRecordConsumer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def wait_assigned(self) -> None:
        """Wait until the group gave this member its partitions (tests and readiness)."""
        await self._assigned.wait()

    async def stop_consuming(self) -> None:
        """Stop fetching; let each partition's in-flight handler finish; commit what finished.

        Records fetched but not started are dropped uncommitted (redelivered later).
        """
        if not self._consuming:
            return
        self._consuming = False
        if self._fetch_task is not None:
            self._fetch_task.cancel()
            await asyncio.gather(self._fetch_task, return_exceptions=True)
        await self._close_lanes(list(self._lanes.values()))
        await self._commit(force=True)

    async def stop(self) -> None:
        """Idempotent: stop consuming, commit finished offsets, leave the group, close."""
        async with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            await self.stop_consuming()
            if self._consumer is not None:
                await self._consumer.stop()

    async def wait(self) -> None:
        """Wait for the fetch loop to end; re-raises the error that ended it, if any."""
        if self._fetch_task is not None:
            try:
                await asyncio.shield(self._fetch_task)
            except asyncio.CancelledError:
                if not self._fetch_task.cancelled():
                    raise

    async def ping(self) -> bool:
        """True when the fetch loop runs and the cluster's metadata can be refreshed.

        Bounded by the client's request timeout; readiness wraps it in a shorter one."""
        consumer = self._consumer
        if consumer is None or self._fetch_task is None or self._fetch_task.done():
            return False
        try:
            return bool(await consumer._client.force_metadata_update())
        except (TimeoutError, KafkaError, OSError):
            return False

    # ------------------------------------------------------------------ fetching

    async def _fetch_loop(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        while self._consuming:
            batch = await consumer.getmany(
                timeout_ms=200, max_records=self._config.max_poll_records
            )
            for tp, records in batch.items():
                lane = self._lanes.get(tp)
                if lane is None or lane.closing:
                    lane = self._lanes[tp] = _Lane(tp)
                    lane.task = asyncio.create_task(self._run_lane(lane), name=f"kafka-{tp}")
                lane.queue.extend(records)
                lane.wake.set()
                if len(lane.queue) >= self._max_backlog and not lane.paused:
                    consumer.pause(tp)  # backpressure: no more fetching for a busy partition
                    lane.paused = True
            for lane in self._lanes.values():
                if lane.paused and len(lane.queue) < self._max_backlog // 2:
                    consumer.resume(lane.tp)
                    lane.paused = False
            await self._commit(force=False)

    async def _run_lane(self, lane: _Lane) -> None:
        while not lane.closing:
            if not lane.queue:
                lane.wake.clear()
                await lane.wake.wait()
                continue
            if self._batch_handler is not None and len(lane.queue) > 1:
                raws = list(itertools.islice(lane.queue, self._max_batch))
                finished = await self._process_batch(lane, raws)
            else:
                raws = [lane.queue[0]]
                finished = await self._process(lane, raws[0])
            if not finished:
                return  # abandoned on stop: not done, not committed
            lane.done_offset = raws[-1].offset + 1
            for raw in raws:
                if lane.queue and lane.queue[0] is raw:
                    lane.queue.popleft()

    async def _close_lanes(self, lanes: Iterable[_Lane]) -> None:
        tasks = []
        for lane in lanes:
            lane.closing = True
            lane.queue.clear()
            lane.wake.set()
            if lane.task is not None:
                tasks.append(lane.task)
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ handling

    async def _process(self, lane: _Lane, raw: ConsumerRecord[bytes, bytes]) -> bool:
        """Handle one record to a final outcome; False when abandoned by a stop."""
        record = await self._screen(lane, raw)
        if isinstance(record, bool):
            return record
        return await self._handle_one(lane, record)

    async def _process_batch(self, lane: _Lane, raws: list[ConsumerRecord[bytes, bytes]]) -> bool:
        """Hand consecutive records of one partition to the batch handler together. A
        non-retryable failure falls back to one record at a time, so only the record that
        causes it is dead-lettered."""
        assert self._batch_handler is not None
        batch_handler = self._batch_handler
        records: list[ConsumedRecord] = []
        for raw in raws:
            screened = await self._screen(lane, raw)
            if screened is False:
                return False
            if isinstance(screened, ConsumedRecord):
                records.append(screened)
        if not records:
            return True
        source = f"{records[0].source}..{records[-1].offset}"
        outcome = await self._retrying(lane, source, lambda: batch_handler(records))
        if isinstance(outcome, bool):
            return outcome
        _log.warning(
            "batch handler failed; handling its records one by one",
            source=source,
            error=f"{type(outcome).__name__}: {outcome}",
        )
        for record in records:
            if not await self._handle_one(lane, record):
                return False
        return True

    async def _screen(
        self, lane: _Lane, raw: ConsumerRecord[bytes, bytes]
    ) -> ConsumedRecord | bool:
        """The record for a handler; or, for a tombstone or an oversized record, the outcome
        of dead-lettering it (True done, False abandoned by a stop)."""
        source = str(SourceRef(raw.topic, raw.partition, raw.offset))
        if raw.value is None:
            return await self._dead_letter(lane, b"", RejectCode.EMPTY_PAYLOAD, "tombstone", source)
        if len(raw.value) > self._config.max_message_bytes:
            reason = f"{len(raw.value)} bytes > limit {self._config.max_message_bytes}"
            return await self._dead_letter(lane, raw.value, RejectCode.OVERSIZED, reason, source)
        if self._metrics is not None:
            self._metrics.messages_consumed.labels(topic=raw.topic).inc()
        return ConsumedRecord(
            topic=raw.topic,
            partition=raw.partition,
            offset=raw.offset,
            key=raw.key,
            value=raw.value,
            timestamp_ms=raw.timestamp,
            headers=tuple(raw.headers),
        )

    async def _handle_one(self, lane: _Lane, record: ConsumedRecord) -> bool:
        source = str(record.source)
        outcome = await self._retrying(lane, source, lambda: self._handler(record))
        if isinstance(outcome, bool):
            return outcome
        _log.error("handler failed; dead-lettering", source=source, exc_info=outcome)
        reason = f"{type(outcome).__name__}: {outcome}"[:500]
        return await self._dead_letter(lane, record.value, RejectCode.HANDLER_ERROR, reason, source)

    async def _retrying(
        self, lane: _Lane, source: str, call: Callable[[], Awaitable[None]]
    ) -> bool | Exception:
        """Run `call` until it returns (True), retrying retryable errors with capped backoff;
        False when a stop abandoned it; the exception when it is not retryable."""
        attempt = 0
        while True:
            try:
                await call()
                return True
            except Exception as exc:
                if not is_retryable(exc):
                    return exc
                attempt += 1
                delay = self._backoff.delay(attempt)
                _log.warning(
                    "handler failed (retryable); retrying",
                    source=source,
                    attempt=attempt,
                    delay_s=round(delay, 3),
                    error=f"{type(exc).__name__}: {exc}",
                )
                if not await self._sleep_unless_closing(lane, delay):
                    return False

    async def _dead_letter(
        self, lane: _Lane, payload: bytes, code: RejectCode, reason: str, source: str
    ) -> bool:
        attempt = 0
        while True:
            try:
                await self._dead_letters.dead_letter(
                    payload, code=str(code), reason=reason, source=source
                )
                return True
            except Exception as exc:
                # Never commit past a record that is neither handled nor dead-lettered.
                attempt += 1
                delay = self._backoff.delay(attempt)
                _log.warning(
                    "dead-letter write failed; retrying",
                    source=source,
                    attempt=attempt,
                    error=f"{type(exc).__name__}: {exc}",
                )
                if not await self._sleep_unless_closing(lane, delay):
                    return False

    @staticmethod
    async def _sleep_unless_closing(lane: _Lane, delay: float) -> bool:
        """Sleep `delay`; False as soon as the lane is closing."""
        deadline = time.monotonic() + delay
        while not lane.closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            lane.wake.clear()
            try:
                await asyncio.wait_for(lane.wake.wait(), remaining)
            except TimeoutError:
                return not lane.closing
        return False

    # ------------------------------------------------------------------ committing

    async def _commit(self, *, force: bool, only: Iterable[TopicPartition] | None = None) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        now = time.monotonic()
        if not force and now - self._last_commit < self._config.commit_interval:
            return
        async with self._commit_lock:
            self._last_commit = now
            assigned = consumer.assignment()
            lanes = [self._lanes[tp] for tp in only if tp in self._lanes] if only else None
            offsets = {
                lane.tp: lane.done_offset
                for lane in (lanes if lanes is not None else self._lanes.values())
                if lane.done_offset is not None
                and lane.done_offset != lane.committed_offset
                and lane.tp in assigned
            }
            if not offsets:
                return
            try:
                await consumer.commit(offsets)
            except KafkaError as exc:
                # Not fatal: uncommitted records are redelivered and handlers are idempotent.
                _log.warning("offset commit failed", error=type(exc).__name__, offsets=len(offsets))
                return
            for tp, offset in offsets.items():
                lane = self._lanes.get(tp)
                if lane is not None:
                    lane.committed_offset = offset

    async def _on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        """Before a rebalance: finish in-flight records of lost partitions, commit them."""
        self._assigned.clear()
        lanes = [self._lanes[tp] for tp in revoked if tp in self._lanes]
        await self._close_lanes(lanes)
        await self._commit(force=True, only=[lane.tp for lane in lanes])
        for lane in lanes:
            if self._lanes.get(lane.tp) is lane:
                del self._lanes[lane.tp]

    def _on_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        _log.info("partitions assigned", partitions=sorted(str(tp) for tp in assigned))
        self._assigned.set()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: KafkaRecordConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._owner._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._owner._on_assigned(assigned)
