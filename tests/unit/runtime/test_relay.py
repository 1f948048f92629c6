"""The outbox relay's own loop: it stops when cancelled, whatever woke it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from strategy_worker.metrics import WorkerMetrics
from strategy_worker.runtime.relay import OutboxRelay
from strategy_worker.testing.memory_store import MemoryDatabase
from strategy_worker.testing.ports import MemoryPublisher


async def test_relay_cancelled_in_the_tick_a_commit_nudged_it_stops() -> None:
    # Arrange: a relay idle on an empty outbox, waiting to be nudged.
    database = MemoryDatabase(now=lambda: datetime(2024, 1, 2, 14, 30, tzinfo=UTC))
    relay = OutboxRelay(
        store=database.handle(),
        publisher=MemoryPublisher(),
        metrics=WorkerMetrics(CollectorRegistry()),
        sleep=asyncio.sleep,
        now=lambda: datetime(2024, 1, 2, 14, 30, tzinfo=UTC),
    )
    task = asyncio.create_task(relay.run())
    for _ in range(5):
        await asyncio.sleep(0)  # let it claim nothing and wait for a nudge

    # Act: a commit nudges it, and shutdown cancels it before it runs again (as
    # `Supervisor.stop_loops` / `abort` do right after the last commit).
    relay.nudge()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2.0)

    # Assert: the cancellation was not swallowed (the relay would run on, and shutdown,
    # which awaits every cancelled loop, would hang).
    if not done:
        task.cancel()
        await asyncio.wait([task], timeout=2.0)
    assert done == {task}
    assert task.cancelled()
