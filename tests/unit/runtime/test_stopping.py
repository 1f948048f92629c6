"""A stop ends `stopped` only flat at the OMS (issue 12, items 1 and 2)."""

from __future__ import annotations

from decimal import Decimal

from strategy_worker.store import ExecutionStatus
from strategy_worker.testing.rig import Rig

from .world import PRICES, admit, approved, control, event_types, orders, risk_types, run


def test_a_stop_whose_closes_are_rejected_keeps_the_position_protected_and_retries() -> None:
    async def scenario() -> None:
        rig = Rig(seed=1)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            (execution,) = await admit(app, approved({"AAPL": "0.3"}, stop_loss="0.05"))
            await rig.run_for(2)
            held = rig.oms.venue.execution_book(execution).net("AAPL")
            assert held > 0
            rig.oms.reject_rate = 1.0  # the OMS refuses every new order from now on

            await app.worker.handle_control(control(execution, "stop"), "test")
            await rig.run_for(60)

            record = rig.db.executions[execution].record
            assert record.state.status is ExecutionStatus.ACTIVE  # not stopped: still held
            assert record.owner_id == "w1"  # lease kept, protection kept
            assert rig.oms.venue.execution_book(execution).net("AAPL") == held
            closes = [o for o in orders(rig, execution) if o.purpose.value == "CLOSE"]
            assert len(closes) >= 3  # retried with backoff
            assert "STOP_INCOMPLETE" in risk_types(rig, execution)
            assert not await app.worker.ready()

            rig.oms.reject_rate = 0.0
            await rig.run_for(60)

            record = rig.db.executions[execution].record
            assert record.state.status is ExecutionStatus.STOPPED
            assert record.owner_id is None
            assert rig.oms.venue.execution_book(execution).net("AAPL") == 0
            assert event_types(rig, execution)[-1] == "stopped"
            assert await app.worker.ready()

    run(scenario)


def test_a_close_that_fills_after_its_answer_timed_out_is_booked_and_ends_the_stop() -> None:
    async def scenario() -> None:
        rig = Rig(seed=2)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            (execution,) = await admit(app, approved({"AAPL": "0.3"}))
            await rig.run_for(2)
            held = rig.oms.venue.execution_book(execution).net("AAPL")
            rig.set_prices({"AAPL": "110.00"})
            rig.oms.stall_s = 30.0  # processed at once, answered never (a timeout)

            await app.worker.handle_control(control(execution, "stop"), "test")
            await rig.run_for(45)

            record = rig.db.executions[execution].record
            assert record.state.status is ExecutionStatus.STOPPED
            assert held > 0
            assert record.state.realized_pnl == held * Decimal("10.00")
            assert record.state.positions["positions"] == {}

    run(scenario)


def test_an_unexpected_error_closes_the_positions_and_ends_in_error(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from strategy_worker.runtime import decide

    async def scenario() -> None:
        rig = Rig(seed=3)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            (broken,) = await admit(app, approved({"AAPL": "0.3"}))
            (healthy,) = await admit(app, approved({"MSFT": "0.3"}, name="healthy"))
            await rig.run_for(2)
            original = decide.rebalance

            def bug(step, threshold):  # type: ignore[no-untyped-def]
                if step.execution_id == broken:
                    raise ZeroDivisionError("a bug in one execution's step")
                return original(step, threshold)

            monkeypatch.setattr(decide, "rebalance", bug)
            await app.worker.monitor.rebalance_cycle()
            await rig.run_for(30)

            failed = rig.db.executions[broken].record
            assert failed.state.status is ExecutionStatus.ERROR
            assert rig.oms.venue.execution_book(broken).net("AAPL") == 0  # closed by policy
            assert "EXECUTION_FAULT" in risk_types(rig, broken)
            assert {"error", "stopping", "stopped"} <= set(event_types(rig, broken))
            other = rig.db.executions[healthy].record
            assert other.state.status is ExecutionStatus.ACTIVE
            assert rig.oms.venue.execution_book(healthy).net("MSFT") > 0

    run(scenario)
