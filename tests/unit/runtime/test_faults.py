"""Faults of the world around the worker, without a server (issue 12, items 9, 12-15, 17)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from strategy_worker.domain.orders import OrderPurpose, OrderStatus, Side
from strategy_worker.testing.rig import Rig

from .world import PRICES, admit, approved, orders, run


def _stop_sells(rig: Rig, execution) -> list:  # type: ignore[no-untyped-def]
    return [
        o
        for o in orders(rig, execution)
        if o.purpose is OrderPurpose.STOP_LOSS and o.status is OrderStatus.FILLED
    ]


def test_after_a_store_outage_dirty_executions_reload_and_their_stop_losses_fire() -> None:
    # Item 12: after a 20 s outage no stop-loss fired in 30 s, while /ready said 200.
    async def scenario() -> None:
        rig = Rig(seed=21)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            executions = [
                (await admit(app, approved({s: "0.3"}, stop_loss="0.05")))[0]
                for s in ("AAPL", "MSFT", "GOOGL")
            ]
            await rig.run_for(2)
            rig.db.faults.down_until = rig.clock.timestamp() + 20
            # Prices move into the stop's warning zone: each step's commit fails.
            rig.set_prices({s: PRICES[s] * Decimal("0.965") for s in ("AAPL", "MSFT", "GOOGL")})
            await rig.run_for(1)
            assert app.worker.book.dirty()
            assert not await app.worker.ready()
            await rig.run_for(20)  # the store answers again
            assert not app.worker.book.dirty()
            assert await app.worker.ready()

            rig.set_prices({s: PRICES[s] * Decimal("0.90") for s in ("AAPL", "MSFT", "GOOGL")})
            await rig.run_for(2)

            assert all(len(_stop_sells(rig, e)) == 1 for e in executions)

    run(scenario)


def test_a_cancelled_commit_leaves_nothing_in_memory_that_the_store_does_not_hold() -> None:
    # Item 13: a SIGTERM during a fill's write left positions with the sale and no fill row.
    async def scenario() -> None:
        rig = Rig(seed=22)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            (execution,) = await admit(app, approved({"AAPL": "0.3"}))
            await rig.run_for(2)
            runner = app.worker.book.get(execution)
            assert runner is not None
            held = runner.model.portfolio.quantity("AAPL")
            rig.db.faults.fail_next_commit(applied=False)  # the next write never lands...
            rig.set_prices({"AAPL": "80.00"})  # ... a stop-loss needs one (no stop set: a halt)
            await app.stop("handover")  # shutdown while that write failed

            record = rig.db.executions[execution].record
            stored = record.state.positions["positions"]["AAPL"]["quantity"]
            assert Decimal(stored) == held
            assert record.version == len([w for w in rig.db.writes if w.execution_id == execution])

    run(scenario)


def test_a_worker_that_lost_its_lease_while_frozen_writes_nothing_for_the_successor() -> None:
    # Item 14: a paused worker wrote CRITICAL risk rows and events for 6 of 6 executions
    # its successor owned.
    async def scenario() -> None:
        rig = Rig(seed=23, lease_seconds=15)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as first, rig.worker("w2") as second:
            await first.start()
            (execution,) = await admit(first, approved({"AAPL": "0.3"}, stop_loss="0.05"))
            await rig.run_for(2)
            await second.start()
            rig.stores["w1"].frozen_until = rig.clock.timestamp() + 40  # SIGSTOP past the lease
            rig.set_prices({"AAPL": "85.00"})  # both react: only the lease holder may write
            await rig.run_for(70)  # past the successor's first monitor cycle

            held_by = rig.db.executions[execution].record.owner_id
            assert held_by == "w2"
            late = [w for w in rig.db.writes if (w.owner_id, w.epoch) != (w.holder, w.holder_epoch)]
            assert late == []
            mine = [w.owner_id for w in rig.db.writes if w.execution_id == execution]
            taken = mine.index("w2")
            assert set(mine[taken:]) == {"w2"}  # after the takeover, only the successor wrote

    run(scenario)


def test_a_price_source_error_during_a_stop_is_transient() -> None:
    # Item 15: a Redis error during a stop moved the execution to `error`.
    async def scenario() -> None:
        rig = Rig(seed=24)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            (execution,) = await admit(app, approved({"AAPL": "0.3"}))
            await rig.run_for(2)
            rig.prices.down_until = rig.clock.timestamp() + 30
            await rig.run_for(61)  # a monitor cycle fails on the price source: retried later

            assert app.worker.supervisor.failure is None
            await app.stop("close")  # the stop needs no price to close at market

            assert rig.db.executions[execution].record.state.status.value == "stopped"

    run(scenario)


def test_the_rebalance_cycle_never_waits_for_one_execution_s_fills() -> None:
    # Item 9: each execution with sells waited up to close_timeout before the next.
    async def scenario() -> None:
        rig = Rig(seed=25)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            created = await admit(
                app,
                *(approved({"AAPL": "0.3", "MSFT": "0.3"}, capital="20000") for _ in range(30)),
            )
            await rig.run_for(5)
            rig.set_prices({"AAPL": "150.00"}, announce=False)  # everyone drifts: sells first
            rig.oms.stall_s = 10.0  # and every answer is slow
            loop = asyncio.get_running_loop()
            started = loop.time()
            await app.worker.monitor.rebalance_cycle()
            took = loop.time() - started

            assert took < 1.0
            sells = [
                o
                for e in created
                for o in orders(rig, e)
                if o.side is Side.SELL and o.purpose is OrderPurpose.REBALANCE
            ]
            assert len(sells) == 30

    run(scenario)


def test_events_committed_before_a_kill_9_are_published_after_the_restart() -> None:
    # Item 17: events queued in memory were lost on kill -9 (20 of 2,563 across 40 kills).
    async def scenario() -> None:
        rig = Rig(seed=26)
        rig.set_prices(PRICES)
        rig.events.down_until = float("inf")  # the broker is away: nothing leaves
        async with rig.worker("w1") as app:
            await app.start()
            await admit(app, *(approved({"AAPL": "0.2", "MSFT": "0.2"}) for _ in range(5)))
            await rig.run_for(5)
            committed = set(rig.db.outbox_ids)
            assert committed
            assert rig.events.published == []
            rig.stores["w1"].crash()
            await app.abandon()  # kill -9
        rig.events.down_until = float("-inf")
        async with rig.worker("w1") as app:
            await app.start()
            await rig.run_for(5)

        assert committed <= set(rig.events.unique())

    run(scenario)


def test_orders_held_up_by_an_oms_outage_leave_within_a_heartbeat_of_its_return() -> None:
    # Item 18: orders resumed 33 s after the OMS was back (the retries' backoff had grown).
    async def scenario() -> None:
        rig = Rig(seed=26)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            rig.oms.down_until = rig.clock.timestamp() + 50
            (execution,) = await admit(app, approved({"AAPL": "0.3"}))
            await rig.run_for(49)  # retries 31.5 s and 61.5 s after the first try
            assert not rig.oms.venue.orders(execution_id=execution)
            await rig.run_for(1 + app.settings.heartbeat + 0.5)

            assert rig.oms.venue.orders(execution_id=execution)

    run(scenario)
