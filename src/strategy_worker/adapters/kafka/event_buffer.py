"""Events out without making an execution wait for Kafka.

`BufferedEventPublisher` is the worker's `EventSink`: `publish` encodes the events at once
and queues them in order; one background task sends the queue head in batches and, while
Kafka is unreachable, retries it with capped, jittered backoff until the broker is back.
A broker restart therefore delays events instead of failing the executions that emit them
(their state is already durable in PostgreSQL when their events are queued).

What it promises: events leave in the order they were queued (so per strategy, too), each
at least once while the process lives; a retried batch may repeat records Kafka had
already taken, which the content-derived `event-id` header lets consumers drop. A record
Kafka refuses for good (e.g. too large) is dropped, logged and counted, never retried
forever. A crash loses what is still queued; the store stays the record of what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Protocol

from strategy_worker.adapters.kafka.producer import Headers, event_record
from strategy_worker.adapters.retry import Backoff
from strategy_worker.errors import StrategyWorkerError
from strategy_worker.log import get_logger
from strategy_worker.metrics import WorkerMetrics

_log = get_logger(__name__)

Record = tuple[bytes, bytes | None, Headers]
"""(value, key, headers) as the producer sends it."""


class BatchSender(Protocol):
    """What the buffer needs of the producer: send records in order, wait for every ack."""

    async def send_batch(self, topic: str, records: Sequence[Record]) -> None: ...


class BufferedEventPublisher:
    """`EventSink` on `strategy.execution` that queues in memory and publishes behind."""

    def __init__(
        self,
        sender: BatchSender,
        *,
        topic: str,
        metrics: WorkerMetrics | None = None,
        backoff: Backoff | None = None,
        max_pending: int = 100_000,
        max_batch: int = 500,
    ) -> None:
        if max_pending < 1 or max_batch < 1:
            raise ValueError("max_pending and max_batch must be at least 1")
        self._sender = sender
        self._topic = topic
        self._metrics = metrics
        self._backoff = backoff or Backoff(base_s=0.1, max_s=5.0)
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._queue: deque[Record] = deque()
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.failures = 0
        """Publish attempts that failed and were retried, since start."""
        self.dropped = 0
        """Records Kafka refused for good, since start."""

    @property
    def pending(self) -> int:
        """Events queued and not yet acknowledged by Kafka."""
        return len(self._queue)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="kafka-events-out")

    async def publish(self, key: str, event: Mapping[str, object]) -> None:
        await self.publish_batch(key, [event])

    async def publish_batch(self, key: str, events: Sequence[Mapping[str, object]]) -> None:
        """Queue events in order; returns at once unless the queue is full (backpressure
        while Kafka has been away for long), never because Kafka is slow."""
        if self._closed:
            raise StrategyWorkerError("event publisher is closed")
        encoded = key.encode()
        records = [(value, encoded, headers) for value, headers in map(event_record, events)]
        while len(self._queue) >= self._max_pending:
            self._changed.clear()
            await self._changed.wait()
        self._queue.extend(records)
        self._set_pending()
        self._wake.set()

    async def drain(self, within_s: float) -> bool:
        """Wait until every queued event is acknowledged; False when `within_s` ran out."""
        deadline = time.monotonic() + within_s
        while self._queue:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._changed.wait()
        return True

    async def close(self, within_s: float = 10.0) -> None:
        """Publish what is queued (for at most `within_s` seconds), then stop; idempotent."""
        if self._closed:
            return
        self._closed = True
        if not await self.drain(within_s):
            _log.error("events not published before shutdown", lost=len(self._queue))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # ------------------------------------------------------------------ the publishing task

    async def _run(self) -> None:
        failures = 0
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = list(itertools.islice(self._queue, self._max_batch))
            try:
                await self._sender.send_batch(self._topic, batch)
            except StrategyWorkerError as exc:
                if not exc.retryable:
                    # Find the record(s) no retry fixes; send the rest as usual.
                    failures = 0 if await self._send_one_by_one(batch) else failures + 1
                    if failures:
                        await asyncio.sleep(self._backoff.delay(failures))
                    continue
                failures += 1
                self._failed(exc, failures)
                await asyncio.sleep(self._backoff.delay(failures))
                continue
            failures = 0
            self._acked(len(batch))

    async def _send_one_by_one(self, batch: Sequence[Record]) -> bool:
        """Send each record alone, dropping those Kafka refuses for good; False when a
        retryable failure interrupts (the rest stays queued)."""
        for record in batch:
            try:
                await self._sender.send_batch(self._topic, [record])
            except StrategyWorkerError as exc:
                if exc.retryable:
                    self._failed(exc, 1)
                    return False
                self.dropped += 1
                if self._metrics is not None:
                    self._metrics.events_dropped.inc()
                _log.error(
                    "event refused by Kafka for good; dropped",
                    event_type=_event_type(record),
                    error=str(exc)[:200],
                )
            self._acked(1)
        return True

    def _acked(self, n: int) -> None:
        for _ in range(n):
            self._queue.popleft()
        self._set_pending()
        self._changed.set()

    def _failed(self, exc: StrategyWorkerError, failures: int) -> None:
        self.failures += 1
        if self._metrics is not None:
            self._metrics.event_publish_failures.inc()
        # One line per outage, then one per 20 retries: a long outage must not flood the log.
        if failures == 1 or failures % 20 == 0:
            _log.warning(
                "events not published; retrying (executions carry on)",
                pending=len(self._queue),
                attempt=failures,
                error=str(exc)[:200],
            )

    def _set_pending(self) -> None:
        if self._metrics is not None:
            self._metrics.events_pending.set(len(self._queue))


def _event_type(record: Record) -> str:
    for name, value in record[2]:
        if name == "event-type":
            return value.decode(errors="replace")
    return ""
