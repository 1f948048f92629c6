"""The day's start equity is the equity at the day's start at marks (issue 12, item 4)."""

from __future__ import annotations

from decimal import Decimal

from strategy_worker.domain.risk.state import TradingState
from strategy_worker.testing.rig import Rig

from .world import PRICES, admit, approved, run


def test_a_restart_on_a_new_day_starts_it_at_fresh_marks_not_at_fill_prices() -> None:
    async def scenario() -> None:
        rig = Rig(seed=7)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            (execution,) = await admit(app, approved({"AAPL": "0.3"}))
            await rig.run_for(60)
            rig.set_prices({"AAPL": "86.00"})  # the day ends some 4% down: not halted
            await rig.run_for(9 * 3600)  # until 23:30 UTC
            rig.set_prices({"AAPL": "86.00"})
            await rig.run_for(120)
            evening = rig.db.executions[execution].record.state
            assert evening.trading_state is TradingState.ACTIVE
            await app.abandon()  # kill -9 before midnight
        await rig.run_for(3600)  # the next trading day began while nobody watched
        rig.set_prices({"AAPL": "86.00"})
        async with rig.worker("w1") as app:
            await app.start()
            await rig.run_for(5)
            runner = app.worker.book.get(execution)
            assert runner is not None
            await app.worker.monitor.cycle()
            start = runner.model.risk.day_start_equity
            assert start == runner.valuation().equity  # the equity at fresh marks
            assert start < Decimal(99000)  # not the 100,000 a fill-price valuation gives

            rig.set_prices({"AAPL": "85.14"})  # a 1% move on the new day
            await rig.run_for(5)

            assert runner.model.risk.state is TradingState.ACTIVE
            assert rig.db.executions[execution].record.state.trading_state is TradingState.ACTIVE

    run(scenario)
