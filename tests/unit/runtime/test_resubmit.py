"""Every order that leaves passes the risk gate at the moment it leaves (issue 12, item 3)."""

from __future__ import annotations

import uuid
from decimal import Decimal

from strategy_worker.domain.orders import OrderIntent, OrderPurpose, OrderStatus, OrderType, Side
from strategy_worker.testing.rig import Rig

from .world import PRICES, admit, approved, control, event_types, orders, run


def test_a_buy_the_oms_never_saw_is_not_resent_once_the_execution_is_halted() -> None:
    async def scenario() -> None:
        rig = Rig(seed=5)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            rig.oms.down_until = rig.clock.timestamp() + 20  # the first orders never arrive
            (execution,) = await admit(app, approved({"AAPL": "0.3", "MSFT": "0.3"}))
            runner = app.worker.book.get(execution)
            assert runner is not None
            async with runner.lock:  # the day's loss limit is reached meanwhile
                step = app.worker.engine.step(runner)
                step.model.risk.halt(step.valuation().equity)
                step.drain_risk_state()
                await app.worker.engine.commit([step])

            await rig.run_for(60)  # the OMS is back; reconciliation asks about each order

            assert [o for o in rig.oms.venue.orders() if o.request.side is Side.BUY] == []
            stored = orders(rig, execution)
            assert {o.status for o in stored} == {OrderStatus.CANCELLED}
            rejected = [
                p.event.payload
                for p in rig.events.published
                if p.event.event_type.endswith("order_rejected")
            ]
            assert {r["reason_code"] for r in rejected} == {"TRADING_HALTED"}

    run(scenario)


def test_during_a_stop_the_buy_being_cancelled_is_not_resent_after_the_close() -> None:
    async def scenario() -> None:
        rig = Rig(seed=6)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            (execution,) = await admit(app, approved({"AAPL": "0.3"}))
            await rig.run_for(2)
            rig.set_prices({"MSFT": "200.00"}, announce=False)
            runner = app.worker.book.get(execution)
            assert runner is not None
            rig.oms.down_until = rig.clock.timestamp() + 10  # the next buy is recorded, unsent
            async with runner.lock:
                step = app.worker.engine.step(runner)
                step.gate([_buy(execution, "MSFT", 10, PRICES["MSFT"])])
                await app.worker.engine.commit([step])
            await app.worker.handle_control(control(execution, "stop"), "test")
            await rig.run_for(60)

            bought = [
                o.request.symbol for o in rig.oms.venue.orders() if o.request.side is Side.BUY
            ]
            assert bought == ["AAPL"]
            assert event_types(rig, execution)[-1] == "stopped"

    run(scenario)


def _buy(execution_id: uuid.UUID, symbol: str, quantity: int, price: Decimal) -> OrderIntent:
    return OrderIntent(
        client_order_id="",
        execution_id=execution_id,
        intent_seq=0,
        symbol=symbol,
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal(quantity),
        price=price,
        purpose=OrderPurpose.REBALANCE,
    )


def test_an_order_sent_again_after_an_unknown_outcome_is_submitted_once_and_counted_once() -> None:
    # Issue 12 item 11: resubmitted orders were counted again as submitted.
    async def scenario() -> None:
        rig = Rig(seed=7)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            rig.oms.down_until = rig.clock.timestamp() + 10  # the first sends fail
            (execution,) = await admit(app, approved({"AAPL": "0.3", "MSFT": "0.3"}))
            await rig.run_for(60)  # reconciliation sends them again; they fill

            stored = orders(rig, execution)
            assert len(stored) == 2
            assert {o.status for o in stored} == {OrderStatus.FILLED}
            assert len(rig.oms.venue.orders(execution_id=execution)) == 2
            assert event_types(rig, execution).count("order_submitted") == 2
            counted = app.metrics.orders_submitted._value.get()  # type: ignore[attr-defined]
            assert counted == 2

    run(scenario)
