"""The outbox relay: committed events out to their publisher, in commit order.

An event exists once its transaction committed it to the outbox (`ExecutionWrite.events`);
the relay claims unpublished events oldest first (only one relay in the fleet gets rows at
a time, so a key's events leave in order), publishes them, waits for every ack, then marks
them published. A crash between the ack and the mark republishes them: delivery is at
least once, and consumers drop repeats by the `event-id` header. A record the publisher
refuses for good is found by sending one at a time, marked, logged and counted, so it never
blocks the ones behind it. Published events are pruned after `retention`. A graceful
shutdown asks the relay to `finish`: the batch in flight is published and marked, never cut
between the ack and the mark (which would publish it twice).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta

from strategy_worker.adapters.retry import Backoff
from strategy_worker.errors import StrategyWorkerError
from strategy_worker.log import get_logger
from strategy_worker.metrics import WorkerMetrics
from strategy_worker.ports import EventPublisher
from strategy_worker.store import OutboxLeadershipLostError, OutboxRow, Store

_log = get_logger(__name__)

BATCH = 500
_IDLE_MIN_S = 0.05
_IDLE_MAX_S = 1.0
"""Polls while the outbox is empty start at 50 ms and double up to 1 s; a commit of this
worker nudges the relay at once, so only another worker's events (published by the
leader) wait up to a poll."""


class OutboxRelay:
    """Publishes the outbox (see the module docstring)."""

    def __init__(
        self,
        *,
        store: Store,
        publisher: EventPublisher,
        metrics: WorkerMetrics,
        now: Callable[[], datetime],
        retention: timedelta = timedelta(hours=24),
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._metrics = metrics
        self._now = now
        self._retention = retention
        self._wake = asyncio.Event()
        self._finishing = asyncio.Event()
        self._backoff = Backoff(base_s=0.1, max_s=10.0)
        self.dropped = 0

    def nudge(self) -> None:
        """Something was committed: look at the outbox now instead of after the idle wait."""
        self._wake.set()

    def finish(self) -> None:
        """Return from `run` after the batch in flight (a graceful shutdown)."""
        self._finishing.set()
        self._wake.set()

    async def _pause(self, seconds: float) -> None:
        """A backoff that `finish` cuts short (nudges do not: the backoff holds)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._finishing.wait()

    async def run(self) -> None:
        """Until cancelled or finished."""
        failures = 0
        idle = _IDLE_MIN_S
        while not self._finishing.is_set():
            try:
                published = await self.relay_once()
            except OutboxLeadershipLostError:
                # Another relay leads now (or will): ours claims again, and gets rows only
                # if it becomes the leader. What we sent is republished: drop by event-id.
                _log.warning("outbox leadership lost; claiming again")
                await self._pause(_IDLE_MAX_S)
                continue
            except StrategyWorkerError as exc:
                if not exc.retryable:
                    raise
                failures += 1
                self._metrics.event_publish_failures.inc()
                if failures == 1 or failures % 20 == 0:
                    _log.warning(
                        "events not published yet; retrying (executions carry on)",
                        attempt=failures,
                        error=str(exc)[:200],
                    )
                await self._pause(self._backoff.delay(failures))
                continue
            failures = 0
            if published:
                idle = _IDLE_MIN_S
                continue
            self._wake.clear()
            try:
                # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that
                # arrives as the nudge lands, and the relay would outlive its shutdown.
                async with asyncio.timeout(idle):
                    await self._wake.wait()
            except TimeoutError:
                idle = min(_IDLE_MAX_S, idle * 2)
            else:
                idle = _IDLE_MIN_S

    async def relay_once(self) -> int:
        """Publish one claimed batch; returns how many events left."""
        rows = await self._store.claim_outbox(limit=BATCH)
        if not rows:
            self._metrics.outbox_lag_seconds.set(0)
            return 0
        lag = (self._now() - rows[0].created_at).total_seconds()
        self._metrics.outbox_lag_seconds.set(max(0.0, lag))
        try:
            await self._publisher.publish([r.event for r in rows])
        except StrategyWorkerError as exc:
            if exc.retryable:
                raise
            rows = await self._one_by_one(rows)
        await self._store.mark_published([r.seq for r in rows])
        self._metrics.outbox_published.inc(len(rows))
        return len(rows)

    async def _one_by_one(self, rows: list[OutboxRow]) -> list[OutboxRow]:
        """Find the record(s) no retry fixes; the others are published as usual."""
        for row in rows:
            try:
                await self._publisher.publish([row.event])
            except StrategyWorkerError as exc:
                if exc.retryable:
                    raise
                self.dropped += 1
                self._metrics.events_dropped.inc()
                _log.error(
                    "event refused for good; not published",
                    event_type=row.event.event_type,
                    event_id=str(row.event.event_id),
                    error=str(exc)[:200],
                )
        return rows

    async def prune(self) -> int:
        """Delete events published longer ago than the retention (bounded batches)."""
        total = 0
        before = self._now() - self._retention
        while True:
            n = await self._store.prune_outbox(published_before=before, limit=5000)
            total += n
            if n < 5000:
                return total
            await asyncio.sleep(0)
