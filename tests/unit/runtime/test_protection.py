"""Protective orders in the runtime (issue 16): trailing stops, take-profits and the stop-loss
held by the protection book, native at the venue or emulated, recorded before they are sent,
one exit per trigger, re-armed after a takeover."""

from __future__ import annotations

import contextlib
import uuid
from decimal import Decimal
from typing import Any

from strategy_worker.domain.orders import OrderIntent, OrderPurpose, OrderStatus, OrderType, Side
from strategy_worker.errors import OmsError, StoreError
from strategy_worker.oms_sim.venue import SimOrder, VenueRules
from strategy_worker.runtime.wiring import App
from strategy_worker.store import ExecutionStatus
from strategy_worker.testing.rig import Rig

from .world import PRICES, admit, approved, control, event_types, run

D = Decimal


def protective(rig: Rig, execution: uuid.UUID) -> list[SimOrder]:
    """The protective orders the venue received for the execution, in arrival order."""
    return [
        o
        for o in rig.oms.venue.orders(execution_id=execution)
        if OrderPurpose(o.request.purpose).is_protective
    ]


def risk_of(rig: Rig, execution: uuid.UUID) -> list[str]:
    rows = [r for r in rig.db.risk_events.values() if r.execution_id == execution]
    return [r.event_type for r in sorted(rows, key=lambda r: (r.occurred_at, str(r.event_id)))]


def held(rig: Rig, execution: uuid.UUID, symbol: str = "AAPL") -> Decimal:
    return rig.oms.venue.execution_book(execution).net(symbol)


def recorded_first(rig: Rig) -> list[str]:
    """Checks, at the moment each order reaches the venue, that it was recorded before it
    left and that the protection state committed with it knows it; returns the problems."""
    problems: list[str] = []

    def on_receive(intent: OrderIntent) -> None:
        if intent.client_order_id not in rig.db.orders:
            problems.append(f"{intent.client_order_id} reached the venue unrecorded")
        if intent.purpose.is_protective:
            row = rig.db.protection.get(intent.execution_id)
            if row is None or intent.client_order_id not in str(row.state):
                problems.append(f"{intent.client_order_id} sent before the book's state")

    rig.oms.on_receive = on_receive
    return problems


async def walk(rig: Rig, *prices: str, symbol: str = "AAPL", pause: float = 1.0) -> None:
    for price in prices:
        rig.set_prices({symbol: price})
        await rig.run_for(pause)


def guard_of(app: App, execution: uuid.UUID, symbol: str = "AAPL") -> Any:
    runner = app.worker.book.get(execution)
    assert runner is not None
    assert runner.model.protection is not None
    return runner.model.protection.guard(symbol)


# ---------------------------------------------------------------------- emulated


def test_an_emulated_trailing_stop_ratchets_up_with_the_marks_and_fires_once() -> None:
    async def scenario() -> None:
        rig = Rig(seed=11)
        problems = recorded_first(rig)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            (execution,) = await admit(
                app, approved({"AAPL": "0.3"}, risk={"trailing_stop_pct": "0.05"})
            )
            await rig.run_for(2)
            bought = held(rig, execution)
            assert bought > 0

            await walk(rig, "104.00", "110.00", "120.00", "116.00", "114.10")
            assert protective(rig, execution) == []  # never below 120 x 0.95 = 114
            assert guard_of(app, execution).watermark == D("120.00")

            await walk(rig, "113.90", "113.00", "112.00")

            [exit_order] = protective(rig, execution)
            request = exit_order.request
            assert request.purpose == OrderPurpose.TRAILING_STOP.value
            assert (request.order_type, request.quantity) == (OrderType.MARKET, bought)
            assert request.reduce_only
            assert held(rig, execution) == 0
            kinds = risk_of(rig, execution)
            assert kinds.count("TRAILING_STOP_TRIGGERED") == 1
            assert kinds.count("PROTECTION_EXIT_RELEASED") == 1
            runner = app.worker.book.get(execution)
            assert runner is not None
            assert runner.model.risk.stops.is_blocked("AAPL")
            assert problems == []

    run(scenario)


def test_the_book_owns_the_stop_loss_one_exit_one_critical_event_and_the_spec_message() -> None:
    async def scenario() -> None:
        rig = Rig(seed=12)
        problems = recorded_first(rig)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            (execution,) = await admit(app, approved({"AAPL": "0.3"}, stop_loss="0.05"))
            await rig.run_for(2)

            await walk(rig, "96.00", "94.50", "94.00", "93.00")

            [exit_order] = protective(rig, execution)
            assert exit_order.request.purpose == OrderPurpose.STOP_LOSS.value
            assert held(rig, execution) == 0
            kinds = risk_of(rig, execution)
            assert kinds.count("STOP_LOSS_TRIGGERED") == 1
            assert "STOP_LOSS_WARNING" in kinds  # the monitor still watches the zone
            await rig.run_for(5)
            assert event_types(rig, execution).count("stop_loss_triggered") == 1
            assert problems == []

    run(scenario)


def test_a_take_profit_exits_at_market_when_touched() -> None:
    async def scenario() -> None:
        rig = Rig(seed=13)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            (execution,) = await admit(
                app,
                approved({"AAPL": "0.3"}, stop_loss="0.05", risk={"take_profit_pct": "0.10"}),
            )
            await rig.run_for(2)

            await walk(rig, "105.00", "109.99", "110.00", "111.00")

            [exit_order] = protective(rig, execution)
            assert exit_order.request.purpose == OrderPurpose.TAKE_PROFIT.value
            assert exit_order.request.order_type is OrderType.MARKET
            assert held(rig, execution) == 0
            assert risk_of(rig, execution).count("TAKE_PROFIT_TRIGGERED") == 1

    run(scenario)


def test_a_gap_through_the_stop_while_the_entry_fills_in_slices_exits_all_of_it() -> None:
    # The venue fills one slice of the entry per tick: the tick that gaps through the stop
    # fills a second slice the worker has not heard of when it sizes the exit. That share
    # is exited by a follow-up once the first exit is done: never two exits live at once.
    async def scenario() -> None:
        rig = Rig(seed=14, rules=VenueRules(partial_fill_slices=3), native_protection=False)
        rig.set_prices(PRICES)
        live_at_once: list[int] = []

        def on_receive(intent: OrderIntent) -> None:
            if intent.purpose.is_protective:
                live = [o for o in protective(rig, intent.execution_id) if not o.status.is_terminal]
                live_at_once.append(len(live))

        rig.oms.on_receive = on_receive
        async with rig.worker("w1") as app:
            await app.start()
            (execution,) = await admit(app, approved({"AAPL": "0.3"}, stop_loss="0.05"))
            await rig.run_for(1)
            [entry] = rig.oms.venue.orders(execution_id=execution)
            assert entry.status is OrderStatus.PARTIALLY_FILLED  # one slice of three

            await walk(rig, "80.00", "79.00", "78.00", "78.00", "78.00")  # gapped past 95

            exits = protective(rig, execution)
            assert entry.status is OrderStatus.CANCELLED  # the rest of the entry is not bought
            assert entry.filled_quantity < entry.request.quantity
            assert all(o.status is OrderStatus.FILLED for o in exits)
            assert sum(o.filled_quantity for o in exits) == entry.filled_quantity
            assert live_at_once == [0] * len(exits)  # each left when no other was live
            assert held(rig, execution) == 0
            [trigger] = [
                r for r in rig.db.risk_events.values() if r.event_type == "STOP_LOSS_TRIGGERED"
            ]
            assert trigger.details["gap"] == "True"

    run(scenario)


def test_a_restart_while_an_emulated_stop_watches_exits_once_on_the_price_through_it() -> None:
    async def scenario() -> None:
        rig = Rig(seed=15)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as first:
            await first.start()
            (execution,) = await admit(
                first,
                approved({"AAPL": "0.3"}, stop_loss="0.05", risk={"trailing_stop_pct": "0.10"}),
            )
            await rig.run_for(2)
            await walk(rig, "101.00", "103.00")
            await first.abandon()  # kill -9
            rig.stores["w1"].crash()
        rig.set_prices({"AAPL": "90.00"})  # through the stop while nobody watches
        async with rig.worker("w2") as second:
            await second.start()
            await rig.run_for(25)  # the lease expires; w2 resumes and reconciles

            [exit_order] = protective(rig, execution)
            assert exit_order.request.purpose == OrderPurpose.STOP_LOSS.value
            assert held(rig, execution) == 0
            await walk(rig, "89.00", "88.00")
            assert len(protective(rig, execution)) == 1

    run(scenario)


def test_an_execution_stored_without_a_protection_state_is_protected_when_resumed() -> None:
    # An execution from before protective orders (or whose state was lost): the resumed
    # worker builds its book from the positions and exits once on a price through the stop.
    async def scenario() -> None:
        rig = Rig(seed=17)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as first:
            await first.start()
            (execution,) = await admit(first, approved({"AAPL": "0.3"}, stop_loss="0.05"))
            await rig.run_for(2)
            await first.abandon()
            rig.stores["w1"].crash()
        del rig.db.protection[execution]
        async with rig.worker("w2") as second:
            await second.start()
            await rig.run_for(25)
            assert execution in rig.db.protection  # written again by the resumed worker
            assert protective(rig, execution) == []

            await walk(rig, "94.00", "93.00")

            [exit_order] = protective(rig, execution)
            assert exit_order.request.purpose == OrderPurpose.STOP_LOSS.value
            assert held(rig, execution) == 0

    run(scenario)


def test_an_exit_recorded_but_never_sent_is_sent_again_after_a_takeover_with_its_id() -> None:
    async def scenario() -> None:
        rig = Rig(seed=16)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as first:
            await first.start()
            (execution,) = await admit(first, approved({"AAPL": "0.3"}, stop_loss="0.05"))
            await rig.run_for(2)
            rig.oms.down_until = rig.clock.timestamp() + 30  # the exit is recorded, unsent
            await walk(rig, "94.00")
            recorded = [
                o
                for o in rig.db.orders.values()
                if o.execution_id == execution and o.purpose is OrderPurpose.STOP_LOSS
            ]
            assert len(recorded) == 1
            assert protective(rig, execution) == []
            await first.abandon()
            rig.stores["w1"].crash()
        async with rig.worker("w2") as second:
            await second.start()
            await rig.run_for(40)

            [exit_order] = protective(rig, execution)
            assert exit_order.client_order_id == recorded[0].client_order_id
            assert held(rig, execution) == 0

    run(scenario)


def test_a_reload_during_a_failed_exits_back_off_keeps_the_next_exits_timer() -> None:
    # Found by the simulation (seed 78): the back-off timer of the runner a reload replaced
    # held back the new runner's (timers were keyed by execution, not by runner), and the
    # next exit waited for the monitor cycle, a minute later.
    async def scenario() -> None:
        rig = Rig(seed=18)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            (execution,) = await admit(app, approved({"AAPL": "0.3"}, stop_loss="0.05"))
            await rig.run_for(2)
            rig.oms.reject_rate = 1.0  # the OMS refuses every exit for a while
            await walk(rig, "94.00", pause=4.0)
            assert "PROTECTION_EXIT_FAILED" in risk_of(rig, execution)
            rig.db.faults.fail_next_commit(applied=True)  # a commit whose outcome is lost
            with contextlib.suppress(StoreError):
                await app.worker.handle_control(control(execution, "pause"), "test")
            await rig.run_for(1)  # the runner is reloaded from the store
            rig.oms.reject_rate = 0.0

            await rig.run_for(20)  # within the back-off, far from the minute's cycle

            assert held(rig, execution) == 0

    run(scenario)


# ---------------------------------------------------------------------- native


def test_native_legs_rest_at_the_venue_as_one_reduce_only_oco_group_recorded_first() -> None:
    async def scenario() -> None:
        rig = Rig(seed=21, native_protection=True)
        problems = recorded_first(rig)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            (execution,) = await admit(
                app,
                approved({"AAPL": "0.3"}, stop_loss="0.05", risk={"trailing_stop_pct": "0.05"}),
            )
            await rig.run_for(2)

            legs = protective(rig, execution)
            assert [o.request.order_type for o in legs] == [
                OrderType.STOP,
                OrderType.TRAILING_STOP,
            ]
            assert len({o.request.oco_group_id for o in legs}) == 1
            assert all(o.request.reduce_only and o.status is OrderStatus.ACCEPTED for o in legs)
            stored = [rig.db.orders[o.client_order_id] for o in legs]
            assert stored[0].stop_price == D("95.0000")
            assert stored[1].trail is not None
            assert stored[1].trail.pct == D("0.05")
            assert all(s.oco_group_id == legs[0].request.oco_group_id for s in stored)

            await walk(rig, "110.00", "120.00", "113.00", "112.00")

            assert len(protective(rig, execution)) == 2  # the OMS trailed and fired it
            stop, trail = protective(rig, execution)
            assert trail.status is OrderStatus.FILLED
            assert (stop.status, stop.reason) == (OrderStatus.CANCELLED, "OCO")
            assert held(rig, execution) == 0
            kinds = risk_of(rig, execution)
            assert kinds.count("TRAILING_STOP_TRIGGERED") == 1
            assert "PROTECTION_EXIT_RELEASED" not in kinds  # the worker never doubled it
            assert problems == []

    run(scenario)


def test_native_legs_wait_for_the_entry_then_a_gap_through_the_stop_exits_once() -> None:
    async def scenario() -> None:
        rig = Rig(seed=22, rules=VenueRules(partial_fill_slices=3), native_protection=True)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            (execution,) = await admit(app, approved({"AAPL": "0.3"}, stop_loss="0.05"))
            await rig.run_for(1)
            assert protective(rig, execution) == []  # the emulator covers a partial entry
            await walk(rig, "100.00", "100.00")  # the entry completes
            [leg] = protective(rig, execution)
            assert leg.request.quantity == held(rig, execution)

            await walk(rig, "80.00", "80.00", "80.00")  # gaps through 95

            assert protective(rig, execution) == [leg]
            assert leg.status is OrderStatus.FILLED
            assert held(rig, execution) == 0
            await rig.run_for(5)
            [message] = [
                p.event.payload
                for p in rig.events.published
                if p.event.event_type.endswith("stop_loss_triggered")
            ]
            # The OMS's own stop sold it in the step the worker heard of the trigger: the
            # spec's event still says what was held and where it stopped.
            assert message["quantity"] == leg.request.quantity
            assert message["stop_price"] == D("95.0000")

    run(scenario)


def test_a_native_leg_the_oms_began_to_fill_is_what_an_exit_signal_leaves_to_it() -> None:
    # Simulation seed 108: a native trailing stop had sold part of the position when an exit
    # signal fired; the exit sold "what is held and not already being sold" with the leg
    # left out (resting legs are), so the two together sold twice what the leg had left.
    # `signal_steps.close_position` now subtracts `executing_legs`.
    async def scenario() -> None:
        rig = Rig(seed=28, rules=VenueRules(partial_fill_slices=3), native_protection=True)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            (execution,) = await admit(app, approved({"AAPL": "0.3"}, stop_loss="0.05"))
            await rig.run_for(1)
            await walk(rig, "100.00", "100.00")  # the entry completes; the stop rests
            [leg] = protective(rig, execution)
            runner = app.worker.book.get(execution)
            assert runner is not None
            assert runner.model.executing_legs("AAPL") == 0  # resting: nothing filled yet

            await walk(rig, "80.00")  # through 95: the OMS's stop sells its first slice

            assert D(0) < leg.filled_quantity < leg.request.quantity
            left = leg.request.quantity - leg.filled_quantity
            assert held(rig, execution) == left
            model = app.worker.book.get(execution)
            assert model is not None
            assert model.model.executing_legs("AAPL") == left
            assert model.model.pending_sells().get("AAPL", D(0)) == 0  # a close may race it

    run(scenario)


def test_a_takeover_keeps_the_resting_legs_and_a_price_through_the_stop_exits_once() -> None:
    async def scenario() -> None:
        rig = Rig(seed=23, native_protection=True)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as first:
            await first.start()
            (execution,) = await admit(first, approved({"AAPL": "0.3"}, stop_loss="0.05"))
            await rig.run_for(2)
            [leg] = protective(rig, execution)
            await first.abandon()
            rig.stores["w1"].crash()
        async with rig.worker("w2") as second:
            await second.start()
            await rig.run_for(25)
            runner = second.worker.book.get(execution)
            assert runner is not None  # resumed: the book restored, nothing placed again
            assert protective(rig, execution) == [leg]
            assert guard_of(second, execution).native is not None

            await walk(rig, "94.00", "93.00")

            assert protective(rig, execution) == [leg]
            assert leg.status is OrderStatus.FILLED
            assert held(rig, execution) == 0

    run(scenario)


def test_a_venue_refusing_the_native_group_turns_the_position_to_emulation() -> None:
    async def scenario() -> None:
        rig = Rig(seed=24, native_protection=True)

        async def refuse(intents: Any, *, account_id: str) -> Any:
            raise OmsError("INVALID_ARGUMENT: groups are off today", retryable=False)

        rig.oms.submit_group = refuse  # type: ignore[method-assign]
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            (execution,) = await admit(
                app,
                approved({"AAPL": "0.3"}, stop_loss="0.05", risk={"take_profit_pct": "0.5"}),
            )
            await rig.run_for(2)
            assert "PROTECTION_FALLBACK" in risk_of(rig, execution)

            await walk(rig, "94.00", "93.00")

            [exit_order] = protective(rig, execution)  # the emulator's
            assert exit_order.request.order_type is OrderType.MARKET
            assert held(rig, execution) == 0

    run(scenario)


def test_a_rebalance_is_not_held_up_by_resting_legs_which_follow_the_new_size() -> None:
    async def scenario() -> None:
        rig = Rig(seed=25, native_protection=True)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            (execution,) = await admit(app, approved({"AAPL": "0.3"}, stop_loss="0.05"))
            await rig.run_for(2)
            [first_leg] = protective(rig, execution)
            rig.set_prices({"AAPL": "150.00"})  # AAPL outgrows its weight
            await rig.run_for(1)
            await app.worker.monitor.rebalance_cycle()
            await rig.run_for(3)

            sells = [
                o
                for o in rig.oms.venue.orders(execution_id=execution)
                if o.request.purpose == OrderPurpose.REBALANCE.value
            ]
            assert sells
            assert sells[0].request.side is Side.SELL
            assert first_leg.status is OrderStatus.CANCELLED  # re-armed at the new size
            live = [o for o in protective(rig, execution) if not o.status.is_terminal]
            assert [o.request.quantity for o in live] == [held(rig, execution)]

    run(scenario)


def test_a_stop_closes_past_resting_legs_cancels_them_and_ends_flat() -> None:
    async def scenario() -> None:
        rig = Rig(seed=26, native_protection=True)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            (execution,) = await admit(
                app,
                approved({"AAPL": "0.3"}, stop_loss="0.05", risk={"take_profit_pct": "0.2"}),
            )
            await rig.run_for(2)
            assert len(protective(rig, execution)) == 2

            await app.worker.handle_control(control(execution, "stop"), "test")
            await rig.run_for(10)

            record = rig.db.executions[execution].record
            assert record.state.status is ExecutionStatus.STOPPED
            assert held(rig, execution) == 0
            assert all(o.status.is_terminal for o in rig.oms.venue.orders(execution_id=execution))

    run(scenario)


def test_no_open_position_is_left_unprotected_and_the_gauge_says_so() -> None:
    async def scenario() -> None:
        rig = Rig(seed=27, native_protection=True)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            executions = await admit(
                app,
                approved({"AAPL": "0.2", "MSFT": "0.2"}, stop_loss="0.05"),
                approved({"GOOGL": "0.3"}, risk={"trailing_stop_pct": "0.04"}),
            )
            await rig.run_for(2)
            await app.worker.monitor.cycle()

            assert app.metrics.positions_unprotected._value.get() == 0
            for execution in executions:
                row = rig.db.protection[execution]
                assert row.unprotected == 0
                runner = app.worker.book.get(execution)
                assert runner is not None
                assert runner.model.protection is not None
                assert runner.model.protection.unprotected(runner.held()) == []
                assert set(runner.model.protection.symbols) == set(runner.held())

    run(scenario)
