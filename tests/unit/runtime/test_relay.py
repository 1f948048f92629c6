"""The outbox relay: committed events leave in commit order, once each for a consumer that
drops repeats by event id, whatever the broker or the relaying worker does."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from strategy_worker.metrics import WorkerMetrics
from strategy_worker.runtime.relay import OutboxRelay
from strategy_worker.testing.memory_store import MemoryDatabase
from strategy_worker.testing.ports import MemoryPublisher
from strategy_worker.testing.rig import Rig

from .world import PRICES, admit, approved, run


def _committed(rig: Rig) -> list[object]:
    return [row.event.event_id for _, row in sorted(rig.db.outbox.items())]


def test_events_committed_while_the_broker_is_away_leave_in_commit_order_once_it_returns() -> None:
    async def scenario() -> None:
        rig = Rig(seed=61)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            rig.events.down_until = rig.clock.timestamp() + 30
            await admit(app, approved({"AAPL": "0.3", "MSFT": "0.3"}))
            await rig.run_for(20)
            assert app.metrics.event_publish_failures._value.get() >= 2  # type: ignore[attr-defined]
            assert rig.events.published == []  # the relay retries (full jitter, at most 10 s apart)
            assert app.metrics.outbox_lag_seconds._value.get() >= 5  # type: ignore[attr-defined]

            await rig.run_for(30)
            unique = list(rig.events.unique())
            assert unique == _committed(rig)
            assert len(unique) >= 3  # started, order_submitted x2 at least
            assert app.metrics.outbox_lag_seconds._value.get() == 0  # type: ignore[attr-defined]
            published = app.metrics.outbox_published._value.get()  # type: ignore[attr-defined]
            assert published == len(rig.events.published)

    run(scenario)


def test_a_record_the_broker_refuses_for_good_is_counted_and_never_blocks_the_rest() -> None:
    async def scenario() -> None:
        rig = Rig(seed=62)
        rig.set_prices(PRICES)
        rig.events.refuse = lambda e: e.event_type == "strategy.execution.started"
        async with rig.worker("w1") as app:
            await app.start()
            await admit(app, approved({"AAPL": "0.3"}))
            await rig.run_for(5)
            types = [p.event.event_type for p in rig.events.published]
            assert "strategy.execution.started" not in types
            assert "strategy.execution.order_submitted" in types
            assert app.metrics.events_dropped._value.get() == 1  # type: ignore[attr-defined]
            assert not rig.db.unpublished

    run(scenario)


def test_when_the_relaying_worker_dies_another_publishes_what_it_left() -> None:
    async def scenario() -> None:
        rig = Rig(seed=63)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as a, rig.worker("w2") as b:
            await a.start()
            await b.start()
            await admit(a, approved({"AAPL": "0.3"}))
            await rig.run_for(2)
            leader = rig.db.relay_leader
            assert leader is not None
            rig.events.down_until = rig.clock.timestamp() + 5
            await admit(b, approved({"MSFT": "0.3"}))
            await rig.run_for(1)
            assert rig.db.unpublished
            leader.crash()
            dead = a if leader is rig.stores["w1"] else b
            await dead.worker.abandon()
            await rig.run_for(30)  # the broker is back after 5 s; retries are 10 s apart at most
            assert rig.db.relay_leader is not None
            assert rig.db.relay_leader is not leader
            assert not rig.db.unpublished
            assert list(rig.events.unique()) == _committed(rig)

    run(scenario)


def test_a_graceful_shutdown_publishes_each_event_once() -> None:
    # Shutdown cancelled the relay between the broker's ack and the mark; its final flush
    # then sent the same batch again (repeats a JSON-lines reader cannot tell apart).
    async def scenario() -> None:
        rig = Rig(seed=64)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            rig.events.ack_delay = 0.5
            await admit(app, approved({"AAPL": "0.3", "MSFT": "0.3"}))
            await rig.run_for(0.1)  # the relay has sent the batch, its ack is on the way
            await app.worker.shutdown("handover")
        ids = [p.event.event_id for p in rig.events.published]
        assert len(ids) == len(set(ids))
        assert set(ids) == set(_committed(rig))

    run(scenario)


async def test_relay_cancelled_in_the_tick_a_commit_nudged_it_stops() -> None:
    # Arrange: a relay idle on an empty outbox, waiting to be nudged.
    database = MemoryDatabase(now=lambda: datetime(2024, 1, 2, 14, 30, tzinfo=UTC))
    relay = OutboxRelay(
        store=database.handle(),
        publisher=MemoryPublisher(),
        metrics=WorkerMetrics(CollectorRegistry()),
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
